"""Score edited images produced outside the harness (``cli.py score``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from pie_bench.core.errors import DataError
from pie_bench.datasets.pie import Dataset, safe_join
from pie_bench.run.distributed import Dist
from pie_bench.run.lock import FolderLock
from pie_bench.run.results import JsonlWriter
from pie_bench.run.runner import BenchOptions, Runner, one_line, score_sample


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
    """Score images made elsewhere through the benchmark's own ``Runner``: the same records, folder,
    lock, metrics and leaderboard as ``bench``; only the edit step is "read the file"."""
    if not root.is_dir():
        raise DataError(f"{root}: edited-image folder does not exist")
    runner = Runner(ds, BenchOptions(editors=[method], command=command, device=device), metrics, out,
                    dist=Dist())
    runner.folder.create()
    # the same lock as `bench`: two writers appending to one samples.jsonl would interleave records
    with FolderLock(runner.folder.root, command):
        info = {"config": {"source": str(root)}, "config_hash": "external", "backbone": "external", "toy": False,
                "seed": None, "paper": "scored from a folder"}
        runner.folder.prepare(ds.describe(), {method: info}, {"metrics": [m.name for m in metrics]})
        done = runner.folder.done_keys()
        runner.writer = JsonlWriter(runner.folder.shard_path())
        try:
            for sample in ds.samples:
                rec = runner.new_record(method, "external", sample)
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
                runner.write(rec)
        finally:
            runner.writer.close()
        return runner.write_leaderboard()
