"""Spark for the tests: one SparkSession at a time, and a small standalone cluster on 127.0.0.1.

pyspark allows one SparkContext per process, so ``Sessions`` keeps one session and switches it
when a test asks for another master.  ``StandaloneCluster`` starts a master and two one-core
workers with ``spark-class`` (all bound to the loopback address, work and log files in a temporary
directory), waits until both workers are registered, and kills them again.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

LOCAL_MASTER = "local[2]"
WORKERS = 2
START_TIMEOUT_S = 120


def spark_unavailable() -> str | None:
    """Why the Spark tests cannot run here, or None."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "pyspark is not installed (pip install -e '.[spark]')"
    if shutil.which("java") is None:
        return "java is not installed (Spark needs Java 17+)"
    return None


def require_spark() -> None:
    """Skip when Spark cannot run, except on CI (CI=true), where the Spark tests must run."""
    reason = spark_unavailable()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the Spark tests: {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StandaloneCluster:
    """A Spark standalone master and workers on 127.0.0.1, started by this process."""

    def __init__(self) -> None:
        from pyspark.find_spark_home import _find_spark_home

        self.home = Path(tempfile.mkdtemp(prefix="tracer-spark-cluster-"))
        self.spark_class = Path(_find_spark_home()) / "bin" / "spark-class"
        self.env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_LOCAL_DIRS": str(self.home),
                    "SPARK_LOG_DIR": str(self.home), "SPARK_WORKER_DIR": str(self.home / "work"),
                    "PYSPARK_PYTHON": sys.executable}
        self.procs: list[subprocess.Popen] = []
        self.port, self.ui_port = _free_port(), _free_port()
        self.url = f"spark://127.0.0.1:{self.port}"

    def _start(self, name: str, *args: str) -> None:
        log = open(self.home / f"{name}.log", "wb")
        self.procs.append(subprocess.Popen(
            [str(self.spark_class), *args], env=self.env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True))
        log.close()

    def start(self) -> "StandaloneCluster":
        self._start("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                    "--port", str(self.port), "--webui-port", str(self.ui_port))
        for i in range(WORKERS):
            self._start(f"worker{i}", "org.apache.spark.deploy.worker.Worker", self.url, "--host", "127.0.0.1",
                        "--cores", "1", "--memory", "1g", "--webui-port", str(_free_port()),
                        "--work-dir", str(self.home / f"work{i}"))
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs):
                break
            if self._alive_workers() == WORKERS:
                return self
            time.sleep(0.5)
        logs = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in sorted(self.home.glob("*.log")))
        self.stop()
        raise RuntimeError(f"the standalone Spark cluster did not start within {START_TIMEOUT_S} s\n{logs}")

    def _alive_workers(self) -> int:
        """Registered live workers, from the master's JSON page on the loopback address."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ui_port}/json/", timeout=2) as resp:
                return int(json.load(resp).get("aliveworkers", 0))
        except (OSError, ValueError):
            return 0

    def stop(self) -> None:
        """Kill the workers (and the executors they started) and the master; remove the files."""
        for p in reversed(self.procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.procs.clear()
        shutil.rmtree(self.home, ignore_errors=True)


class Sessions:
    """At most one active SparkSession; asking for another master stops the current one first."""

    def __init__(self) -> None:
        self.master: str | None = None
        self.session = None

    def get(self, master: str):
        from tracer.spark import spark_session

        if self.master != master:
            self.stop()
            conf = {} if master.startswith("local") else {"spark.executor.memory": "512m", "spark.cores.max": str(WORKERS)}
            self.session, self.master = spark_session(master, app_name="tracer-tests", conf=conf), master
        return self.session

    def stop(self) -> None:
        if self.session is not None:
            self.session.stop()
        self.session = self.master = None
