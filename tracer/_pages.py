"""Memory pages: numpy's huge-page advice off while big, short-lived arrays are made."""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

import numpy as np


@contextlib.contextmanager
def small_pages() -> Iterator[None]:
    """numpy without its MADV_HUGEPAGE advice for large arrays, while a stage that makes many of
    them runs (loading, link inference).

    With transparent huge pages on ``madvise`` and ``defrag`` set to (defer+)madvise - the common
    distribution default - a fault in advised memory can stall in synchronous compaction when no
    free huge page is at hand.  On the benchmark machine that made first touches of the loader's
    fresh arrays cost more system time than the parsing itself (30M rows: 8.6-10 s system time
    with the advice, 1.7 s without).  An explicit NUMPY_MADVISE_HUGEPAGE setting is left alone."""
    core = getattr(np, "_core", None)
    setter = getattr(getattr(core, "multiarray", None), "_set_madvise_hugepage", None)
    if setter is None or "NUMPY_MADVISE_HUGEPAGE" in os.environ:
        yield
        return
    previous = setter(False)
    try:
        yield
    finally:
        setter(previous)
