"""FID, KID and Inception Score of an editor's set of edits, on the FID Inception-v3 (``metrics.inception``).

- **FID** (Heusel et al. 2017): ``|mu_e - mu_r|^2 + tr(S_e) + tr(S_r) - 2 tr((S_e S_r)^(1/2))`` over pool3
  features (2048-d), S the unbiased (n - 1) covariances. The trace of the matrix square root is computed
  exactly as the nuclear norm of ``A_e A_r^T / sqrt((n_e - 1)(n_r - 1))`` (A: centred features): the
  singular values of A_e A_r^T are those of (A_e^T A_e)^(1/2) (A_r^T A_r)^(1/2). That is an n x n SVD instead
  of scipy's 2048 x 2048 ``sqrtm``, so the bootstrap interval costs milliseconds (written here for that
  reason; the parity test checks it against torch-fidelity's sqrtm). FID is biased upward at small n
  (Chong & Forsyth 2020; clean-fid): below ~2000 images compare FIDs only at equal n, and prefer KID.
- **KID** (Binkowski et al. 2018): MMD^2 with the cubic polynomial kernel ``k(x, y) = (x.y / d + 1)^3``.
  Default ``estimator="paired"``: the U-statistic over sample pairs (Gretton et al. 2012's MMD^2_u,
  ``sum_{i != j} k(e_i, e_j) + k(r_i, r_j) - k(e_i, r_j) - k(e_j, r_i)`` over n(n - 1)): unbiased whatever the
  dependence between an edit and its own reference, and exactly 0 for the unchanged source. KID's usual
  estimator (``estimator="unpaired"``, torch-fidelity's) also averages the cross terms k(e_i, r_i) of a sample
  with its own reference; that is unbiased only for independent sets, and on an editing benchmark, where every
  edit is paired with its source, it is pulled down by about 2/(n - 1) (E k(x, x) - E k(x, y)): the identity
  editor then scores below zero by as much as real differences between editors at n = 100. ``unpaired`` over all
  n equals torch-fidelity's (which averages 100 random subsets of 1000; on n <= 1000 with subset size n its
  subsets are permutations of the set) - the parity test. In a bootstrap resample, pairs of a sample with
  its own copy are left out of every sum that excludes i = j.
- **IS** (Salimans et al. 2016): ``exp(E_x KL(p(y|x) || p(y)))`` of the edited set alone, softmax of the
  1008 unbiased logits, one split (torch-fidelity's ``isc_splits=1``; the interval comes from the bootstrap
  instead of the 10-split standard deviation). Against the source set read the difference: the harness
  also reports ``inception_score_source``.
"""
from __future__ import annotations

import math
from typing import ClassVar, Optional

import numpy as np
import torch

from metrics.sets import SetMetric

SMALL_N_NOTE = ("FID is biased upward below ~2000 images: compare FIDs only at equal n, and read KID "
                "(unbiased) for small sets")


def frechet_distance(f_e: np.ndarray, f_r: np.ndarray) -> float:
    """FID between two feature sets (rows = images), exact, via the nuclear norm (module docstring)."""
    f_e, f_r = np.asarray(f_e, np.float64), np.asarray(f_r, np.float64)
    n_e, n_r = f_e.shape[0], f_r.shape[0]
    if n_e < 2 or n_r < 2:
        return float("nan")
    mu_e, mu_r = f_e.mean(0), f_r.mean(0)
    a, b = f_e - mu_e, f_r - mu_r
    tr_e, tr_r = (a * a).sum() / (n_e - 1), (b * b).sum() / (n_r - 1)
    cross = np.linalg.svd(a @ b.T, compute_uv=False).sum() / math.sqrt((n_e - 1) * (n_r - 1))
    return float(((mu_e - mu_r) ** 2).sum() + tr_e + tr_r - 2 * cross)


