#!/usr/bin/env python
"""PIE-Bench harness command line: ``python cli.py bench --editors all``."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import sys
import warnings
from pathlib import Path

import click
from rich.console import Console

from pie_bench.core.errors import ConfigError, HarnessError

console = Console(stderr=False)
if not console.is_terminal and "COLUMNS" not in os.environ:  # logs and CI: rich's 80-column default
    console = Console(stderr=False, width=120)
err_console = Console(stderr=True)
RUNS_DIR = Path("results") / "runs"


class HarnessClickError(click.ClickException):
    """A HarnessError as click reports it: one ``error:`` line on stderr, exit code 2; finished results
    are already on disk."""

    exit_code = 2

    def show(self, file=None) -> None:
        err_console.print(f"[bold red]error:[/bold red] {self.message}", highlight=False, soft_wrap=True)


class HarnessGroup(click.Group):
    def invoke(self, ctx):
        from pie_bench.run.stop import RunStopped  # signal handling only: imports no torch

        try:
            return super().invoke(ctx)
        except HarnessError as exc:
            raise HarnessClickError(" ".join(str(exc).split())) from None
        except RunStopped as exc:  # SIGTERM/SIGINT: what was done is recorded; exit as that signal would
            from pie_bench.run.distributed import is_main_process

            if is_main_process():
                err_console.print(str(exc), style="bold yellow", markup=False, highlight=False, soft_wrap=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:  # Ctrl-C before a run started (loading data, models): nothing to record
            err_console.print("interrupted before the run started; finished results are on disk", highlight=False)
            sys.exit(130)


@click.group(cls=HarnessGroup)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging (tracebacks of failed samples).")
def cli(verbose):
    """PIE-Bench harness for text-guided image editing."""
    from rich.logging import RichHandler

    # rich's handler on the stderr console: log lines and warnings print above a live progress bar
    # instead of through it (a no-op where the host already configured logging, e.g. pytest)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(name)s: %(message)s",
                        handlers=[RichHandler(console=err_console, show_time=False, show_path=False)])
    logging.captureWarnings(True)
    warnings.filterwarnings("ignore", message=".*deprecated.*")


def data_options(fn=None, *, default="smoke", help_extra=""):
    def wrap(fn):
        fn = click.option("--limit-mode", type=click.Choice(["spread", "first"]), default="spread", show_default=True,
                          help="spread: --limit N round-robin over the selected categories (each in dataset "
                               "order); first: the first N samples.")(fn)
        fn = click.option("--limit", type=click.IntRange(min=0), default=None,
                          help="Use N samples, spread over the edit categories (see --limit-mode).")(fn)
        fn = click.option("--ids", default=None, help="Comma-separated sample ids.")(fn)
        fn = click.option("--categories", default=None, help="Edit types: ids 0-9 or names, comma-separated.")(fn)
        fn = click.option("--data", default=default, show_default=default is not None,
                          help="smoke | shapes | PIE-Bench folder | hf:<repo or parquet folder>." + help_extra)(fn)
        return fn

    return wrap(fn) if fn is not None else wrap


def load_data(data, categories, ids, limit, limit_mode="spread"):
    from pie_bench.datasets.pie import load_dataset, parse_categories

    return load_dataset(data, categories=parse_categories(categories),
                        ids=[i.strip() for i in ids.split(",")] if ids else None, limit=limit, limit_mode=limit_mode)


def command_line() -> str:
    """The command as typed, recorded in the leaderboard's provenance."""
    return "python cli.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def data_stem(ds) -> str:
    """A dataset's name as part of a default run-folder name."""
    return ds.name.replace(":", "_").replace("/", "_")


def resolve_metrics(names: str, backbone: str, device: str, with_ground_truth: bool = False, seeds: int = 1):
    from metrics.registry import available_metrics, build_metrics, expand_metric_names

    # ShapesEdit carries exact target images: ground-truth metrics and set metrics against the targets
    wanted, defaults_only = expand_metric_names(names, with_ground_truth, seeds)
    if defaults_only:
        wanted, missing = available_metrics(wanted)
        for n, why in missing.items():
            err_console.print(f"[yellow]metric {n} unavailable, skipped: {why}[/yellow]")
    return build_metrics(wanted, backbone, device)


