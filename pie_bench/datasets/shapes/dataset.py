"""ShapesEdit in the PIE-Bench format: ``mapping_file.json`` + ``annotation_images/`` with bracketed
prompts, instructions, blended words and PIE-encoded masks, plus the exact ground-truth edit of every
sample (``target_image_path``) and the scene descriptions (``attributes``) that metrics read."""
from __future__ import annotations

import difflib
import hashlib
import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from pie_bench.core.errors import DataError
from pie_bench.core.masks import encode_mask
from pie_bench.core.sample import EDIT_TYPES, IMAGE_SIZE

from pie_bench.datasets.shapes.edits import Edit, make_edit
from pie_bench.datasets.shapes.scenes import render

# PIE-Bench's per-type counts (700 in all); smaller sets keep the proportions, at least one per type
PIE_COUNTS = {0: 140, 1: 80, 2: 80, 3: 80, 4: 40, 5: 40, 6: 40, 7: 40, 8: 80, 9: 80}
DEFAULT_N = 100
# the embedded default: 10 samples per edit type, so the per-type figures average ten edits, not one to six
DEFAULT_BALANCED = True
DEFAULT_SEED = 0
DEFAULT_SIZE = 64
FORMAT_VERSION = 2  # 2: sketch outlines twice as wide. Bump when the generator's output changes; part of the cache key


def type_counts(n: int, balanced: bool = False) -> dict[int, int]:
    """Samples per edit type: PIE-Bench's proportions, or with ``balanced`` the same count for every type."""
    if n < 1:
        raise DataError(f"make-shapes: --n must be at least 1, got {n}")
    if balanced:
        if n % len(PIE_COUNTS):
            raise DataError(f"make-shapes: --balanced needs --n a multiple of {len(PIE_COUNTS)}, got {n}")
        return {t: n // len(PIE_COUNTS) for t in PIE_COUNTS}
    total = sum(PIE_COUNTS.values())
    base = {t: (max(1, c * n // total) if n >= len(PIE_COUNTS) else 0) for t, c in PIE_COUNTS.items()}
    # largest remainder for what is left (or, below ten samples, one each in type order)
    left = n - sum(base.values())
    order = sorted(PIE_COUNTS, key=lambda t: (-(PIE_COUNTS[t] * n / total - base[t]), t))
    i = 0
    while left > 0:
        base[order[i % len(order)]] += 1
        left -= 1
        i += 1
    while left < 0:  # the minimum of one per type overshot: take from the largest
        t = max(base, key=lambda k: (base[k], -k))
        base[t] -= 1
        left += 1
    return base


def sample_id(edit_type: int, j: int) -> str:
    # PIE ids: digit 1 edit type, digit 2 1 = artificial, digit 3 scene class (3: indoor), then a counter
    return f"{edit_type}13{j:09d}"


@dataclass
class ShapesSample:
    id: str
    edit: Edit

    @property
    def folder(self) -> str:
        return EDIT_TYPES[self.edit.edit_type][0]


def generate(n: int = DEFAULT_N, seed: int = DEFAULT_SEED, balanced: bool = False) -> list[ShapesSample]:
    """Sample j of type t depends only on (seed, t, j): a larger set extends a smaller one."""
    out = []
    for t, c in sorted(type_counts(n, balanced).items()):
        for j in range(c):
            out.append(ShapesSample(sample_id(t, j), make_edit(np.random.default_rng([seed, t, j]), t)))
    return out


def bracket_prompts(source: str, target: str) -> tuple[str, str]:
    """Mark the words that differ with ``[ ]``, as PIE-Bench's prompts do."""
    a, b = source.split(), target.split()
    out_a, out_b = [], []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            out_a += a[i1:i2]
            out_b += b[j1:j2]
            continue
        if i2 > i1:
            out_a.append("[" + " ".join(a[i1:i2]) + "]")
        if j2 > j1:
            out_b.append("[" + " ".join(b[j1:j2]) + "]")
    return " ".join(out_a), " ".join(out_b)


def upsample(image: np.ndarray) -> np.ndarray:
    """Nearest-neighbour to the protocol's 512: generation pixels map onto whole 512-pixel blocks, so
    the masks stay exact."""
    f = IMAGE_SIZE // image.shape[0]
    return np.repeat(np.repeat(image, f, 0), f, 1)


def check_size(size: int) -> int:
    if size < 8 or IMAGE_SIZE % size:
        raise DataError(f"make-shapes: --size {size} must divide {IMAGE_SIZE} (use 64 or 128)")
    return size


def entry_for(s: ShapesSample, size: int) -> dict:
    e = s.edit
    src, tgt = bracket_prompts(e.source.caption(), e.target.caption())
    return {
        "image_path": f"{s.folder}/{s.id}.png",
        "target_image_path": f"ground_truth/{s.folder}/{s.id}.png",
        "original_prompt": src,
        "editing_prompt": tgt,
        "editing_instruction": e.instruction,
        "editing_type_id": str(e.edit_type),
        "blended_word": " ".join(e.blended) if e.blended else "",
        "mask": encode_mask(upsample(e.mask(size)[..., None])[..., 0]),
        "attributes": {**e.attributes(), "generation_size": size},
    }


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def write_pie(out: Path, n: int = DEFAULT_N, seed: int = DEFAULT_SEED, size: int = DEFAULT_SIZE,
              balanced: bool = False) -> Path:
    """Write the set to ``out`` (built in a temporary folder, then moved into place)."""
    check_size(size)
    out = Path(out)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    images = tmp / "annotation_images"
    mapping = {}
    for s in generate(n, seed, balanced):
        entry = entry_for(s, size)
        for rel, scene in ((entry["image_path"], s.edit.source), (entry["target_image_path"], s.edit.target)):
            path = images / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(_png(upsample(render(scene, size))))
        mapping[s.id] = entry
    (tmp / "mapping_file.json").write_text(json.dumps(mapping, indent=1) + "\n")
    (tmp / "README.txt").write_text(
        f"ShapesEdit: n={n} seed={seed} size={size} balanced={balanced} format={FORMAT_VERSION}. Generated by "
        f"`python cli.py make-shapes --n {n} --seed {seed} --size {size}{' --balanced' if balanced else ''}`; "
        "ground-truth edits under "
        "annotation_images/ground_truth/.\n")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def cached_set(n: int = DEFAULT_N, seed: int = DEFAULT_SEED, size: int = DEFAULT_SIZE,
               balanced: bool = DEFAULT_BALANCED) -> Path:
    """The set for ``--data shapes``, generated once into the harness cache."""
    from pie_bench.core.paths import cache_root

    spec = [n, seed, size, FORMAT_VERSION] + (["balanced"] if balanced else [])
    key = hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:10]
    folder = cache_root() / "shapes" / f"n{n}-seed{seed}-size{size}{'-bal' if balanced else ''}-{key}"
    if not (folder / "mapping_file.json").exists():
        write_pie(folder, n, seed, size, balanced)
    return folder


def load_shapes(n: int = DEFAULT_N, seed: int = DEFAULT_SEED, size: int = DEFAULT_SIZE,
                balanced: bool = DEFAULT_BALANCED):
    from pie_bench.datasets.pie import load_pie_folder

    from pie_bench.datasets.shapes.attributes import attribute_accuracy

    ds = load_pie_folder(cached_set(n, seed, size, balanced), name="shapes")
    for s in ds.samples:
        s.attribute_scorer = attribute_accuracy
    ds.meta.update({"generator": "pie_bench.datasets.shapes", "n": n, "seed": seed, "size": size, "balanced": balanced,
                    "format_version": FORMAT_VERSION})
    return ds
