"""Shared fixtures.  Spark: ``spark_local`` (master local[2]) and ``spark_cluster`` (a standalone
master with two one-core workers on 127.0.0.1, started on first use), one SparkSession at a time;
``spark`` runs a test on both, grouped by engine so that the session switches once.  Spark tests
skip without pyspark or Java, and fail instead when CI=true (tests/spark_support.py)."""
from __future__ import annotations

import pytest

from spark_support import LOCAL_MASTER, Sessions, StandaloneCluster, require_spark


@pytest.fixture(scope="session")
def spark_sessions():
    require_spark()
    sessions = Sessions()
    yield sessions
    sessions.stop()


@pytest.fixture(scope="session")
def spark_cluster_url(spark_sessions):
    cluster = StandaloneCluster().start()
    yield cluster.url
    spark_sessions.stop()  # the application ends before its executors' workers go
    cluster.stop()


@pytest.fixture
def spark_local(spark_sessions):
    return spark_sessions.get(LOCAL_MASTER)


@pytest.fixture
def spark_cluster(spark_sessions, spark_cluster_url):
    return spark_sessions.get(spark_cluster_url)


@pytest.fixture(scope="session", params=["local", "cluster"])
def spark_engine(request):
    """Session-scoped parameter: pytest runs all tests of one engine before switching."""
    return request.param


@pytest.fixture
def spark(request, spark_engine):
    return request.getfixturevalue(f"spark_{spark_engine}")
