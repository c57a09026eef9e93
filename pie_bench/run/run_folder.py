"""One run's output folder: manifest, per-rank JSONL shards, edited PNGs, leaderboard.

Layout::

    results/runs/<run>/run.json                 manifest: schema, dataset, editor configs
    results/runs/<run>/samples.jsonl            records (samples.rank<k>.jsonl with several processes)
    results/runs/<run>/<editor>/<id>.png        lossless edited images, exactly 512x512
    results/runs/<run>/leaderboard.json
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

from pie_bench.core.errors import ResultsError
from pie_bench.core.paths import safe_name
from pie_bench.run.results import SCHEMA_VERSION, SampleRecord, atomic_write_json, latest_by_key, read_records, write_error

MANIFEST = "run.json"
LEADERBOARD = "leaderboard.json"


class RunFolder:
    def __init__(self, root: Path):
        self.root = Path(root)

    # -- paths -------------------------------------------------------------------------------------
    @property
    def lock_path(self) -> Path:
        from pie_bench.run.lock import LOCK_NAME

        return self.root / LOCK_NAME

    def shard_path(self, rank: int = 0, world: int = 1) -> Path:
        return self.root / ("samples.jsonl" if world == 1 and rank == 0 else f"samples.rank{rank}.jsonl")

    def shard_paths(self) -> list[Path]:
        return sorted(self.root.glob("samples*.jsonl"))

    def image_path(self, editor: str, sample_id: str) -> Path:
        # one naming rule for every file a run writes: distinct ids never share a PNG ("a/b" vs "a_b")
        return self.root / safe_name(editor) / f"{safe_name(sample_id)}.png"

    @property
    def leaderboard_path(self) -> Path:
        return self.root / LEADERBOARD

    # -- manifest ----------------------------------------------------------------------------------
    def read_manifest(self) -> Optional[dict]:
        path = self.root / MANIFEST
        if not path.exists():
            return None
        try:
            manifest = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ResultsError(f"{path}: corrupt run manifest ({exc}); use a new --out folder") from None
        if manifest.get("schema_version") != SCHEMA_VERSION:
            raise ResultsError(f"{path}: results schema version {manifest.get('schema_version')} is not "
                               f"{SCHEMA_VERSION}; this folder was written by another harness version - "
                               "use a new --out folder (finished results there are kept)")
        return manifest

    def create(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ResultsError(f"{self.root}: cannot create the output folder ({exc.strerror}); "
                               "choose a writable --out") from None

    def prepare(self, dataset: dict, editors: dict[str, dict], extra: dict) -> dict:
        """Create or validate the manifest. Editors already recorded must keep their config (images
        live at <editor>/<id>.png, so two configs cannot share a folder without overwriting)."""
        self.create()
        if not os.access(self.root, os.W_OK):
            raise ResultsError(f"{self.root}: output folder is not writable; choose a writable --out or fix permissions")
        manifest = self.read_manifest() or {"schema_version": SCHEMA_VERSION, "dataset": dataset, "editors": {}}
        if manifest["dataset"].get("annotations_sha256") != dataset.get("annotations_sha256"):
            raise ResultsError(f"{self.root}: holds results for dataset {manifest['dataset'].get('name')} "
                               f"({manifest['dataset'].get('annotations_sha256', '')[:12]}), not "
                               f"{dataset.get('name')} ({dataset.get('annotations_sha256', '')[:12]}); use another --out")
        for name, info in editors.items():
            old = manifest["editors"].get(name)
            if old and old["config_hash"] != info["config_hash"]:
                changed = sorted(k for k in set(old["config"]) | set(info["config"])
                                 if old["config"].get(k) != info["config"].get(k))
                raise ResultsError(f"{self.root}: editor {name} was run here with another config "
                                   f"(differs in {', '.join(changed) or 'backbone'}); use another --out or --run name")
            manifest["editors"][name] = info
        # dataset selection may grow (resume with a larger --limit); keep the union of what ran
        manifest["dataset"] = {**manifest["dataset"], **{k: v for k, v in dataset.items() if k != "n"}}
        manifest.update(extra)
        try:
            atomic_write_json(self.root / MANIFEST, manifest)
        except OSError as exc:
            raise write_error(self.root / MANIFEST, exc) from None
        self.remove_temp_files()
        return manifest

    def remove_temp_files(self) -> int:
        """Temp files of atomic writes (``.<name>.<random>.tmp``) left by a killed run: never renamed into
        place, so nothing refers to them. Called holding the lock, when no writer can be mid-write."""
        n = 0
        for tmp in [*self.root.glob(".*.tmp"), *self.root.glob("*/.*.tmp")]:
            try:
                tmp.unlink()
                n += 1
            except OSError:
                pass
        return n

    # -- records -----------------------------------------------------------------------------------
    def records(self) -> list[SampleRecord]:
        return list(latest_by_key(read_records(self.shard_paths())).values())

    def done_keys(self, retry_failed: bool = False) -> set[str]:
        done = set()
        for key, rec in latest_by_key(read_records(self.shard_paths())).items():
            if rec.status == "ok" or rec.status == "skipped" or (rec.status == "failed" and not retry_failed):
                done.add(key)
        return done