@cli.command()
@click.option("--editors", "editors_spec", default="all", show_default=True, help="'all' or comma-separated names.")
@data_options(default=None, help_extra=" Default: the embedded ShapesEdit run (see README).")
@click.option("--backbone", default="auto", show_default=True,
              help="toy | shapes | sd14 | sd15 | <hub id or local dir>; auto: shapes for --data shapes, else toy.")
@click.option("--metrics", "metric_names", default="protocol", show_default=True,
              help="'protocol' (the PIE-Bench seven + CLIP source; plus the ground-truth metrics when the data has "
                   "target images), 'none', or comma-separated names and groups: protocol,spectra adds PR/PSD, "
                   "inception FID/KID/IS, sets both, similarity CLIP-I/DINO-I/DINOv2 (name:key=value;... for options).")
@click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True,
              help="Run stochastic editors K times per sample (seeds recorded) and score their diversity.")
@click.option("--metrics-backbone", default="auto", show_default=True,
              help="toy | real (official weights) | shapes; auto: shapes for --data shapes, else toy.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--dtype", default="float32", show_default=True, type=click.Choice(["float32", "float16", "bfloat16"]))
@click.option("--editor-arg", "editor_arg", multiple=True, help="EDITOR.KEY=VALUE, e.g. nti_p2p.inner_steps=5.")
@click.option("--editor-config", type=click.Path(), default=None, help="JSON/YAML {editor: {key: value}}.")
@click.option("--run", "run_name", default=None, help="Run name under results/runs/ (default: data-backbone).")
@click.option("--out", type=click.Path(), default=None, help="Output folder (overrides --run).")
@click.option("--warmup", type=int, default=1, show_default=True, help="Samples per editor excluded from latency.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Samples per call for editors that batch (the P2P editors, ip2p, pix2pix_zero); latency is "
                   "per sample. Default: 1, or the embedded run's preset.")
@click.option("--fail-fast", is_flag=True, help="Stop at the first failed sample.")
@click.option("--retry-failed", is_flag=True, help="On resume, redo samples recorded as failed.")
@click.option("--no-progress", is_flag=True)
@click.option("--no-report", is_flag=True, help="Do not write the HTML report (<out>/report/index.html).")
@click.option("--wide", is_flag=True, help="Closing tables with every metric column (split to fit the terminal).")
@click.option("--processes", default="auto", show_default=True,
              help="Local data-parallel processes; auto: one per CPU core (at most 4) on a CPU device, else 1.")
