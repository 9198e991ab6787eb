"""tracer: infer who paid whom from thin bank records, and find organised trafficking networks.

Public API (each stage is also usable on its own):

    analysis = tracer.analyze("transactions.csv")        # load -> link -> features -> roles
    analysis.accounts, analysis.links, analysis.networks # pandas DataFrames
    analysis.graph                                       # networkx.DiGraph of confident links
    analysis.trace("1234", hops=2)                       # follow the money from one account
    analysis.write("out/")                               # CSVs, summary.json, offline HTML map
"""
__version__ = "0.1.0"

from tracer.load import ColumnMapping, LoadError, LoadResult, load_transactions  # noqa: E402
from tracer.link import LinkInference, LinkOptions, LinkResult, infer_links  # noqa: E402
from tracer.features import account_features  # noqa: E402
from tracer.roles import RoleModel  # noqa: E402
from tracer.analysis import Analysis, Trace, analyze  # noqa: E402

__all__ = [
    "Analysis", "ColumnMapping", "LinkInference", "LinkOptions", "LinkResult", "LoadError", "LoadResult",
    "RoleModel", "Trace", "account_features", "analyze", "infer_links", "load_transactions",
]
