"""Test-only editors for fault injection, the kill test and multi-process parity.

Registered per test through the editor registry (``use_fault_editors``), or for a CLI subprocess
through a throwaway distribution exposing the ``pie_bench.editors`` entry point (``plugin_env``),
exactly as a third-party editor would be.
"""
from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from editors.base import EditOutput, Editor, EditorConfig

FAULT_EDITORS = {
    "raise_on": "tests.fault_editors:RaiseOnEditor",
    "nan_on": "tests.fault_editors:NaNOnEditor",
    "black_on": "tests.fault_editors:BlackOnEditor",
    "oom_on": "tests.fault_editors:OOMOnEditor",
    "slow": "tests.fault_editors:SlowEditor",
    "jitter": "tests.fault_editors:JitterEditor",
    "flaky": "tests.fault_editors:FlakyEditor",
}


@dataclass
class FaultConfig(EditorConfig):
    fail_on: str = ""  # comma-separated sample ids


class _FaultEditor(Editor):
    Config = FaultConfig
    requires = frozenset({"image"})
    paper = "test-only fault injection"
    uses_backbone = False

    def _hit(self, sample) -> bool:
        return sample.id in {s.strip() for s in self.config.fail_on.split(",") if s.strip()}

    def edit(self, sample, generator):
        if self._hit(sample):
            return self.fault(sample)
        return EditOutput(image=sample.image.copy())

    def fault(self, sample):
        raise NotImplementedError


class RaiseOnEditor(_FaultEditor):
    name = "raise_on"

    def fault(self, sample):
        raise RuntimeError(f"injected failure on {sample.id}")


class NaNOnEditor(_FaultEditor):
    name = "nan_on"

    def fault(self, sample):
        return EditOutput(image=np.full((512, 512, 3), np.nan, dtype=np.float32))


class BlackOnEditor(_FaultEditor):
    name = "black_on"

    def fault(self, sample):
        return EditOutput(image=np.zeros((512, 512, 3), dtype=np.uint8))


class OOMOnEditor(_FaultEditor):
    name = "oom_on"

    def fault(self, sample):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")


@dataclass
class SlowConfig(EditorConfig):
    delay: float = 0.5


class SlowEditor(Editor):
    """Identity that takes ``delay`` seconds per sample, so a test can kill a run part-way. Writes a
    marker per started sample (PIE_BENCH_TEST_MARKERS) so the test knows how far it got, and hangs on
    the N-th sample it starts when PIE_BENCH_TEST_HANG_AT=N, so the kill lands at a known point."""

    name = "slow"
    Config = SlowConfig
    requires = frozenset({"image"})
    paper = "test-only slow identity"
    uses_backbone = False

    def edit(self, sample, generator):
        markers = os.environ.get("PIE_BENCH_TEST_MARKERS")
        if markers:
            with open(Path(markers), "a") as fh:
                fh.write(f"{sample.id}:{os.getpid()}\n")
            started = len(Path(markers).read_text().split())
            if str(started) == os.environ.get("PIE_BENCH_TEST_HANG_AT"):
                time.sleep(3600)
        time.sleep(self.config.delay)
        return EditOutput(image=sample.image.copy())


@dataclass
class JitterConfig(EditorConfig):
    amplitude: int = 12


class JitterEditor(Editor):
    """Adds noise drawn from the per-sample generator to the edit region and half the background, so
    every sample scores differently and any change in seeding or sharding changes the numbers."""

    name = "jitter"
    Config = JitterConfig
    requires = frozenset({"image"})
    paper = "test-only seeded noise"
    uses_backbone = False

    def edit(self, sample, generator):
        noise = torch.randint(-self.config.amplitude, self.config.amplitude + 1, (512, 512, 3),
                              generator=generator).numpy()
        region = sample.mask.copy()
        region[:, :256] = True
        out = sample.image.astype(np.int16)
        out[region] += noise[region].astype(np.int16)
        return EditOutput(image=np.clip(out, 0, 255).astype(np.uint8))


@dataclass
class FlakyConfig(EditorConfig):
    rate: float = 0.05  # fraction of samples that fault
    fault_seed: int = 0


FLAKY_FAULTS = ("raise", "nan", "black", "oom")


def flaky_fault(sample_id: str, rate: float, fault_seed: int) -> str:
    """The fault (or "") a sample meets: a hash of (seed, id), so every run, process count and resume
    picks the same samples and the same fault for each."""
    h = int.from_bytes(hashlib.sha256(f"{fault_seed}:{sample_id}".encode()).digest()[:8], "big")
    if (h % 1_000_000) / 1_000_000 >= rate:
        return ""
    return FLAKY_FAULTS[(h // 1_000_000) % len(FLAKY_FAULTS)]


class FlakyEditor(JitterEditor):
    """Jitter that fails on a seeded ``rate`` of samples, by raising, returning NaN or black, or raising
    CUDA OOM: the soak's stand-in for an editor that breaks now and then."""

    name = "flaky"
    Config = FlakyConfig
    paper = "test-only seeded faults"

    def edit(self, sample, generator):
        fault = flaky_fault(sample.id, self.config.rate, self.config.fault_seed)
        if fault == "raise":
            raise RuntimeError(f"injected failure on {sample.id}")
        if fault == "nan":
            return EditOutput(image=np.full((512, 512, 3), np.nan, dtype=np.float32))
        if fault == "black":
            return EditOutput(image=np.zeros((512, 512, 3), dtype=np.uint8))
        if fault == "oom":
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory on {sample.id} (injected)")
        noise = torch.randint(-12, 13, (512, 512, 3), generator=generator).numpy()
        return EditOutput(image=np.clip(sample.image.astype(np.int16) + noise, 0, 255).astype(np.uint8))


def register(monkeypatch) -> None:
    """Add the fault editors to the in-process registry for one test."""
    from editors import registry

    monkeypatch.setattr(registry.EDITORS, "builtins", {**registry.EDITORS.builtins, **FAULT_EDITORS})


def plugin_env(tmp_path: Path, repo: Path) -> dict:
    """Environment for a CLI subprocess that sees the fault editors as an installed plugin."""
    site = tmp_path / "fault_site"
    dist = site / "pie_bench_fault_editors-0.1.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: pie-bench-fault-editors\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[pie_bench.editors]\n" + "".join(f"{k} = {v}\n" for k, v in FAULT_EDITORS.items()))
    return {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{repo}", "OMP_NUM_THREADS": "1",
            "PIE_BENCH_DIST_TIMEOUT_S": "120"}
