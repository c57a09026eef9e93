"""The benchmark loop as one object: editors x samples -> edited PNG + scored JSONL record, then the
leaderboard.

``Runner`` holds what a run needs (dataset, options, metrics, run folder, record writer, progress, device,
process group) so one sample's path reads top to bottom in one class: ``run`` -> ``run_editor`` ->
``edit_chunk`` / ``edit_one`` -> ``finish_result`` -> ``write``. Each finished sample is written at once, so a
rerun of the same command resumes where it stopped. A sample that fails is recorded as failed with its
error and excluded from means (never scored 0). ``pie-bench score`` reuses the same object for images made
elsewhere (``pie_bench.run.score``).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from editors.base import SkipSample, as_edit_output
from editors.registry import get_editor_class

from pie_bench.core.errors import ConfigError, HarnessError, ResultsError, shown
from pie_bench.core.provenance import device_info, device_label, now_iso, synchronize
from pie_bench.datasets.pie import Dataset
from pie_bench.run.distributed import Dist, init_distributed, rank_device, shard
from pie_bench.run.failures import check_image, one_line, record_failure  # noqa: F401  (one_line: score.py)
from pie_bench.run.leaderboard import Leaderboard, as_leaderboard, build_leaderboard
from pie_bench.run.lock import FolderLock
from pie_bench.run.results import (JsonlWriter, SampleRecord, append_missing_lines, atomic_write_json, record_key,
                                   write_error)
from pie_bench.run.run_folder import RunFolder
from pie_bench.run.sample_io import save_png, score_sample  # noqa: F401  (re-exported: score.py, benchmarks)
from pie_bench.run.set_scores import score_sets, split_metrics
from pie_bench.run.stop import STOP_NAME, RunStopped, StopRequest, signal_name

log = logging.getLogger("pie_bench")

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


@dataclass
class BenchOptions:
    editors: Sequence[str]
    editor_args: dict[str, dict[str, str]] = field(default_factory=dict)
    backbone: str = "toy"
    device: str = "cpu"
    dtype: str = "float32"
    warmup: int = 1
    fail_fast: bool = False
    retry_failed: bool = False
    command: str = ""
    rank: int = 0
    world: int = 1
    batch_size: int = 1  # samples per edit_batch call, for editors that override it
    aliases: dict[str, str] = field(default_factory=dict)  # run name -> registry name (sweep variants)
    seeds: int = 1  # outputs per sample for stochastic editors (seed = config seed + 0 .. seeds - 1)


class FailFast(HarnessError):
    pass


def instantiate_editors(names: Sequence[str], editor_args: dict[str, dict[str, str]],
                        aliases: Optional[dict[str, str]] = None) -> list:
    """One editor per name; a name in ``aliases`` (a sweep variant) is that registry editor under its own
    name, so its records, images and leaderboard row stay apart from the other variants'."""
    unknown = set(editor_args) - set(names)
    if unknown:
        raise ConfigError(f"--editor-arg given for {', '.join(shown(u) for u in sorted(unknown))}, which is not in "
                          f"--editors ({', '.join(names)}); add it to --editors or drop that --editor-arg")
    editors = []
    for n in names:
        ed = get_editor_class((aliases or {}).get(n, n))(**editor_args.get(n, {}))
        if n != ed.name:
            ed.name = n
        editors.append(ed)
    return editors


def editor_info(editor) -> dict:
    return {"config": editor.config_dict(), "config_hash": editor.config_hash(), "backbone": editor.backbone_id,
            "editor": type(editor).name,
            "toy": editor.is_toy, "bound": editor.bound, "seed": getattr(editor.config, "seed", None), "paper": editor.paper,
            "stochastic": editor.stochastic}


class ProgressSink:
    """Progress callbacks; the CLI passes a rich implementation, tests the silent default."""

    def start(self, total: int) -> None: ...
    def editor(self, name: str, total: int) -> None: ...
    def advance(self, status: str) -> None: ...
    def note(self, text: str) -> None: ...
    def stop(self) -> None: ...


def generator_for(rec: SampleRecord) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(rec.seed if rec.seed is not None else 0)


