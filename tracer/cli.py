"""Command line: a thin layer over the Python API. ``tracer COMMAND --help`` for each command."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tracer import __version__

EXIT_USAGE, EXIT_INPUT = 2, 3


def _link_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("link inference")
    g.add_argument("--window-hours", type=float, default=72.0, help="longest lag from withdrawal to deposit (default 72)")
    g.add_argument("--cut-tolerance", type=float, default=0.15, help="after a cash-like withdrawal ($20 notes, >= $50) a deposit may be this fraction smaller (default 0.15)")
    g.add_argument("--fee-tolerance", type=float, default=0.0, help="after any other withdrawal a deposit may be this fraction smaller, e.g. 0.02 (default 0: off)")
    g.add_argument("--max-q", type=float, default=0.05, help="keep links with q-value at most this (default 0.05)")
    g.add_argument("--no-splits", action="store_true", help="do not match one withdrawal to 2-3 deposits")
    g.add_argument("--no-merges", action="store_true", help="do not match 2-3 withdrawals to one deposit")
    g.add_argument("--seed-account", action="append", default=[], metavar="ID", help="an account known to be criminal (repeatable)")


def _input_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("input mapping (for exports that differ from client_id,amount,date,time)")
    for name in ("client_id", "amount", "date", "time", "datetime", "debit", "credit", "direction", "txn_id", "channel", "counterparty"):
        g.add_argument(f"--col-{name.replace('_', '-')}", dest=f"col_{name}", metavar="COLUMN", help=f"column holding {name}")
    g.add_argument("--delimiter", help="field separator (default: detected)")
    g.add_argument("--encoding", help="text encoding (default utf-8)")
    g.add_argument("--date-format", help="strptime format of the date column")
    g.add_argument("--time-format", help="strptime format of the time column")
    g.add_argument("--datetime-format", help="strptime format of the datetime column")
    g.add_argument("--decimal", help="decimal mark of amounts (default .)")


def _mapping(args: argparse.Namespace) -> dict:
    mapping = {k[4:]: v for k, v in vars(args).items() if k.startswith("col_") and v is not None}
    for key in ("delimiter", "encoding", "date_format", "time_format", "datetime_format", "decimal"):
        if getattr(args, key, None) is not None:
            mapping[key] = getattr(args, key)
    return mapping


def _options(args: argparse.Namespace) -> dict:
    return {"window_hours": args.window_hours, "cut_tolerance": args.cut_tolerance, "fee_tolerance": args.fee_tolerance, "max_q": args.max_q,
            "splits": not args.no_splits, "merges": not args.no_merges}


def _analyse_file(args: argparse.Namespace):
    """Load the transactions file named by ``args.input`` and run the whole analysis."""
    from tracer.analysis import analyze
    from tracer.load import load_transactions

    if not args.quiet:
        print(f"tracer {__version__}: analysing {args.input}", file=sys.stderr)
    if getattr(args, "engine", "local") == "spark":
        if _mapping(args):
            raise ValueError("--engine spark reads the seed columns (client_id, amount, date, time); input mapping options are local-only")
        return analyze(args.input, seeds=tuple(args.seed_account), verbose=not args.quiet, engine="spark",
                       spark_master=args.spark_master, **_options(args))
    loaded = load_transactions(args.input, **_mapping(args))
    return analyze(loaded, seeds=tuple(args.seed_account), verbose=not args.quiet, **_options(args))


def _run_analysis(args: argparse.Namespace):
    """An Analysis from a transactions file, or reloaded from a previous ``tracer analyze`` folder."""
    from tracer.analysis import Analysis

    source = Path(args.input)
    if source.is_dir() and (source / "summary.json").exists():
        print(f"reusing the analysis in {source}", file=sys.stderr)
        return Analysis.read(source)
    return _analyse_file(args)


def cmd_analyze(args: argparse.Namespace) -> int:
    analysis = _analyse_file(args)
    paths = analysis.write(args.out)
    s = analysis.summary
    print(f"rows: {s['rows_in']:,} in, {s['rows_analyzed']:,} analysed, {s['rows_rejected']:,} rejected")
    print(f"found: {s['links']:,} confident links (q <= {args.max_q}) among {s['accounts']:,} accounts, {s['networks']} suspected network(s)")
    print("roles: " + ", ".join(f"{k} {v}" for k, v in s["roles"].items()))
    for net in analysis.networks.itertuples():
        print(f"  network {net.network_id}: {net.size} accounts ({net.n_low_level} low-level, {net.n_intermediary} intermediary, "
              f"{net.n_upper_tier} upper-tier), ${net.total_flow:,.0f} moved")
    print(f"outputs in {Path(args.out).resolve()}:")
    for name, path in paths.items():
        print(f"  {name:<14} {path}")
    return 0


def cmd_trace(args: argparse.Namespace) -> int:
    analysis = _run_analysis(args)
    trace = analysis.trace(args.account, hops=args.hops, direction=args.direction, min_score=args.min_score)
    print(trace)
    out = Path(args.out)
    analysis.to_html(out / "trace.html", graph=trace.graph, title=f"tracer: money around {args.account}")
    analysis.export(out, graph=trace.graph, name="trace")
    print(f"map: {out.resolve() / 'trace.html'}; exports: {out.resolve()}/trace.*")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    analysis = _run_analysis(args)
    if args.network is not None:
        graph, name = analysis.network(args.network), f"network_{args.network}"
    elif args.accounts:
        ids = [a.strip() for a in args.accounts.split(",") if a.strip()]
        missing = [a for a in ids if a not in analysis.graph]
        if missing:
            raise KeyError(f"not in the link graph: {', '.join(missing)}")
        graph, name = analysis.graph.subgraph(ids).copy(), "accounts"
    elif args.trace:
        graph, name = analysis.trace(args.trace, hops=args.hops).graph, "trace"
    else:
        graph, name = analysis.suspects(hops=args.hops), "suspects"
    written = analysis.export(args.out, graph=graph, name=name, formats=tuple(args.formats.split(",")))
    print(f"exported {graph.number_of_nodes()} accounts and {graph.number_of_edges()} links:")
    for paths in written.values():
        for path in paths:
            print(f"  {path}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from tracer.synth import format_summary, write_scenario

    summary = write_scenario(args.scenario, args.out, seed=args.seed, accounts=args.accounts, years=args.years,
                             networks=args.networks, activity=args.activity, fmt=args.format, progress=not args.quiet)
    print(format_summary(summary))
    print(f"scenario {args.scenario!r} (seed {args.seed}) written to {Path(args.out).resolve()}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from tracer.evaluate import evaluate_dirs

    print(json.dumps(evaluate_dirs(args.truth, args.pred), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tracer", description="Infer money flows from bank records and find organised trafficking networks.")
    parser.add_argument("--version", action="version", version=f"tracer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("analyze", help="load, infer links, label accounts, write outputs and the map")
    p.add_argument("input", help="transactions: CSV, Parquet file or folder of Parquet parts")
    p.add_argument("--out", required=True, help="output folder (replaced as a whole)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--engine", choices=("local", "spark"), default="local",
                   help="local (default) or spark: read the input and infer links on Apache Spark (needs tracer[spark], Java 17+)")
    p.add_argument("--spark-master", metavar="URL", help="Spark master for --engine spark (default local[*])")
    _link_args(p)
    _input_args(p)
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("trace", help="follow the money from one account")
    p.add_argument("input", help="transactions file, or an output folder of `tracer analyze`")
    p.add_argument("account")
    p.add_argument("--hops", type=int, default=2)
    p.add_argument("--direction", choices=("up", "down", "both"), default="both")
    p.add_argument("--min-score", type=float, default=None, help="keep links scoring at least this (log10 evidence)")
    p.add_argument("--out", required=True)
    p.add_argument("--quiet", action="store_true")
    _link_args(p)
    _input_args(p)
    p.set_defaults(func=cmd_trace)

    p = sub.add_parser("export", help="write a network, a trace or chosen accounts as GraphML, GEXF, JSON and CSV")
    p.add_argument("input", help="transactions file, or an output folder of `tracer analyze`")
    p.add_argument("--out", required=True)
    what = p.add_mutually_exclusive_group()
    what.add_argument("--network", type=int, help="one suspected network by id")
    what.add_argument("--accounts", help="comma-separated account ids")
    what.add_argument("--trace", metavar="ACCOUNT", help="the money around one account")
    p.add_argument("--hops", type=int, default=1, help="context hops (suspects, trace)")
    p.add_argument("--formats", default="graphml,gexf,json,csv")
    p.add_argument("--quiet", action="store_true")
    _link_args(p)
    _input_args(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("generate", help="write a scenario with ground truth")
    p.add_argument("--scenario", required=True, choices=("datajam", "careful", "cash_relay"))
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--accounts", type=int, default=None)
    p.add_argument("--years", type=float, default=None)
    p.add_argument("--networks", type=int, default=None)
    p.add_argument("--activity", type=float, default=1.0, help="everyday-life activity (1 = full; 0.15 gives ~80 rows per account-year)")
    p.add_argument("--format", choices=("csv", "parquet"), default="csv")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("evaluate", help="score an analysis folder against generator truth")
    p.add_argument("--truth", required=True, help="folder from `tracer generate`")
    p.add_argument("--pred", required=True, help="folder from `tracer analyze`")
    p.set_defaults(func=cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    from tracer.load import LoadError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except LoadError as exc:
        print(f"tracer: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except (KeyError, FileNotFoundError, ValueError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"tracer: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"tracer: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("tracer: interrupted; no partial output was left behind", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
