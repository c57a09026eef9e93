"""How a sample fails: the one-line error text a failed record carries, the checks that fail an edited
image, and the record a failure (or a skip) leaves. A failing sample is recorded as failed with its
error and excluded from means, never scored 0."""
from __future__ import annotations

import logging
import traceback

import numpy as np
import torch

from editors.base import SkipSample

from pie_bench.core.errors import HarnessError
from pie_bench.run.results import SampleRecord

log = logging.getLogger("pie_bench")


class MetricFailed(RuntimeError):
    """A metric raised on one sample; the sample is recorded as failed with the metric's name."""


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, (HarnessError, MetricFailed)) else f"{type(exc).__name__}: {text}"


def check_image(image: np.ndarray, editor: str, sample_id: str) -> None:
    # NaN latents decode to black, and diffusers' safety checker blacks out flagged images; neither
    # is an edit, and scoring one would pass a broken pipeline off as a weak editor
    if not image.any():
        raise ValueError(f"{editor} returned an all-black image for sample {sample_id} (NaN in the "
                         "pipeline, e.g. an fp16 overflow, or a safety checker); under --dtype float16 try float32")


def failure_text(exc: BaseException) -> str:
    text = one_line(exc)
    if isinstance(exc, torch.cuda.OutOfMemoryError) or isinstance(exc.__cause__, torch.cuda.OutOfMemoryError):
        text += " (out of GPU memory: free memory, use fewer processes per GPU or --dtype float16, " \
                "then rerun with --retry-failed)"
    return text


def record_failure(rec: SampleRecord, exc: BaseException) -> None:
    if isinstance(exc, SkipSample):
        rec.status, rec.error = "skipped", str(exc)
        return
    rec.status, rec.error = "failed", failure_text(exc)
    rec.latency_s = None
    rec.metrics = {}
    log.debug("sample failure", exc_info=True)
    if isinstance(exc, torch.cuda.OutOfMemoryError) and torch.cuda.is_available():
        torch.cuda.empty_cache()
    rec.extras = {"traceback": traceback.format_exc(limit=3)[-2000:]}