class Runner:
    """One run of editors over a dataset into one run folder (see the module docstring)."""

    def __init__(self, dataset: Dataset, opts: BenchOptions, metrics: list, out: Path,
                 progress: Optional[ProgressSink] = None, dist: Optional[Dist] = None):
        self.dataset, self.opts, self.all_metrics = dataset, opts, metrics
        self.metrics, self.set_metrics = split_metrics(metrics)  # per sample; over sets, at leaderboard time
        self.dist = dist or init_distributed(opts.device)
        opts.rank, opts.world = self.dist.rank, self.dist.world
        # one progress display per launch: rank 0's
        self.progress = (progress if self.dist.is_main else None) or ProgressSink()
        self.folder = RunFolder(out)
        self.device = torch.device(rank_device(opts.device, self.dist))
        self.dtype = DTYPES[opts.dtype]
        self.device_label = device_label(self.device)
        self.writer: Optional[JsonlWriter] = None
        self.load_errors: dict[str, str] = {}
        self.timed = 0  # samples timed so far for the current editor (the first opts.warmup are warm-up)
        self.stop = StopRequest()  # replaced for the span of run(): SIGTERM/SIGINT stop between samples
        self.abandoned = 0  # (editor, sample) pairs this rank left undone because of a stop request

    # -- the run ---------------------------------------------------------------------------------
    def run(self, samples: Optional[Sequence] = None) -> dict:
        """Run every editor on ``samples`` (default: the whole dataset) and return the leaderboard as written.

        Under ``accelerate launch``/``torchrun`` the remaining work is split across ranks; each rank appends
        to its own ``samples.rank<k>.jsonl``; rank 0 then merges and writes the leaderboard, which every
        rank returns. A SIGTERM/SIGINT ends it at the next sample boundary: what is done is recorded, the
        leaderboard is written marked ``partial`` and ``RunStopped`` is raised on every rank."""
        samples = list(self.dataset.samples if samples is None else samples)
        editors = instantiate_editors(list(self.opts.editors), self.opts.editor_args, self.opts.aliases)
        for ed in editors:  # provenance must be known before load (the config hash includes the backbone)
            ed.bind_backbone(self.opts.backbone)
        lock = FolderLock(self.folder.root, self.opts.command)
        self.stop = StopRequest(self.folder.root / STOP_NAME, launched=self.dist.active)

        def start() -> list[str]:
            self.folder.create()
            lock.acquire()
            try:
                self.stop.clear_stale()
                # the records are read (and checked) before the manifest is rewritten: a refusal changes nothing
                done = sorted(self.folder.done_keys(self.opts.retry_failed))
                self.folder.prepare(self.dataset.describe(), {ed.name: editor_info(ed) for ed in editors},
                                    {"metrics": [m.name for m in self.all_metrics]})
                return done
            except BaseException:
                lock.release()
                raise

        with self.stop:
            # rank 0 alone reads the folder, so every rank shards the same remaining work
            done = set(self.dist.on_main(start))
            self.stop.announce()  # a signal that came before rank 0 cleared the stop file
            try:
                new_lines = self.run_shard(editors, samples, done)
                gathered = self.dist.gather((self.dist.rank, new_lines, self.load_errors, self.abandoned,
                                             self.stop.signum))

                def finish() -> tuple[dict, int, Optional[int]]:
                    errors: dict[str, str] = {}
                    for rank, lines, errs, _, _ in gathered:
                        if rank != self.dist.rank:
                            append_missing_lines(self.folder.shard_path(rank, self.dist.world), lines)
                        errors.update(errs)
                    left = sum(g[3] for g in gathered)
                    signum = next((g[4] for g in gathered if g[4]), None)
                    self.stop.clear_stale()
                    board = self.write_leaderboard(errors, partial=left > 0,
                                                   stopped_by=signal_name(signum) if signum else "")
                    return board, left, signum

                board, left, signum = self.dist.on_main(finish)
            finally:
                if self.dist.is_main:
                    lock.release()
        signum = self.stop.signum or signum
        if signum:
            where = self.folder.leaderboard_path
            raise RunStopped(signum, f"stopped by {signal_name(signum)}: " + (
                f"{left} (editor, sample) pair(s) left undone, every finished one recorded; the leaderboard of "
                f"what is done is {where} (marked partial); rerun the same command to resume" if left else
                f"every sample was already done; leaderboard: {where}"), board)
        return board

    def run_shard(self, editors: list, samples: list, done: set) -> list[str]:
        """This rank's part of the run; returns the record lines it wrote."""
        todo_by_editor = {}
        for ed in editors:
            chash, seeds = ed.config_hash(), range(max(1, self.opts.seeds) if ed.stochastic else 1)
            # every sample's first seed before any second: a stopped run leaves whole sets behind
            remaining = [(s, k) for k in seeds for s in samples
                         if record_key(ed.name, chash, self.dataset.annotations_sha256, s.id, k) not in done]
            todo_by_editor[ed.name] = shard(remaining, self.dist.rank, self.dist.world)
        self.writer = JsonlWriter(self.folder.shard_path(self.dist.rank, self.dist.world))
        self.progress.start(sum(len(t) for t in todo_by_editor.values()))
        try:
            for ed in editors:
                if self.stop.requested():
                    self.abandoned += len(todo_by_editor[ed.name])
                    continue
                self.run_editor(ed, todo_by_editor[ed.name])
        finally:
            self.writer.close()
            self.progress.stop()
        return self.writer.lines

    def run_editor(self, ed, todo: list) -> None:
        self.progress.editor(ed.name, len(todo))
        if not todo:
            return
        chash = ed.config_hash()
        try:
            ed.load(self.opts.backbone, self.device, self.dtype)
        except Exception as exc:  # weights missing etc.: the editor is reported, the others go on
            self.load_errors[ed.name] = one_line(exc)
            self.progress.note(f"[red]{ed.name}: could not load: {self.load_errors[ed.name]}[/red]")
            log.debug("load failure", exc_info=True)
            if self.opts.fail_fast:
                raise FailFast(f"{ed.name}: could not load ({self.load_errors[ed.name]})") from None
            for _ in todo:
                self.progress.advance("failed")
            return
        assert ed.config_hash() == chash, f"{ed.name}.load() changed its config hash"
        self.timed = 0
        pending: list = []  # (sample, record) ready to edit, waiting for a full batch
        batch = max(1, self.opts.batch_size) if ed.batches() else 1
        for i, (sample, k) in enumerate(todo):
            if self.stop.requested():  # the samples waiting for a batch have not started: abandoned too
                self.abandoned += len(todo) - i + len(pending)
                return
            rec = self.new_record(ed.name, chash, sample, seed=getattr(ed.config, "seed", None), seed_index=k)
            try:
                reason = ed.skip_reason(sample)
                if reason:
                    raise SkipSample(reason)
                _ = sample.image  # image problems are the sample's failure, not the editor's latency
            except Exception as exc:
                record_failure(rec, exc)
                self.write(rec)
                continue
            pending.append((sample, rec))
            # warm-up samples go alone: a batch holding one would be all warm-up, leaving a short run untimed
            if len(pending) >= (1 if self.timed < self.opts.warmup else batch):
                self.edit_chunk(ed, pending)
                pending = []
        if pending:
            self.edit_chunk(ed, pending)

    # -- one sample's path -------------------------------------------------------------------------
    def new_record(self, editor: str, config_hash: str, sample, seed: Optional[int] = None,
                   seed_index: int = 0) -> SampleRecord:
        return SampleRecord(sample_id=sample.id, editor=editor, config_hash=config_hash, dataset=self.dataset.name,
                            dataset_sha256=self.dataset.annotations_sha256, edit_type=sample.edit_type,
                            status="ok", seed=None if seed is None else seed + seed_index, seed_index=seed_index,
                            rank=self.dist.rank, world=self.dist.world, device=self.device_label, created_at=now_iso())

    def timed_edit(self, ed, samples: list, recs: list) -> tuple[list, float]:
        synchronize(self.device)
        t0 = time.perf_counter()
        with torch.inference_mode(False):
            if len(samples) == 1:
                results = [ed.edit(samples[0], generator_for(recs[0]))]
            else:
                results = ed.edit_batch(samples, [generator_for(r) for r in recs])
        synchronize(self.device)
        return results, time.perf_counter() - t0

    def edit_chunk(self, ed, chunk: list) -> None:
        """Edit ``chunk`` [(sample, record)] in one ``edit_batch`` call (or one ``edit``), then score, save
        and write each. A batch that raises is redone one sample at a time, so the failure lands on the
        sample that caused it. Latency per sample is the call's time over the chunk size."""
        samples, recs = [c[0] for c in chunk], [c[1] for c in chunk]
        results: Optional[list] = None
        if len(chunk) > 1:
            try:
                results, seconds = self.timed_edit(ed, samples, recs)
                if len(results) != len(chunk):
                    raise ValueError(f"{ed.name}.edit_batch returned {len(results)} outputs for {len(chunk)} samples")
            except Exception:
                log.debug("batch failed; redoing one by one", exc_info=True)
                results = None
        if results is None:
            for sample, rec in chunk:
                self.edit_one(ed, sample, rec)
            return
        # the warm-up cost is spread over the whole call, so a call that holds a warm-up sample is all warm-up
        warm = self.timed < self.opts.warmup
        for (sample, rec), result in zip(chunk, results):
            self.finish_result(ed, sample, rec, result, seconds / len(chunk), warmup=warm)
            self.write(rec)

    def edit_one(self, ed, sample, rec: SampleRecord) -> None:
        try:
            (result,), seconds = self.timed_edit(ed, [sample], [rec])
            self.finish_result(ed, sample, rec, result, seconds)
        except ResultsError:
            raise
        except Exception as exc:
            record_failure(rec, exc)
        self.write(rec)

    def finish_result(self, ed, sample, rec: SampleRecord, result, latency: float,
                      warmup: Optional[bool] = None) -> None:
        """Validate, score and save one edited image into ``rec`` (a bad image fails the sample)."""
        try:
            rec.latency_s = latency
            rec.warmup = self.timed < self.opts.warmup if warmup is None else warmup
            self.timed += 1
            result = as_edit_output(result, sample.id, ed.name)
            check_image(result.image, ed.name, sample.id)
            rec.extras = {k: v for k, v in result.extras.items() if isinstance(v, (int, float, str, bool))}
            rec.metrics = score_sample(self.metrics, sample, result.image)
            self.save_image(ed.name, sample.id, result.image, rec)
        except ResultsError:
            raise
        except Exception as exc:
            record_failure(rec, exc)

    def save_image(self, editor: str, sample_id: str, image: np.ndarray, rec: SampleRecord) -> None:
        """A write failure (disk full, read-only) stops the run: it is the output folder's fault, and
        recording every following sample as failed would only bury the cause."""
        path = self.folder.image_path(editor, sample_id, rec.seed_index)
        try:
            save_png(path, image)
        except OSError as exc:
            raise write_error(path, exc) from None
        rec.image = str(path.relative_to(self.folder.root))

    def write(self, rec: SampleRecord) -> None:
        self.writer.write(rec)
        self.progress.advance(rec.status)
        if rec.status == "failed" and self.opts.fail_fast:
            raise FailFast(f"{rec.editor} failed on sample {rec.sample_id}: {rec.error} (--fail-fast)")

    # -- the leaderboard -----------------------------------------------------------------------------
    def write_leaderboard(self, load_errors: Optional[dict] = None, partial: bool = False, stopped_by: str = "") -> dict:
        return write_leaderboard(self.folder, self.dataset, self.opts, self.all_metrics, load_errors, partial,
                                 stopped_by)


