"""The set-metric contract: one number per editor over a set of edited images (FID, KID, IS, PR, PSD),
or one per sample over its K seeds, averaged (the diversity scores).

A per-sample metric (``metrics.base.Metric``) sees one batch and returns one value per sample; a set
metric cannot: FID of 30 images is not a mean of 30 numbers. So a set metric is split in two:

- ``features(images_u8)``: per image, whatever the statistic needs (Inception pool3, a residual power
  spectrum, ...). The harness computes these once per image and reuses them for every subset (all samples,
  each category) and for every bootstrap resample;
- ``statistic(edited, reference, ids)``: the number for a set, from the stacked features of the edited
  images and (``reference`` = ``"source"`` or ``"target"``) of their references, row i of both belonging
  to the same sample. ``ids`` are the rows' original sample indices: a bootstrap resample repeats rows,
  and a statistic that must not pair a row with its own copy (KID's within-set terms) reads them.

The leaderboard records the value over the whole set, n, and a seeded percentile-bootstrap interval
(resampling samples with replacement, edited image and reference together). Below ``min_n`` images the
value is NaN with the reason. ``SeedMetric`` (diversity) has ``pairwise(features of one sample's K
outputs)`` instead, and the set value is the mean over samples.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import numpy as np
import torch

REFERENCES = ("source", "target", None)
BOOTSTRAP_SEED = 0
BOOTSTRAP_REPS = 200
CI_LEVEL = 0.95


class SetMetric:
    """Base class of metrics over a set of edited images (see the module docstring)."""

    kind: ClassVar[str] = "set"
    name: ClassVar[str] = "set_metric"
    label: ClassVar[str] = ""
    higher_is_better: ClassVar[bool] = False
    scale: ClassVar[float] = 1.0
    reference: ClassVar[Optional[str]] = "source"  # the set compared against; None: the edited set alone
    min_n: ClassVar[int] = 2
    uses_weights: ClassVar[bool] = True
    # metrics with the same key share one feature pass (FID, KID and IS all read one Inception pass)
    features_key: ClassVar[str] = ""
    requires_target: ClassVar[bool] = False
    note: ClassVar[str] = ""  # shown under the set-metric table (e.g. FID's small-n bias)

    region: ClassVar[str] = "set"  # what list-metrics shows in the region column

    def __init__(self) -> None:
        self.backbone = "none"
        self.is_toy = False
        self.device = torch.device("cpu")

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls.requires_target = cls.reference == "target"  # skipped on datasets without target images

    def load(self, backbone: str = "toy", device="cpu") -> None:
        self.backbone = backbone
        self.is_toy = backbone == "toy" and self.uses_weights
        self.device = torch.device(device)

    def feature_cache_key(self) -> str:
        return f"{self.features_key or self.name}|{self.backbone}"

    def features(self, images_u8: torch.Tensor) -> np.ndarray:
        """(B, 3, H, W) uint8 -> (B, ...) float array, one row per image."""
        raise NotImplementedError

    def statistic(self, edited: np.ndarray, reference: Optional[np.ndarray], ids: np.ndarray) -> float:
        raise NotImplementedError

    def resampled(self, edited: np.ndarray, reference: Optional[np.ndarray], draws: np.ndarray) -> np.ndarray:
        """The statistic on each bootstrap resample (rows of ``draws``: sorted indices); a metric with a faster
        exact way (PR's Gram matrix) overrides this."""
        return np.array([self.statistic(edited[idx], None if reference is None else reference[idx], idx)
                         for idx in draws], dtype=np.float64)

    def describe(self) -> dict:
        return {"kind": self.kind, "higher_is_better": self.higher_is_better, "scale": self.scale,
                "label": self.label or self.name, "reference": self.reference, "min_n": self.min_n,
                "backbone": self.backbone, "toy": self.is_toy, "note": self.note,
                "interval": f"{int(CI_LEVEL * 100)}% percentile bootstrap over samples, {BOOTSTRAP_REPS} resamples, "
                            f"seed {BOOTSTRAP_SEED}"}


class SeedMetric(SetMetric):
    """Diversity among the K outputs of one sample (K seeds), averaged over samples."""

    kind: ClassVar[str] = "seeds"
    reference: ClassVar[Optional[str]] = None
    min_n: ClassVar[int] = 1  # samples with at least two seeds
    higher_is_better: ClassVar[bool] = True
    deterministic_value: ClassVar[float] = 0.0  # what identical outputs score (distances: 0)

    def pairwise(self, outputs: np.ndarray) -> float:
        """The K outputs' features (K, ...) -> the sample's diversity."""
        raise NotImplementedError

    def statistic(self, edited: np.ndarray, reference, ids) -> float:  # edited: per-sample scores
        return float(np.mean(edited))


@dataclass
class SetValue:
    value: float
    ci_low: float
    ci_high: float
    n: int
    reason: str = ""


def bootstrap(metric: SetMetric, edited: np.ndarray, reference: Optional[np.ndarray],
              reps: int = BOOTSTRAP_REPS, seed: int = BOOTSTRAP_SEED, level: float = CI_LEVEL) -> SetValue:
    """The statistic on the whole set and its percentile-bootstrap interval (pairs resampled together).
    NaN with the reason below ``metric.min_n``."""
    n = int(edited.shape[0])
    nan = float("nan")
    if n < metric.min_n:
        return SetValue(nan, nan, nan, n, f"n={n} < {metric.min_n}, the fewest this metric is computed on")
    ids = np.arange(n)
    value = float(metric.statistic(edited, reference, ids))
    rng = np.random.default_rng(seed)
    indices = np.sort(rng.integers(0, n, (reps if n > 1 else 0, n)), axis=1)
    values = metric.resampled(edited, reference, indices) if len(indices) else np.zeros(0)
    values = values[np.isfinite(values)]
    if not values.size:
        return SetValue(value, nan, nan, n)
    lo, hi = np.quantile(values, [(1 - level) / 2, 1 - (1 - level) / 2])
    return SetValue(value, float(lo), float(hi), n)
