"""Set metrics of a run folder (``metrics.sets``): computed from the saved images whenever the leaderboard is
written, so a resumed run that adds samples recomputes them over everything done (never appends twice).

Per editor, over its ok records of the first seed (the ones the per-sample means use), for all samples and
for each edit category: the edited images' features against the sources' (or the targets') features of the
same samples, then ``metrics.sets.bootstrap``. Seed metrics (diversity) read, per sample, the outputs of
every seed (``bench --seeds K``). Features are computed once per image and process (the sources once for
every editor); a changed PNG (same path, new mtime) is read again.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from PIL import Image

from metrics.sets import SeedMetric, SetMetric, bootstrap
from pie_bench.run.results import SampleRecord, encode_float
from pie_bench.run.run_folder import RunFolder

CHUNK = 16
_FEATURES: dict[tuple, np.ndarray] = {}  # (feature key, image identity) -> row; process-wide
_MAX_CACHED = 20000


def split_metrics(metrics: list) -> tuple[list, list]:
    """(per-sample metrics, set metrics)."""
    from metrics.registry import is_set_metric

    return [m for m in metrics if not is_set_metric(m)], [m for m in metrics if is_set_metric(m)]


def _stats(metric: SetMetric, value: float, lo: float, hi: float, n: int, reason: str = "", note: str = "") -> dict:
    return {"value": encode_float(value), "ci_low": encode_float(lo), "ci_high": encode_float(hi), "n": int(n),
            "reason": reason, "note": note, "higher_is_better": metric.higher_is_better}


def _nan(metric: SetMetric, n: int, reason: str) -> dict:
    nan = float("nan")
    return _stats(metric, nan, nan, nan, n, reason=reason)


class SetScorer:
    """Set metrics for every editor of one run folder."""

    def __init__(self, folder: RunFolder, dataset, metrics: list) -> None:
        self.folder, self.dataset = folder, dataset
        self.metrics = [m for m in metrics if not isinstance(m, SeedMetric)]
        self.seed_metrics = [m for m in metrics if isinstance(m, SeedMetric)]
        self.samples = {s.id: s for s in dataset.samples}

    # -- images and features ------------------------------------------------------------------------
    def edited_path(self, rec: SampleRecord) -> Path:
        path = self.folder.image_path(rec.editor, rec.sample_id, getattr(rec, "seed_index", 0))
        if not path.is_file() and rec.image and Path(rec.image).is_file():  # `score`: images made elsewhere
            return Path(rec.image)
        return path

    def _edited_item(self, rec: SampleRecord) -> tuple[tuple, Callable[[], np.ndarray]]:
        path = self.edited_path(rec)
        try:
            st = path.stat()
            ident = ("edited", str(path), st.st_mtime_ns, st.st_size)
        except OSError:
            ident = ("edited", str(path), None, None)

        def load() -> np.ndarray:
            with Image.open(path) as img:
                return np.asarray(img.convert("RGB"))

        return ident, load

    def _reference_item(self, sample_id: str, which: str) -> tuple[tuple, Callable[[], np.ndarray]]:
        sample = self.samples[sample_id]
        ident = (which, self.dataset.annotations_sha256, sample_id)
        return ident, (lambda: sample.image) if which == "source" else (lambda: sample.target_image)

    def features(self, metric: SetMetric, items: list) -> np.ndarray:
        key = metric.feature_cache_key()
        todo = [(i, load) for i, (ident, load) in enumerate(items) if (key, ident) not in _FEATURES]
        for start in range(0, len(todo), CHUNK):
            part = todo[start:start + CHUNK]
            arrays = np.stack([load() for _, load in part])
            rows = metric.features(torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous())
            if len(_FEATURES) > _MAX_CACHED:
                _FEATURES.clear()
            for (i, _), row in zip(part, rows):
                _FEATURES[(key, items[i][0])] = row
        return np.stack([_FEATURES[(key, ident)] for ident, _ in items])

    # -- one editor -----------------------------------------------------------------------------------
    def score_editor(self, records: list[SampleRecord], stochastic: bool) -> dict:
        """{"overall": {metric: stats}, "per_category": {cat: {metric: stats}}} for one editor's records."""
        first = sorted((r for r in records if r.status == "ok" and getattr(r, "seed_index", 0) == 0
                        and r.sample_id in self.samples), key=lambda r: (r.edit_type, r.sample_id))
        groups = {"overall": first}
        for cat in sorted({r.edit_type for r in first}):
            groups[str(cat)] = [r for r in first if r.edit_type == cat]
        out: dict = {"overall": {}, "per_category": {c: {} for c in groups if c != "overall"}}

        def put(group: str, name: str, stats: dict) -> None:
            (out["overall"] if group == "overall" else out["per_category"][group])[name] = stats

        for metric in self.metrics:
            self._score_set_metric(metric, first, groups, put)
        if self.seed_metrics:
            self._score_seed_metrics(records, groups, stochastic, put)
        return out

    def _score_set_metric(self, metric: SetMetric, first: list, groups: dict, put) -> None:
        if not first:
            for g in groups:
                put(g, metric.name, _nan(metric, 0, "no finished samples"))
            return
        edited = self.features(metric, [self._edited_item(r) for r in first])
        reference = None
        if metric.reference is not None:
            if metric.reference == "target" and not all(self.samples[r.sample_id].has_target_image for r in first):
                for g in groups:
                    put(g, metric.name, _nan(metric, len(groups[g]), "the dataset has no target images"))
                return
            reference = self.features(metric, [self._reference_item(r.sample_id, metric.reference) for r in first])
        row = {r.key: i for i, r in enumerate(first)}
        for g, recs in groups.items():
            idx = np.array([row[r.key] for r in recs], dtype=int)
            v = bootstrap(metric, edited[idx], None if reference is None else reference[idx])
            put(g, metric.name, _stats(metric, v.value, v.ci_low, v.ci_high, v.n, v.reason,
                                       metric.note if v.n < 2000 and metric.note else ""))

    def _score_seed_metrics(self, records: list, groups: dict, stochastic: bool, put) -> None:
        by_sample: dict[str, list[SampleRecord]] = {}
        for r in records:
            if r.status == "ok" and r.sample_id in self.samples:
                by_sample.setdefault(r.sample_id, []).append(r)
        for metric in self.seed_metrics:
            if not stochastic:
                for g, recs in groups.items():
                    v = metric.deterministic_value
                    put(g, metric.name, _stats(metric, v, v, v, len(recs), note="deterministic editor: every seed "
                                               "gives the same output, so it was run once"))
                continue
            scores: dict[str, float] = {}
            for sid, recs in by_sample.items():
                recs = sorted(recs, key=lambda r: getattr(r, "seed_index", 0))
                if len(recs) < 2:
                    continue
                images = np.stack([self._edited_item(r)[1]() for r in recs])
                scores[sid] = metric.pairwise(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous())
            for g, recs in groups.items():
                vals = np.array([scores[r.sample_id] for r in recs if r.sample_id in scores], dtype=np.float64)
                if vals.size == 0:
                    put(g, metric.name, _nan(metric, 0, "needs at least two seeds per sample (bench --seeds K)"))
                    continue
                v = bootstrap(metric, vals, None)
                put(g, metric.name, _stats(metric, v.value, v.ci_low, v.ci_high, v.n, v.reason))


def score_sets(folder: RunFolder, dataset, metrics: list, editors: dict[str, dict],
               records: list[SampleRecord]) -> dict[str, dict]:
    """{editor: score_editor(...)} for the manifest's ``editors`` ({name: editor info}), over ``records``."""
    if not metrics:
        return {}
    scorer = SetScorer(folder, dataset, metrics)
    out = {}
    for name, info in editors.items():
        recs = [r for r in records if r.editor == name and r.config_hash == info.get("config_hash")
                and r.dataset_sha256 == dataset.annotations_sha256]
        if recs:
            out[name] = scorer.score_editor(recs, bool(info.get("stochastic", False)))
    return out


def finite(x: Optional[float]) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)
