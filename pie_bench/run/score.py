"""Score edited images produced outside the harness (``cli.py score``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from pie_bench.datasets.pie import Dataset, safe_join
from pie_bench.core.errors import DataError
from pie_bench.run.lock import FolderLock
from pie_bench.core.provenance import device_label, now_iso
from pie_bench.run.results import JsonlWriter, SampleRecord
from pie_bench.run.run_folder import RunFolder
from pie_bench.run.runner import BenchOptions, one_line, score_sample, write_leaderboard


def official_crop(img: Image.Image) -> np.ndarray:
    """The evaluator keeps the bottom-right 512x512 of a non-square output (the last panel of the
    official [text | source | reconstruction | edited] strip)."""
    img = img.convert("RGB")
    w, h = img.size
    if w != h:
        img = img.crop((w - 512, h - 512, w, h))
    arr = np.asarray(img)
    if arr.shape != (512, 512, 3):
        raise DataError(f"edited image is {w}x{h}; the protocol scores 512x512 (or a strip whose last panel is)")
    return arr


def find_edited(root: Path, sample) -> Path:
    candidates = []
    if sample.image_path:
        candidates.append(safe_join(root / "annotation_images", sample.image_path, f"sample {sample.id}"))
        candidates.append(safe_join(root, sample.image_path, f"sample {sample.id}"))
    candidates += [root / f"{sample.id}.png", root / f"{sample.id}.jpg"]
    for c in candidates:
        if c.is_file():
            return c
    raise DataError(f"sample {sample.id}: no edited image under {root} (looked for "
                    f"{', '.join(str(c.relative_to(root)) for c in candidates[:3])}); add it or pass --ids")


def score_folder(ds: Dataset, root: Path, method: str, metrics: list, out: Path, *, device: str = "cpu",
                 command: str = "") -> dict:
    if not root.is_dir():
        raise DataError(f"{root}: edited-image folder does not exist")
    folder = RunFolder(out)
    folder.create()
    # the same lock as `bench`: two writers appending to one samples.jsonl would interleave records
    with FolderLock(folder.root, command):
        info = {"config": {"source": str(root)}, "config_hash": "external", "backbone": "external", "toy": False,
                "seed": None, "paper": "scored from a folder"}
        folder.prepare(ds.describe(), {method: info}, {"metrics": [m.name for m in metrics]})
        done = folder.done_keys()
        writer = JsonlWriter(folder.shard_path())
        try:
            for sample in ds.samples:
                rec = SampleRecord(sample_id=sample.id, editor=method, config_hash="external", dataset=ds.name,
                                   dataset_sha256=ds.annotations_sha256, edit_type=sample.edit_type, status="ok",
                                   device=device_label(device), created_at=now_iso())
                if rec.key in done:
                    continue
                try:
                    path = find_edited(root, sample)
                    with Image.open(path) as img:
                        edited = official_crop(img)
                    rec.image = str(path)
                    rec.metrics = score_sample(metrics, sample, edited)
                except Exception as exc:
                    rec.status, rec.error = "failed", one_line(exc)
                writer.write(rec)
        finally:
            writer.close()
        return write_leaderboard(folder, ds, BenchOptions(editors=[method], command=command, device=device), metrics)
