"""Dataset loaders: the official PIE-Bench folder, PIE_Bench_pp through `datasets`, and the smoke set.

Annotation problems (bad JSON, wrong field types, undecodable masks, empty prompts) raise a
one-line ``DataError`` before anything runs. Image problems (missing, unreadable) surface when a
sample's image is first read, so they fail that sample alone and the run goes on.
"""
from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import numpy as np
from PIL import Image

from pie_bench.core.errors import DataError, shown
from pie_bench.core.masks import decode_mask, parse_mask_string
from pie_bench.core.sample import EDIT_TYPE_BY_NAME, EDIT_TYPES, Sample
# ImageWarning, MAX_IMAGE_PIXELS and to_protocol_image are re-exported: callers import them from here
from pie_bench.datasets.images import (ImageWarning, MAX_IMAGE_PIXELS, decode_image, read_image_file,  # noqa: F401
                                       safe_join, to_protocol_image)

HF_DEFAULT_REPO = "UB-CVML-Group/PIE_Bench_pp"
HF_SPLIT = "V1"


@dataclass
class Dataset:
    """A loaded dataset: its samples plus the identity recorded in results."""

    name: str
    source: str
    annotations_sha256: str
    samples: list[Sample]
    has_targets: bool = False
    meta: dict = field(default_factory=dict)

    @property
    def categories(self) -> list[int]:
        return sorted({s.edit_type for s in self.samples})

    def __len__(self) -> int:
        return len(self.samples)

    def describe(self) -> dict:
        return {"name": self.name, "source": self.source, "annotations_sha256": self.annotations_sha256,
                "n": len(self.samples), "categories": self.categories, "has_targets": self.has_targets}


# ---------------------------------------------------------------------------------------------
# annotations -> samples


def _str_field(entry: dict, key: str, where: str, *, required: bool = True, allow_empty: bool = False) -> Optional[str]:
    if key not in entry:
        if required:
            raise DataError(f"{where}: field '{key}' is missing; add it to the annotation")
        return None
    value = entry[key]
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise DataError(f"{where}: field '{key}' must be a string, got {type(value).__name__}; fix the annotation")
    if not allow_empty and not value.strip():
        raise DataError(f"{where}: field '{key}' is empty; write the prompt into the annotation")
    return value


def _edit_type(value, where: str) -> int:
    text = str(value).strip() if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    # isdigit() alone admits '²' and other Unicode digits that int() refuses
    if text is None or not (text.isascii() and text.isdigit()) or int(text) not in EDIT_TYPES:
        raise DataError(f"{where}: editing_type_id {value!r} is not one of '0'..'9'; "
                        "use the PIE-Bench edit type ids")
    return int(text)


def _blended(value: str) -> Optional[tuple[str, str]]:
    words = value.split()
    if not words:
        return None
    if len(words) == 1:
        return (words[0], words[0])
    return (words[0], words[1])


def sample_from_entry(sid: str, entry, *, root: Optional[Path], dataset: str,
                      image_fn: Optional[Callable[[], np.ndarray]] = None, where_prefix: str = "") -> Sample:
    """Validate one ``mapping_file.json`` entry and build its Sample."""
    where = f"{where_prefix}sample {shown(sid)}"
    if not isinstance(entry, dict):
        raise DataError(f"{where}: entry must be an object, got {type(entry).__name__}; fix the mapping file")
    src = _str_field(entry, "original_prompt", where)
    tgt = _str_field(entry, "editing_prompt", where)
    instruction = _str_field(entry, "editing_instruction", where, required=False, allow_empty=True)
    blended = _str_field(entry, "blended_word", where, required=False, allow_empty=True) or ""
    etype = _edit_type(entry.get("editing_type_id"), where)
    mask_values = entry.get("mask")
    if not isinstance(mask_values, list):
        raise DataError(f"{where}: field 'mask' must be a list of (start, length) integers; fix the annotation")
    mask = decode_mask(mask_values, where=where)
    image_path = entry.get("image_path", "")
    target_fn = None
    if image_fn is None:
        if root is None:
            raise DataError(f"{where}: no image source")
        path = safe_join(root, _str_field(entry, "image_path", where), where)
        image_fn = lambda p=path, w=where: read_image_file(p, w)  # noqa: E731
        if entry.get("target_image_path"):
            tpath = safe_join(root, _str_field(entry, "target_image_path", where), where)
            target_fn = lambda p=tpath, w=where: read_image_file(p, w)  # noqa: E731
    extras = {k: v for k, v in entry.items() if k in ("attributes", "edit")}
    return Sample(id=str(sid), edit_type=etype, source_prompt_raw=src, target_prompt_raw=tgt, mask=mask,
                  instruction=(instruction or None), blended_words=_blended(blended), dataset=dataset,
                  image_path=image_path, _image_fn=image_fn, _target_fn=target_fn, extras=extras)