def bench(editors_spec, data, categories, ids, limit, limit_mode, backbone, metric_names, metrics_backbone, device,
          dtype, editor_arg, editor_config, run_name, out, warmup, batch_size, fail_fast, retry_failed, no_progress,
          no_report, wide, seeds, processes):
    """Run editors on a dataset, score them, write results/runs/<run>/ and print the leaderboard."""
    from pie_bench.run.spawn import process_count, run_as_processes

    n_processes = process_count(processes, device)
    if n_processes > 1:  # this command again as the ranks of a local launch (pie_bench.run.spawn)
        sys.exit(run_as_processes(n_processes, sys.argv))
    from editors.base import is_toy_spec
    from editors.registry import resolve_editor_names
    from pie_bench.run import presets
    from pie_bench.run.distributed import is_main_process
    from pie_bench.run.runner import BenchOptions, any_failed, run_bench
    from pie_bench.core.options import parse_editor_args
    from pie_bench.report.progress import RichProgress
    from pie_bench.report.tables import print_leaderboard

    if not is_main_process():  # under accelerate/torchrun/--processes, rank 0 alone prints
        console.quiet = err_console.quiet = True
    embedded = data is None
    data = presets.EMBEDDED_DATA if embedded else data
    backbone = presets.default_backbone(data) if backbone == "auto" else backbone
    metrics_backbone = presets.default_backbone(data) if metrics_backbone == "auto" else metrics_backbone
    ds = load_data(data, categories, ids, limit, limit_mode)
    names, unavailable = resolve_editor_names(editors_spec, backbone)
    for n, why in unavailable.items():
        err_console.print(f"[yellow]editor {n} unavailable, skipped: {why}[/yellow]")
    eargs = parse_editor_args(editor_arg, editor_config)
    if embedded:
        eargs = presets.embedded_editor_args(names, eargs)
        console.print(f"[bold]{presets.EMBEDDED_NOTE}[/bold]")
    if batch_size is None:
        batch_size = presets.EMBEDDED_BATCH_SIZE if embedded else 1
    if out is None:
        suffix = ""
        if eargs:
            suffix = "-" + hashlib.sha256(json.dumps(eargs, sort_keys=True).encode()).hexdigest()[:8]
        out = RUNS_DIR / (run_name or f"{data_stem(ds)}-{Path(backbone).name}{suffix}")
    if is_toy_spec(backbone):
        console.print("[bold yellow]Toy editor models[/bold yellow] (tiny random weights): the numbers check the "
                      "pipeline end to end; they say nothing about editing quality.")
    metrics = resolve_metrics(metric_names, metrics_backbone, device, with_ground_truth=ds.has_targets, seeds=seeds)
    opts = BenchOptions(editors=names, editor_args=eargs, backbone=backbone, device=device, dtype=dtype,
                        warmup=warmup, batch_size=batch_size, fail_fast=fail_fast, retry_failed=retry_failed,
                        command=command_line(), seeds=seeds)
    console.print(f"data [bold]{ds.name}[/bold] ({len(ds)} samples) · editors {', '.join(names)} · out {out}")
    board = run_bench(ds, opts, metrics, Path(out), progress=None if no_progress else RichProgress(console))
    print_leaderboard(board, console, wide=wide)
    console.print(f"leaderboard: {Path(out) / 'leaderboard.json'}")
    if not no_report and is_main_process():  # one report, from the merged leaderboard
        from pie_bench.report.html import write_report

        try:
            console.print(f"report: {write_report(Path(out))}")
        except Exception as exc:  # the scored results are on disk; a report problem must not hide them
            err_console.print(f"[yellow]report not written: {' '.join(str(exc).split()) or type(exc).__name__}; "
                              f"retry with `python cli.py report {out}`[/yellow]")
    if any_failed(board):
        sys.exit(1)


@cli.command()
@click.option("--editor", "editor_names", multiple=True, help="Editor to sweep (repeatable: several share one plot).")
@click.option("--grid", "grid_specs", multiple=True,
              help="KEY=V1,V2 (every --editor) or EDITOR.KEY=V1,V2; repeatable: every combination runs.")
