"""Memory edges (the disk ones - full mid-write, read-only - are in test_robust.py and test_bad_input.py): a
dataset image whose header promises gigapixels (a decompression bomb) is refused from its header with a
one-line error, failing that sample alone, and a sample whose metric blows up is recorded as failed with
the metric named, excluded from the means, the others scored."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metrics.base import Metric
from metrics.registry import build_metrics
from pie_bench.core.errors import DataError
from pie_bench.datasets.pie import MAX_IMAGE_PIXELS, load_dataset
from pie_bench.run.results import decode_float, read_records
from pie_bench.run.runner import BenchOptions, run_bench
from tests.test_bad_input import ENTRIES, make_folder


def png_bomb(width: int, height: int) -> bytes:
    """A valid PNG header for a width x height grey image and the first rows of its zlib stream: a few
    hundred bytes on disk, ``width * height`` bytes once decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compressobj(9).compress(b"\x00" * (width + 1) * 64)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


@pytest.mark.parametrize("side", [100_000, 9_000])  # 10 gigapixels; just past the harness's own limit
def test_decompression_bomb_is_refused_from_its_header(tmp_path, side):
    assert side * side > MAX_IMAGE_PIXELS
    root = make_folder(tmp_path / "data")
    bomb = root / "annotation_images" / ENTRIES["111000000000"]["image_path"]
    bomb.write_bytes(png_bomb(side, side))
    assert bomb.stat().st_size < 10_000
    ds = load_dataset(str(root))
    sample = next(s for s in ds.samples if s.id == "111000000000")
    with pytest.raises(DataError) as err:
        sample.image
    msg = str(err.value)
    assert "\n" not in msg and "sample 111000000000" in msg and str(bomb) in msg
    assert f"is {side}x{side}" in msg or f"({2 * Image.MAX_IMAGE_PIXELS} pixels, PIL's own limit)" in msg
    assert "decompression bomb" in msg and "replace it with the PIE-Bench image" in msg
    board = run_bench(ds, BenchOptions(editors=["identity"]), build_metrics(["mse_unedit_part"]), tmp_path / "run")
    recs = {r.sample_id: r for r in read_records([tmp_path / "run" / "samples.jsonl"])}
    assert recs["111000000000"].status == "failed" and "decompression bomb" in recs["111000000000"].error
    assert board["editors"]["identity"]["n_ok"] == 2 and board["editors"]["identity"]["n_failed"] == 1


class BlowsUpOn(Metric):
    """Mean intensity, except on one sample, where it runs out of memory as a real metric would."""

    name = "blows_up_on"
    uses_weights = False

    def __init__(self, sample_id: str = "", error: str = "memory") -> None:
        super().__init__()
        self.sample_id, self.error = sample_id, error

    def compute(self, batch):
        if self.sample_id in batch.sample_ids:
            if self.error == "memory":
                raise MemoryError("cannot allocate 96.0 GiB for the similarity matrix")
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")
        return batch.edited.flatten(1).mean(1)


@pytest.mark.parametrize("error", ["memory", "cuda"])
def test_a_sample_whose_metric_blows_up_is_recorded_failed(tmp_path, error):
    ds = load_dataset("smoke", limit=3)
    bad = ds.samples[1].id
    metrics = build_metrics(["mse_unedit_part"]) + [BlowsUpOn(bad, error)]
    board = run_bench(ds, BenchOptions(editors=["identity"]), metrics, tmp_path / "run")
    recs = {r.sample_id: r for r in read_records([tmp_path / "run" / "samples.jsonl"])}
    failed = recs[bad]
    assert failed.status == "failed" and failed.metrics == {} and failed.image is None
    assert failed.error.startswith("metric blows_up_on failed: ") and "\n" not in failed.error
    if error == "cuda":
        assert "then rerun with --retry-failed" in failed.error
    e = board["editors"]["identity"]
    assert (e["n_ok"], e["n_failed"]) == (2, 1) and e["failures"] == [{"sample_id": bad, "error": failed.error}]
    ok = [r.metric("blows_up_on") for r in recs.values() if r.status == "ok"]
    assert e["metrics"]["blows_up_on"]["n"] == 2
    assert decode_float(e["metrics"]["blows_up_on"]["mean"]) == pytest.approx(float(np.mean(ok)))
    assert not (Path(tmp_path / "run" / "identity") / f"{bad}.png").exists()