def read_mapping_file(path: Path) -> tuple[dict, str]:
    if not path.is_file():
        raise DataError(f"{path}: mapping file not found; point --data at a PIE-Bench folder holding "
                        "mapping_file.json and annotation_images/")
    raw = path.read_bytes()
    try:
        mapping = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); re-download or repair the mapping file") from None
    except RecursionError:  # nesting deeper than the JSON parser's stack: no mapping file looks like that
        raise DataError(f"{path}: JSON nested too deeply to be a mapping file; re-download or repair it") from None
    if not isinstance(mapping, dict):
        raise DataError(f"{path}: top level must be an object keyed by sample id, got {type(mapping).__name__}; "
                        "point --data at a PIE-Bench folder or fix the mapping file")
    return mapping, hashlib.sha256(raw).hexdigest()


def load_pie_folder(root: Path, *, name: Optional[str] = None) -> Dataset:
    """The official layout: ``<root>/mapping_file.json`` and ``<root>/annotation_images/<image_path>``."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: --data path does not exist; pass smoke, shapes, a PIE-Bench folder or hf:<repo>")
    mapping, sha = read_mapping_file(root / "mapping_file.json")
    images = root / "annotation_images"
    dataset = name or root.name
    samples = [sample_from_entry(sid, entry, root=images, dataset=dataset, where_prefix=f"{root / 'mapping_file.json'}: ")
               for sid, entry in mapping.items()]
    has_targets = any(s.has_target_image for s in samples)
    return Dataset(name=dataset, source=str(root), annotations_sha256=sha, samples=samples, has_targets=has_targets)


def load_smoke() -> Dataset:
    from pie_bench.datasets.smoke import MAPPING_FILE, SMOKE_IMAGES, build_smoke_image

    mapping, sha = read_mapping_file(MAPPING_FILE)
    samples = []
    for sid, entry in mapping.items():
        rel = entry.get("image_path")
        if rel not in SMOKE_IMAGES:
            raise DataError(f"{MAPPING_FILE}: sample {sid}: unknown smoke image {rel!r}")
        samples.append(sample_from_entry(sid, entry, root=None, dataset="smoke",
                                         image_fn=lambda r=rel: build_smoke_image(r)))
    return Dataset(name="smoke", source="bundled:pie_bench/smoke", annotations_sha256=sha, samples=samples)


# ---------------------------------------------------------------------------------------------
# PIE_Bench_pp (Hugging Face)


def _hf_blended(raw, where: str) -> Optional[tuple[str, str]]:
    """``blended_words``: a JSON list of "source,target" strings (or one bare string); the first pair is used."""
    pairs = raw or []
    if isinstance(pairs, str):
        try:
            pairs = json.loads(pairs)
        except (json.JSONDecodeError, RecursionError):
            pairs = [pairs]
    if isinstance(pairs, str):
        pairs = [pairs]
    if not isinstance(pairs, list) or not all(isinstance(p, str) for p in pairs):
        raise DataError(f"{where}: blended_words {shown(raw)[:80]} is not a list of 'source,target' strings; "
                        "fix the row or re-download the parquet file")
    if not pairs:
        return None
    first = pairs[0].split(",")
    return (first[0].strip(), (first[1] if len(first) > 1 else first[0]).strip())


def _hf_image(image, where: str) -> np.ndarray:
    if isinstance(image, dict):  # undecoded {"bytes", "path"}
        data = image.get("bytes")
        if not isinstance(data, (bytes, bytearray)) or not data:
            raise DataError(f"{where}: row has no image bytes; re-download the parquet file")
        return decode_image(lambda: Image.open(io.BytesIO(data)), where, "the row's image")
    if not isinstance(image, Image.Image):
        raise DataError(f"{where}: row image is {type(image).__name__}, not an image; re-download the parquet file")
    return decode_image(lambda: image, where, "the row's image")


def _hf_rows_to_samples(rows: Iterable[dict], config: str, dataset: str) -> list[Sample]:
    etype = int(config.split("_", 1)[0])
    out = []
    for i, row in enumerate(rows):
        sid = str(row.get("id", f"{config}-{i}"))
        prefix = f"{dataset}/{config}: "
        where = f"{prefix}sample {shown(sid)}"
        blended = _hf_blended(row.get("blended_words"), where)
        entry = {"original_prompt": row.get("source_prompt"), "editing_prompt": row.get("target_prompt"),
                 "editing_type_id": str(etype), "mask": parse_mask_string(row.get("mask", ""), where=where),
                 "blended_word": " ".join(blended) if blended else ""}
        image = row.get("image")
        sample = sample_from_entry(sid, entry, root=None, dataset=dataset, where_prefix=prefix,
                                   image_fn=lambda image=image, where=where: _hf_image(image, where))
        sample.extras.update({k: row[k] for k in ("edit_action", "aspect_mapping") if row.get(k)})
        out.append(sample)
    return out


def load_hf(spec: str, categories: Optional[Sequence[int]] = None) -> Dataset:
    """``hf:<repo>`` through ``datasets.load_dataset(repo, config, split='V1')`` (honours HF_HUB_OFFLINE
    and the local cache), or ``hf:<local folder>`` holding ``<config>/*.parquet``."""
    try:
        import datasets
    except ImportError:  # pragma: no cover - pinned dependency
        raise DataError("hf: data needs the 'datasets' package; pip install datasets") from None
    target = spec[3:] or HF_DEFAULT_REPO
    wanted = [EDIT_TYPES[c][0] for c in (categories if categories is not None else sorted(EDIT_TYPES))]
    local = Path(target)
    digest = hashlib.sha256()
    samples: list[Sample] = []
    for config in wanted:
        if local.is_dir():
            files = sorted((local / config).glob("*.parquet"))
            if not files and categories is not None:  # asked for by name: silently dropping it would skew means
                has = sorted(p.parent.name for p in local.glob("*/*.parquet"))
                raise DataError(f"hf:{target}: config {config!r} does not exist there (no {config}/*.parquet; "
                                f"it has {', '.join(dict.fromkeys(has)) or 'none'}); download that config or pick "
                                "--categories it has")
            if not files:
                continue
            for f in files:
                digest.update(f.read_bytes())
            ds = datasets.load_dataset("parquet", data_files=[str(f) for f in files], split="train")
        else:
            try:
                ds = datasets.load_dataset(target, config, split=HF_SPLIT)
            except ValueError as exc:
                if "BuilderConfig" in str(exc) or "config" in str(exc).lower():
                    has = str(exc).partition("Available:")[2].strip()
                    raise DataError(f"hf:{target}: config {config!r} does not exist"
                                    f"{f' (it has {has})' if has else ''}; point hf: at a copy of {HF_DEFAULT_REPO} "
                                    "or pick --categories it has") from None
                raise DataError(f"hf:{target}: {exc}") from None
            except Exception as exc:  # network/cache failures are many types
                raise DataError(f"hf:{target}: could not load config {config} ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else ''}); download it once online or "
                                "point hf: at a local parquet folder") from None
            digest.update(str(getattr(ds, "_fingerprint", config)).encode())
        samples += _hf_rows_to_samples(ds, config, f"hf:{target}")
    if not samples:
        raise DataError(f"hf:{target}: no parquet files found for {wanted}; expected <config>/V1-*.parquet")
    return Dataset(name=f"hf:{local.name if local.is_dir() else target}", source=spec,
                   annotations_sha256=digest.hexdigest(), samples=samples)


