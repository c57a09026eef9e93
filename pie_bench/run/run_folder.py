"""One run's output folder: manifest, per-rank JSONL shards, edited PNGs, leaderboard.

Layout::

    results/runs/<run>/run.json                 manifest: schema, dataset, editor configs
    results/runs/<run>/samples.jsonl            records (samples.rank<k>.jsonl with several processes)
    results/runs/<run>/<editor>/<id>.png        lossless edited images, exactly 512x512
    results/runs/<run>/leaderboard.json
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Optional

from pie_bench.core.errors import ResultsError, shown
from pie_bench.core.paths import safe_name
from pie_bench.run.results import SCHEMA_VERSION, SampleRecord, atomic_write_json, latest_by_key, read_records, write_error

MANIFEST = "run.json"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the empty IEND chunk every complete PNG ends with
LEADERBOARD = "leaderboard.json"
log = logging.getLogger("pie_bench")


def manifest_problem(manifest: dict) -> str:
    """What the manifest lacks that resuming and the leaderboard read ("" when nothing)."""
    dataset, editors = manifest.get("dataset"), manifest.get("editors")
    if not isinstance(dataset, dict) or not isinstance(dataset.get("annotations_sha256", ""), str):
        return "no dataset identity"
    if not isinstance(editors, dict):
        return "no editors table"
    for name, info in editors.items():
        if not isinstance(info, dict) or not isinstance(info.get("config_hash"), str) \
                or not isinstance(info.get("config", {}), dict):
            return f"editor {shown(name)[:40]} has no config hash"
    return ""


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

    def image_path(self, editor: str, sample_id: str, seed_index: int = 0) -> Path:
        # one naming rule for every file a run writes: distinct ids never share a PNG ("a/b" vs "a_b");
        # further seeds (bench --seeds) in <editor>/seed<k>/, a folder no "<id>.png" can be
        folder = self.root / safe_name(editor)
        return (folder / f"seed{seed_index}" if seed_index else folder) / f"{safe_name(sample_id)}.png"

    @property
    def leaderboard_path(self) -> Path:
        return self.root / LEADERBOARD

    # -- manifest ----------------------------------------------------------------------------------
    def read_manifest(self) -> Optional[dict]:
        path = self.root / MANIFEST
        if not path.exists():
            return None
        rebuild = "delete it and rerun: it is rebuilt from the command, and the records in samples*.jsonl are kept"
        try:
            manifest = json.loads(path.read_bytes())
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise ResultsError(f"{path}: corrupt run manifest ({' '.join(str(exc).split())[:120]}); {rebuild}") from None
        except OSError as exc:
            raise ResultsError(f"{path}: cannot read the run manifest ({exc.strerror}); fix its permissions") from None
        if not isinstance(manifest, dict):
            raise ResultsError(f"{path}: corrupt run manifest (a JSON {type(manifest).__name__}); {rebuild}")
        if manifest.get("schema_version") != SCHEMA_VERSION:
            raise ResultsError(f"{path}: results schema version {shown(manifest.get('schema_version'))[:40]} is not "
                               f"{SCHEMA_VERSION}; this folder was written by another harness version - "
                               "use a new --out folder (finished results there are kept)")
        problem = manifest_problem(manifest)
        if problem:
            raise ResultsError(f"{path}: corrupt run manifest ({problem}); {rebuild}")
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
                was = old.get("config", {})
                changed = sorted(k for k in set(was) | set(info["config"]) if was.get(k) != info["config"].get(k))
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
        for tmp in [*self.root.glob(".*.tmp"), *self.root.glob("*/.*.tmp"), *self.root.glob("*/seed*/.*.tmp")]:
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
        """Keys not to redo. An ok sample whose PNG went missing or was cut short since is redone: its new
        record supersedes the old one (a later ok record wins), so nothing is lost or counted twice."""
        done, damaged = set(), []
        for key, rec in latest_by_key(read_records(self.shard_paths())).items():
            if rec.status == "ok" and rec.image is not None and not self.image_intact(rec.editor, rec.sample_id,
                                                                                      rec.seed_index):
                damaged.append(self.image_path(rec.editor, rec.sample_id, rec.seed_index))
            elif rec.status == "ok" or rec.status == "skipped" or (rec.status == "failed" and not retry_failed):
                done.add(key)
        if damaged:
            log.warning(f"{self.root}: {len(damaged)} edited image(s) missing or truncated (e.g. {damaged[0]}); "
                        "those samples are redone")
        return done

    def image_intact(self, editor: str, sample_id: str, seed_index: int = 0) -> bool:
        """The PNG where the naming rule puts it (never a path read from a record) starts with PNG's signature
        and ends with its IEND chunk: a cheap check, 20 bytes read, that catches a file cut short."""
        try:
            with open(self.image_path(editor, sample_id, seed_index), "rb") as fh:
                head = fh.read(8)
                fh.seek(0, os.SEEK_END)
                if fh.tell() < len(PNG_SIGNATURE) + len(PNG_END):
                    return False
                fh.seek(-len(PNG_END), os.SEEK_END)
                return head == PNG_SIGNATURE and fh.read() == PNG_END
        except OSError:
            return False
