"""`bench --batch-size`: editors that override ``edit_batch`` get chunks of samples; the records equal a
one-by-one run's, a raising batch is redone sample by sample so only the culprit fails, and editors
without ``edit_batch`` are never batched."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from editors import registry
from editors.base import EditOutput, Editor, EditorConfig
from metrics.registry import build_metrics
from pie_bench.datasets.pie import load_dataset
from pie_bench.run.runner import BenchOptions, run_bench

CALLS: list[tuple[str, int]] = []


@dataclass
class NoiseConfig(EditorConfig):
    fail_on: str = ""


class BatchNoise(Editor):
    """Adds seeded noise; the generator is per sample, so batching must not change any output."""
    name = "batch_noise"
    Config = NoiseConfig
    uses_backbone = False

    def _one(self, sample, generator):
        if sample.id == self.config.fail_on:
            raise RuntimeError(f"bad sample {sample.id}")
        import torch
        noise = torch.randint(0, 40, (512, 512, 3), generator=generator).numpy().astype(np.int16)
        return EditOutput(image=np.clip(sample.image.astype(np.int16) + noise - 20, 0, 255).astype(np.uint8))

    def edit(self, sample, generator):
        CALLS.append(("edit", 1))
        return self._one(sample, generator)

    def edit_batch(self, samples, generators):
        CALLS.append(("batch", len(samples)))
        return [self._one(s, g) for s, g in zip(samples, generators)]


class PlainNoise(BatchNoise):
    name = "plain_noise"
    edit_batch = Editor.edit_batch  # no batched path: the runner must call edit per sample


@pytest.fixture
def editors(monkeypatch):
    monkeypatch.setattr(registry.EDITORS, "builtins", {**registry.EDITORS.builtins,
                                                       "batch_noise": "tests.test_runner_batch:BatchNoise",
                                                       "plain_noise": "tests.test_runner_batch:PlainNoise"})
    registry.registry(refresh=True)
    CALLS.clear()


def _records(board_dir):
    from pie_bench.run.run_folder import RunFolder

    return {r.sample_id: (r.status, r.metrics, r.error) for r in RunFolder(board_dir).records()}


def test_batched_run_equals_one_by_one(editors, tmp_path):
    ds = load_dataset("smoke", limit=5)
    metrics = build_metrics(["psnr_unedit_part", "mse_unedit_part"])
    run_bench(ds, BenchOptions(editors=["batch_noise"], warmup=0), metrics, tmp_path / "one")
    assert CALLS == [("edit", 1)] * 5
    CALLS.clear()
    board = run_bench(ds, BenchOptions(editors=["batch_noise"], batch_size=3, warmup=0), metrics, tmp_path / "b3")
    assert CALLS == [("batch", 3), ("batch", 2)]
    assert _records(tmp_path / "b3") == _records(tmp_path / "one")
    assert board["editors"]["batch_noise"]["n_ok"] == 5
    assert board["editors"]["batch_noise"]["latency"]["n"] == 5


def test_failing_batch_is_redone_one_by_one(editors, tmp_path):
    ds = load_dataset("smoke", limit=4)
    bad = ds.samples[1].id
    board = run_bench(ds, BenchOptions(editors=["batch_noise"], editor_args={"batch_noise": {"fail_on": bad}},
                                       batch_size=4, warmup=0), build_metrics(["mse_unedit_part"]), tmp_path / "r")
    assert CALLS[0] == ("batch", 4) and CALLS[1:] == [("edit", 1)] * 4
    recs = _records(tmp_path / "r")
    assert recs[bad][0] == "failed" and "bad sample" in recs[bad][2]
    assert [v[0] for k, v in recs.items() if k != bad] == ["ok"] * 3
    assert board["editors"]["batch_noise"]["n_failed"] == 1


def test_editors_without_edit_batch_are_not_batched(editors, tmp_path):
    run_bench(load_dataset("smoke", limit=3), BenchOptions(editors=["plain_noise"], batch_size=8),
              build_metrics(["mse_unedit_part"]), tmp_path / "p")
    assert CALLS == [("edit", 1)] * 3


def test_warm_up_samples_are_edited_alone(editors, tmp_path):
    """A batch holding a warm-up sample would be all warm-up (its cost is spread over the call), so the
    warm-up samples go one by one and every later batch is timed."""
    ds = load_dataset("smoke", limit=5)
    board = run_bench(ds, BenchOptions(editors=["batch_noise"], batch_size=3, warmup=1),
                      build_metrics(["mse_unedit_part"]), tmp_path / "w")
    from pie_bench.run.run_folder import RunFolder

    assert CALLS == [("edit", 1), ("batch", 3), ("edit", 1)]
    warm = {r.sample_id: r.warmup for r in RunFolder(tmp_path / "w").records()}
    assert list(warm.values()) == [True, False, False, False, False]
    lat = board["editors"]["batch_noise"]["latency"]
    assert (lat["n"], lat["warmup_excluded"]) == (4, 1)