# ---------------------------------------------------------------------------------------------
# selection


def parse_categories(text: Optional[str]) -> Optional[list[int]]:
    """``--categories 1,6`` or names (``"change color"``, ``change_color``) or folder names."""
    if not text:
        return None
    out = []
    for tok in text.split(","):
        tok = tok.strip()
        if not tok:
            continue
        norm = tok.replace("_", " ").lower()
        if tok.isdigit() and int(tok) in EDIT_TYPES:
            out.append(int(tok))
        elif norm in EDIT_TYPE_BY_NAME:
            out.append(EDIT_TYPE_BY_NAME[norm])
        elif any(tok == folder for folder, _ in EDIT_TYPES.values()):
            out.append(next(i for i, (f, _) in EDIT_TYPES.items() if f == tok))
        else:
            names = ", ".join(f"{i}={n}" for i, (_, n) in EDIT_TYPES.items())
            raise DataError(f"--categories: unknown edit type {tok!r}; use ids or names: {names}")
    return sorted(set(out))


LIMIT_MODES = ("spread", "first")


def spread_limit(samples: Sequence[Sample], limit: int) -> list[Sample]:
    """``limit`` samples spread over the edit categories present: round-robin in category order, each
    category giving its samples in dataset order (a category that runs out leaves its turn to the
    others); the result keeps dataset order. Deterministic, and a quick check sees every category."""
    by_cat: dict[int, list[int]] = {}
    for i, s in enumerate(samples):
        by_cat.setdefault(s.edit_type, []).append(i)
    queues = [by_cat[c] for c in sorted(by_cat)]
    chosen: list[int] = []
    depth = 0
    while len(chosen) < limit and any(depth < len(q) for q in queues):
        for q in queues:
            if depth < len(q) and len(chosen) < limit:
                chosen.append(q[depth])
        depth += 1
    return [samples[i] for i in sorted(chosen)]