def kernel_mmd2(f_e: np.ndarray, f_r: np.ndarray, ids: Optional[np.ndarray] = None, paired: bool = False) -> float:
    """Unbiased MMD^2, cubic polynomial kernel; pairs (i, j) with ids[i] == ids[j] are left out of the
    within-set sums (i == j always is), and with ``paired`` out of the cross sum too (module docstring)."""
    f_e, f_r = np.asarray(f_e, np.float64), np.asarray(f_r, np.float64)
    d = f_e.shape[1]
    n = f_e.shape[0]
    if n < 2 or f_r.shape[0] < 2:
        return float("nan")
    ids = np.arange(n) if ids is None or len(ids) != n else np.asarray(ids)
    k_ee = (f_e @ f_e.T / d + 1) ** 3
    k_rr = (f_r @ f_r.T / d + 1) ** 3
    k_er = (f_e @ f_r.T / d + 1) ** 3
    distinct = ids[:, None] != ids[None, :]
    pairs = distinct.sum()
    if pairs == 0:
        return float("nan")
    within = (k_ee[distinct].sum() + k_rr[distinct].sum()) / pairs
    cross = k_er[distinct].sum() / pairs if paired else k_er.mean()
    return float(within - 2 * cross)


def inception_score(logits: np.ndarray) -> float:
    logits = torch.as_tensor(np.asarray(logits, np.float64))
    log_p = torch.log_softmax(logits, 1)
    p = log_p.exp()
    log_py = torch.log(p.mean(0, keepdim=True))
    kl = torch.where(p > 0, p * (log_p - log_py), torch.zeros_like(p))  # 0 log 0 = 0 where a softmax underflows
    return float(torch.exp(kl.sum(1).mean()))


class _InceptionSetMetric(SetMetric):
    features_key: ClassVar[str] = "inception"
    min_n: ClassVar[int] = 10

    def load(self, backbone: str = "toy", device="cpu") -> None:
        from metrics.inception import inception_model

        super().load(backbone, device)
        self.model, self.is_toy = inception_model(backbone, self.device)

    def feature_cache_key(self) -> str:
        return f"inception|{'toy' if self.is_toy else 'real'}"

    def features(self, images_u8: torch.Tensor) -> np.ndarray:
        from metrics.inception import inception_features

        pool, logits = inception_features(self.model, images_u8)
        return torch.cat([pool, logits], 1).numpy()  # (B, 2048 + 1008): one cached row serves all three

    def describe(self) -> dict:
        return {**super().describe(), "model": "toy inception (random, BN-calibrated)" if self.is_toy else
                "FID Inception-v3 pt_inception-2015-12-05"}


POOL = 2048


class FID(_InceptionSetMetric):
    label = "FID"
    note = SMALL_N_NOTE

    def statistic(self, edited, reference, ids) -> float:
        return frechet_distance(edited[:, :POOL], reference[:, :POOL])


class KID(_InceptionSetMetric):
    label = "KID x10^3"
    scale = 1e3
    min_n = 4
    ESTIMATORS = ("paired", "unpaired")

    def __init__(self, estimator: str = "paired") -> None:
        super().__init__()
        if estimator not in self.ESTIMATORS:
            from pie_bench.core.errors import ConfigError

            raise ConfigError(f"{self.name}: estimator={estimator!r} is not one of {', '.join(self.ESTIMATORS)}")
        self.estimator = estimator

    def statistic(self, edited, reference, ids) -> float:
        return kernel_mmd2(edited[:, :POOL], reference[:, :POOL], ids, paired=self.estimator == "paired")

    def describe(self) -> dict:
        return {**super().describe(), "estimator": self.estimator}


class InceptionScore(_InceptionSetMetric):
    label = "IS"
    higher_is_better = True
    reference = None

    def statistic(self, edited, reference, ids) -> float:
        return inception_score(edited[:, POOL:])


class FIDSource(FID):
    name = "fid_source"
    label = "FID vs source"


class FIDTarget(FID):
    name = "fid_target"
    label = "FID vs target"
    reference = "target"


class KIDSource(KID):
    name = "kid_source"
    label = "KID vs source x10^3"


class KIDTarget(KID):
    name = "kid_target"
    label = "KID vs target x10^3"
    reference = "target"


class ISEdited(InceptionScore):
    name = "inception_score"
    label = "IS"


class ISSource(InceptionScore):
    """The source set's IS (the same for every editor): the yardstick the edited set's IS is read against."""

    name = "inception_score_source"
    label = "IS of sources"
    reference = "source"

    def statistic(self, edited, reference, ids) -> float:
        return inception_score(reference[:, POOL:])
