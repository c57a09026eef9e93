"""Opt-in ``torch.compile`` of an editor's UNet (``--editor-arg icd.torch_compile=reduce-overhead``).

It pays where the same UNet runs many times on fixed shapes with little Python between calls: iCD's
4 + 4 consistency steps and InstructPix2Pix's sampling loop, where on a GPU kernel-launch overhead is a
large share of the time and ``reduce-overhead`` replays the whole UNet as a CUDA graph. Editors whose
UNet calls run through per-sample attention processors (Prompt-to-Prompt, Pix2Pix-Zero's guidance) are
left eager: new processors every sample would make the compiled graph's guards fail and recompile.
"""
from __future__ import annotations

import torch

from pie_bench.core.errors import ConfigError

COMPILE_MODES = ("", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_unet(unet, mode: str, backend: str = "inductor", editor: str = "editor"):
    """``unet`` unchanged when ``mode`` is empty, else its compiled wrapper (attributes such as ``config``
    and ``dtype`` still resolve to the module). ``backend`` other than inductor (``eager``, ``aot_eager``)
    traces the same graph without generating kernels: the tests use it to check that capture works and
    changes nothing."""
    if not mode:
        return unet
    if mode not in COMPILE_MODES:
        raise ConfigError(f"{editor}.torch_compile={mode!r}: expected one of {', '.join(m for m in COMPILE_MODES if m)}"
                          " (or empty for eager)")
    kwargs = {"mode": mode} if backend == "inductor" else {}
    return torch.compile(unet, backend=backend, dynamic=False, **kwargs)