def select(ds: Dataset, categories: Optional[list[int]] = None, ids: Optional[Sequence[str]] = None,
           limit: Optional[int] = None, limit_mode: str = "spread") -> Dataset:
    """The samples a run uses. ``limit``: at most that many, spread over the selected categories
    (``limit_mode="spread"``, see ``spread_limit``) or the first ones in dataset order (``"first"``)."""
    if limit_mode not in LIMIT_MODES:
        raise DataError(f"--limit-mode {limit_mode!r}: use one of {', '.join(LIMIT_MODES)}")
    if limit is not None and limit < 0:
        raise DataError(f"--limit {limit}: give a number of samples >= 0")
    samples = ds.samples
    if categories is not None:
        samples = [s for s in samples if s.edit_type in categories]
    if ids:
        known = {s.id for s in samples}
        missing = [i for i in ids if i not in known]
        if missing:
            raise DataError(f"--ids: {', '.join(missing[:5])} not in dataset {ds.name}; check the ids")
        wanted = set(ids)
        samples = [s for s in samples if s.id in wanted]
    if limit is not None:
        samples = samples[:limit] if limit_mode == "first" else spread_limit(samples, limit)
    selection = {"recorded": True, "categories": categories, "ids": len(ids) if ids else None, "limit": limit,
                 "limit_mode": limit_mode if limit is not None else None}
    return Dataset(name=ds.name, source=ds.source, annotations_sha256=ds.annotations_sha256, samples=samples,
                   has_targets=ds.has_targets, meta={**ds.meta, "selection": selection})


def load_dataset(spec: str, *, categories: Optional[list[int]] = None, ids: Optional[Sequence[str]] = None,
                 limit: Optional[int] = None, limit_mode: str = "spread") -> Dataset:
    """``--data smoke | shapes | PATH | hf:<repo or parquet folder>``."""
    from pie_bench.datasets.registry import DATASETS  # names only; the loaders import lazily

    if spec in DATASETS.entries():
        ds = DATASETS.get(spec)()
        if not isinstance(ds, Dataset):
            raise DataError(f"--data {spec}: its loader returned {type(ds).__name__}, not a Dataset; "
                            "fix the plugin's loader")
    elif spec.startswith("hf:"):
        ds = load_hf(spec, categories)
    else:
        path = Path(spec)
        if not path.exists():
            raise DataError(f"{spec}: --data path does not exist; pass smoke, "
                            f"{', '.join(n for n in DATASETS.names() if n != 'smoke')}, a PIE-Bench folder or hf:<repo>")
        if path.is_file() and path.name.endswith(".json"):
            path = path.parent
        ds = load_pie_folder(path)
    return select(ds, categories, ids, limit, limit_mode)
