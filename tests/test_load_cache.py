"""editors.backbone.LoadCache: the process-wide model caches of the SD, flow, FLUX and pipeline loaders."""
from __future__ import annotations

import threading
import time

import pytest

from editors.backbone import LoadCache, load_backbone


def test_concurrent_requests_for_one_key_load_once():
    cache, calls = LoadCache(), []

    def load():
        calls.append(1)
        time.sleep(0.05)  # long enough for the other threads to arrive while this load runs
        return object()

    got = []
    threads = [threading.Thread(target=lambda: got.append(cache.get_or_load("k", load))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(got) == 4 and all(g is got[0] for g in got)
    assert cache.get_or_load("other", object) is not got[0] and len(cache) == 2


def test_a_failed_load_is_not_cached():
    cache = LoadCache()

    def broken():
        raise OSError("no weights")

    with pytest.raises(OSError, match="no weights"):
        cache.get_or_load("k", broken)
    assert "k" not in cache and cache.get_or_load("k", lambda: 3) == 3


def test_the_backbone_loader_reuses_its_models():
    assert load_backbone("toy") is load_backbone("toy")
    assert load_backbone("toy", variant="ip2p") is not load_backbone("toy")