def run_bench(dataset: Dataset, opts: BenchOptions, metrics: list, out: Path,
              progress: Optional[ProgressSink] = None, samples: Optional[Sequence] = None,
              dist: Optional[Dist] = None) -> dict:
    """``Runner(...).run(samples)``: the leaderboard dict as written to ``out/leaderboard.json``."""
    return Runner(dataset, opts, metrics, out, progress, dist).run(samples)


def write_leaderboard(folder: RunFolder, dataset: Dataset, opts: BenchOptions, metrics: list,
                      load_errors: Optional[dict] = None, partial: bool = False, stopped_by: str = "") -> dict:
    """The leaderboard of everything ``folder`` holds; set metrics are recomputed over it from the images."""
    per_sample, over_sets = split_metrics(metrics)
    metric_info = {m.name: m.describe() for m in per_sample}
    metrics_backbone = metrics[0].backbone if metrics else ""
    editors = (folder.read_manifest() or {}).get("editors", {})
    board = build_leaderboard(folder, dataset.describe(), metric_info, {
        "set_metric_info": {m.name: m.describe() for m in over_sets},
        "set_scores": score_sets(folder, dataset, over_sets, editors, folder.records()) if over_sets else {},
        "command": opts.command, "device": device_info(opts.device), "world": opts.world,
        "metrics_backbone": metrics_backbone, "metrics_toy": any(m.is_toy for m in metrics),
        "load_errors": load_errors or {}, "selection": dataset.meta.get("selection", {}),
        "partial": partial, "stopped_by": stopped_by}).to_dict()
    try:
        atomic_write_json(folder.leaderboard_path, board)
    except OSError as exc:
        raise ResultsError(f"{folder.leaderboard_path}: could not write the leaderboard ({exc.strerror}); "
                           "per-sample records are safe in samples*.jsonl - free space and rerun to resume") from None
    return board


def any_failed(board: Union[Leaderboard, dict]) -> bool:
    return any(e.n_failed or e.n_failed_seeds or e.load_error for e in as_leaderboard(board).editors.values())