@click.option("--grid-file", type=click.Path(), default=None, help="YAML/JSON {editor: {key: [values]}}.")
@data_options(default=None, help_extra=" Default: ShapesEdit with the embedded preset.")
@click.option("--backbone", default="auto", show_default=True)
@click.option("--metrics", "metric_names", default="protocol", show_default=True)
@click.option("--metric", "quality", default=None, help="Quality axis (default: attribute accuracy, else CLIP-edited).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--dtype", default="float32", show_default=True, type=click.Choice(["float32", "float16", "bfloat16"]))
@click.option("--out", type=click.Path(), default=None, help="Output folder (default results/runs/sweep-<data>).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None)
@click.option("--no-progress", is_flag=True)
@click.option("--no-report", is_flag=True)
@click.option("--share-inversions/--no-share-inversions", default=True, show_default=True,
              help="Variants with the same inversion reuse it (faster; their latency then excludes it).")
def sweep(editor_names, grid_specs, grid_file, data, categories, ids, limit, limit_mode, backbone, metric_names,
          quality, device, dtype, out, batch_size, no_progress, no_report, share_inversions):
    """Run every combination of a grid of editor settings (resumable, one leaderboard) and print quality
    against seconds per image with the Pareto front."""
    from pie_bench.run import presets
    from pie_bench.run.runner import BenchOptions, run_bench
    from pie_bench.run.run_folder import RunFolder
    from pie_bench.run.sweep import bench_options_fields, expand, parse_grid
    from pie_bench.report.progress import RichProgress
    from pie_bench.report.sweep import print_sweep

    variants = expand(parse_grid(editor_names, grid_specs, grid_file))
    embedded = data is None
    data = presets.EMBEDDED_DATA if embedded else data
    backbone = presets.default_backbone(data) if backbone == "auto" else backbone
    for v in variants:
        if embedded:  # the preset's step counts under the grid's values
            v.args = {**presets.EMBEDDED_EDITOR_ARGS.get(v.editor, {}), **v.args}
        if not share_inversions and v.shares_inversions:  # each variant timed with its own inversion
            v.args["share_inversion"] = "false"
    ds = load_data(data, categories, ids, limit, limit_mode)
    metrics = resolve_metrics(metric_names, presets.default_backbone(data), device, with_ground_truth=ds.has_targets)
    if quality and quality not in {m.name for m in metrics}:  # before the run, not after it
        raise ConfigError(f"--metric {quality}: not scored in this sweep; pass one of --metrics")
    out = Path(out) if out else RUNS_DIR / f"sweep-{data_stem(ds)}"
    opts = BenchOptions(**bench_options_fields(variants), backbone=backbone, device=device, dtype=dtype,
                        batch_size=batch_size or (presets.EMBEDDED_BATCH_SIZE if embedded else 1),
                        command=command_line())
    console.print(f"sweep: {len(variants)} configuration(s) · data [bold]{ds.name}[/bold] ({len(ds)} samples) · out {out}")
    board = run_bench(ds, opts, metrics, out, progress=None if no_progress else RichProgress(console))
    reused: dict[str, int] = {}
    for r in RunFolder(out).records():
        reused[r.editor] = reused.get(r.editor, 0) + int((r.extras or {}).get("inversion_cached", 0))
    print_sweep(board, console, quality, reused)
    console.print(f"inversions shared between configurations (this and earlier launches): {sum(reused.values())}")
    console.print(f"leaderboard: {out / 'leaderboard.json'}")
    if not no_report:
        from pie_bench.report.html import write_report

        console.print(f"report: {write_report(out)}")


@cli.command()
@click.argument("leaderboard", type=click.Path())
@click.option("--no-categories", is_flag=True, help="Only the overall table.")
@click.option("--wide", is_flag=True, help="Every metric column (tables split to fit the terminal).")
@click.option("--reference", default=None, help="A published table (id or JSON file) to print the run beside.")
def show(leaderboard, no_categories, wide, reference):
    """Render a leaderboard JSON as tables (or beside a published table: --reference pnp-inversion-paper)."""
    from pie_bench.report.reference_view import show_board

    show_board(leaderboard, console, per_category=not no_categories, wide=wide, reference=reference)


@cli.command()
@click.argument("a", type=click.Path())
@click.argument("b", type=click.Path())
@click.option("--fail-on-regression", is_flag=True, help="Exit 1 if any change is a flagged regression.")
@click.option("--z", type=float, default=2.0, show_default=True, help="Flag |delta| > z x combined stderr.")
@click.option("--html", "html_out", type=click.Path(), default=None, help="Also write an HTML report to this folder.")
def compare(a, b, fail_on_regression, z, html_out):
    """Compare two leaderboards (A = baseline, B = new), or a run with a published table (B = paper:ID)."""
    if b.startswith("paper:"):  # pie_bench/report/reference_tables
        from pie_bench.report.reference_view import compare_with_paper
        return compare_with_paper(a, b[len("paper:"):], console, fail_on_regression)
    from pie_bench.report.compare import compare_leaderboards
    from pie_bench.run.leaderboard import load_leaderboard
    from pie_bench.report.tables import comparison_table

    la, lb = load_leaderboard(Path(a)), load_leaderboard(Path(b))
    result = compare_leaderboards(la, lb, z=z)
    console.print(comparison_table(result, Path(a).name, Path(b).name))
    for note in result["notes"]:
        console.print(f"[yellow]note:[/yellow] {note}")
    console.print(f"{result['n_flagged']} flagged change(s), {result['n_regressions']} regression(s)")
    if html_out:
        from pie_bench.report.html import write_compare_report

        console.print(f"report: {write_compare_report(Path(a), Path(b), Path(html_out), z=z)}")
    if fail_on_regression and result["n_regressions"]:
        sys.exit(1)


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.option("--out", type=click.Path(), default=None, help="Report folder (default: RUN_DIR/report).")
def report(run_dir, out):
    """Write a run's static HTML report: tables, plots and an image gallery (opens from file://)."""
    from pie_bench.report.html import write_report

    console.print(f"report: {write_report(Path(run_dir), Path(out) if out else None)}")


def print_registry(reg, title: str, describe) -> None:
    from pie_bench.report.registry_table import print_registry as table

    table(reg, title, describe, console)


@cli.command("list-editors")
def list_editors():
    """Editors with their requirements and availability."""
    from editors.registry import EDITORS

    print_registry(EDITORS, "editors", lambda cls: cls.describe())


@cli.command("list-metrics")
def list_metrics():
    """Metrics with their region, direction and availability."""
    from metrics.registry import METRICS

    print_registry(METRICS, "metrics", lambda cls: f"{cls.label or cls.name} · {cls.region} · "
                   f"{'higher' if cls.higher_is_better else 'lower'} is better"
                   f"{' · needs a ground-truth target' if cls.requires_target else ''}")


@cli.command("list-datasets")
def list_datasets():
    """Named datasets for --data (besides a PIE-Bench folder and hf:<repo>)."""
    from pie_bench.datasets.registry import DATASETS

    print_registry(DATASETS, "datasets", lambda fn: " ".join((fn.__doc__ or fn.__name__).split())[:120])


@cli.command()
@click.argument("edited_dir", type=click.Path())
@data_options
@click.option("--method", default=None, help="Method name recorded as the editor (default: folder name).")
@click.option("--metrics", "metric_names", default="protocol", show_default=True)
@click.option("--metrics-backbone", default="toy", show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--out", type=click.Path(), default=None)
@click.option("--wide", is_flag=True, help="Every metric column (tables split to fit the terminal).")
def score(edited_dir, data, categories, ids, limit, limit_mode, method, metric_names, metrics_backbone, device, out, wide):
    """Score edited images made elsewhere (PnPInversion layout: EDITED_DIR/annotation_images/<image_path>,
    or EDITED_DIR/<id>.png). Non-square outputs are cropped to their bottom-right 512x512, as the official
    evaluator does."""
    from pie_bench.run.score import score_folder
    from pie_bench.report.tables import print_leaderboard

    ds = load_data(data, categories, ids, limit, limit_mode)
    metrics = resolve_metrics(metric_names, metrics_backbone, device, with_ground_truth=ds.has_targets)
    name = method or Path(edited_dir).resolve().name
    out = Path(out) if out else RUNS_DIR / f"score-{name}-{ds.name.replace(':', '_')}"
    board = score_folder(ds, Path(edited_dir), name, metrics, out, device=device,
                         command=command_line())
    print_leaderboard(board, console, wide=wide)
    console.print(f"leaderboard: {out / 'leaderboard.json'}")


@cli.command("make-shapes")
@click.option("--n", "n", type=int, default=700, show_default=True, help="Samples (PIE-Bench's per-type proportions).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--size", type=int, default=64, show_default=True, help="Generation resolution (64 or 128).")
@click.option("--balanced", is_flag=True, help="The same count for every edit type (the embedded default's 10 each).")
@click.option("--out", type=click.Path(), required=True, help="Folder to write (PIE-Bench layout).")
def make_shapes(n, seed, size, balanced, out):
    """Generate ShapesEdit: PIE-format samples with exact ground-truth edits and masks."""
    from pie_bench.datasets.shapes import write_pie

    folder = write_pie(Path(out), n=n, seed=seed, size=size, balanced=balanced)
    console.print(f"ShapesEdit: {n} samples -> {folder} (use --data {folder})")


def main():
    """``python cli.py`` and the ``pie-bench`` console script: click names the program from how it was invoked
    (``cli.py`` or ``pie-bench``) in the usage line and in the shell-completion variable
    (``eval "$(_PIE_BENCH_COMPLETE=bash_source pie-bench)"``)."""
    cli()


if __name__ == "__main__":
    main()
