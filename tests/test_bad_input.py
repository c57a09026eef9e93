"""Bad input: every case is a one-line error naming the thing at fault and the fix, raised before
anything runs (annotations, options) or failing that one sample alone (images), never losing what
is finished."""
from __future__ import annotations

import copy
import errno
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import cli as cli_module
from metrics.registry import build_metrics
from pie_bench.datasets.pie import ImageWarning, load_dataset, load_hf
from pie_bench.core.errors import ConfigError, DataError, HarnessError, ResultsError
from pie_bench.core.masks import encode_mask
from pie_bench.run.lock import HOLDER_NAME, lock_is_free
from pie_bench.run.results import read_records
from pie_bench.run.run_folder import MANIFEST
from pie_bench.run.runner import BenchOptions, run_bench

METRICS = ["psnr_unedit_part", "mse_unedit_part"]


def _mask():
    m = np.zeros((512, 512), bool)
    m[200:300, 150:350] = True
    return encode_mask(m)


ENTRIES = {
    "000000000000": {"image_path": "0_random_140/000000000000.png", "original_prompt": "a [cat] on a sofa",
                     "editing_prompt": "a [dog] on a sofa", "editing_instruction": "make the cat a dog",
                     "editing_type_id": "0", "blended_word": "cat dog", "mask": _mask()},
    "111000000000": {"image_path": "1_change_object_80/111000000000.png", "original_prompt": "a red [apple]",
                     "editing_prompt": "a red [ball]", "editing_instruction": "", "editing_type_id": "1",
                     "blended_word": "apple ball", "mask": _mask()},
    "611000000000": {"image_path": "6_change_attribute_color_40/611000000000.jpg",
                     "original_prompt": "a [white] house", "editing_prompt": "a [blue] house",
                     "editing_instruction": "paint it blue", "editing_type_id": "6", "blended_word": "house house",
                     "mask": _mask()},
}


def make_folder(root: Path, entries: dict = ENTRIES, mapping_text: str | None = None, images: bool = True) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for sid, e in entries.items():
        if not images or ".." in str(e.get("image_path")):
            continue
        path = root / "annotation_images" / e["image_path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        if sid == "611000000000":  # grayscale, 400x300: resized per protocol with a warning
            Image.fromarray(rng.integers(0, 255, (300, 400), dtype=np.uint8), "L").save(path)
        else:
            Image.fromarray(rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)).save(path)
    (root / "mapping_file.json").write_text(mapping_text if mapping_text is not None else json.dumps(entries))
    return root


def assert_one_line(exc: BaseException, *needles: str) -> None:
    msg = str(exc)
    assert "\n" not in msg, msg
    for n in needles:
        assert n in msg, f"{n!r} not in {msg!r}"


def with_entry(**changes) -> dict:
    entries = copy.deepcopy(ENTRIES)
    entries["111000000000"].update(changes)
    return entries


# ---------------------------------------------------------------------------------------------
# annotations: refused before anything runs


@pytest.mark.parametrize("case,entries,text,needles", [
    ("truncated mapping_file.json", None, json.dumps(ENTRIES)[:200],
     ["mapping_file.json", "not valid JSON", "re-download or repair"]),
    ("top level not an object", None, json.dumps(list(ENTRIES.values())),
     ["mapping_file.json", "top level must be an object keyed by sample id"]),
    ("prompt of wrong type", with_entry(original_prompt=42), None,
     ["sample 111000000000", "'original_prompt' must be a string, got int", "fix the annotation"]),
    ("mask of wrong type", with_entry(mask="12 30"), None,
     ["sample 111000000000", "'mask' must be a list", "fix the annotation"]),
    ("mask values of wrong type", with_entry(mask=[10, "5"]), None,
     ["sample 111000000000", "mask values must be integers", "fix the annotation"]),
    ("mask past 512x512", with_entry(mask=[100, 5, 512 * 512 + 3, 10]), None,
     ["sample 111000000000", "outside the 512x512 frame", "re-export the mask"]),
    ("odd-length mask list", with_entry(mask=[100, 5, 300]), None,
     ["sample 111000000000", "odd number of values (3)", "re-export the annotation"]),
    ("empty prompt", with_entry(editing_prompt="  "), None,
     ["sample 111000000000", "'editing_prompt' is empty", "write the prompt into the annotation"]),
    ("missing prompt", with_entry(original_prompt=None), None,
     ["sample 111000000000", "'original_prompt' must be a string"]),
    ("unknown edit type id", with_entry(editing_type_id="12"), None,
     ["sample 111000000000", "editing_type_id '12'", "use the PIE-Bench edit type ids"]),
    ("image path escaping the folder", with_entry(image_path="../../etc/passwd"), None,
     ["sample 111000000000", "points outside the data folder", "fix the annotation"]),
])
def test_bad_annotations(tmp_path, case, entries, text, needles):
    make_folder(tmp_path, entries or ENTRIES, text, images=False)  # annotations are checked before any image
    with pytest.raises(DataError) as err:
        load_dataset(str(tmp_path))
    assert_one_line(err.value, *needles)
    assert str(tmp_path) in str(err.value)  # names the file


# ---------------------------------------------------------------------------------------------
# images: the sample fails alone, the run goes on; odd sizes/modes are converted with a warning


def test_missing_unreadable_and_grayscale_images(tmp_path):
    root = make_folder(tmp_path / "data")
    images = root / "annotation_images"
    (images / ENTRIES["000000000000"]["image_path"]).unlink()
    (images / ENTRIES["111000000000"]["image_path"]).write_bytes(b"not a png at all")
    ds = load_dataset(str(root))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        board = run_bench(ds, BenchOptions(editors=["identity"]), build_metrics(METRICS), tmp_path / "run")
    recs = {r.sample_id: r for r in read_records([tmp_path / "run" / "samples.jsonl"])}
    missing, garbage, gray = recs["000000000000"], recs["111000000000"], recs["611000000000"]
    assert missing.status == "failed" and "\n" not in missing.error
    assert "000000000000.png is missing" in missing.error and "put the PIE-Bench image there" in missing.error
    assert garbage.status == "failed" and "111000000000.png is not a readable image" in garbage.error
    assert "replace the file" in garbage.error
    assert gray.status == "ok" and gray.metrics["mse_unedit_part"] == 0.0
    texts = [str(w.message) for w in caught if issubclass(w.category, ImageWarning)]
    assert any("mode L converted to RGB" in t for t in texts)
    assert any("400x300; centre-cropped and resized to 512 per protocol" in t for t in texts)
    assert board["editors"]["identity"]["n_failed"] == 2 and board["editors"]["identity"]["n_ok"] == 1
    assert Image.open(tmp_path / "run" / "identity" / "611000000000.png").size == (512, 512)


# ---------------------------------------------------------------------------------------------
# options, through the CLI: exit code 2 and one "error:" line


def run_cli(*args):
    res = CliRunner().invoke(cli_module.cli, list(args), catch_exceptions=False)
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    return res, lines


@pytest.mark.parametrize("case,args,needles", [
    ("unknown editor", ["--editors", "identtiy"], ["unknown editor 'identtiy'", "did you mean 'identity'"]),
    ("unknown --editor-arg key", ["--editors", "identity", "--editor-arg", "identity.sed=3"],
     ["--editor-arg identity.sed: unknown key", "did you mean identity.seed?"]),
    ("--editor-arg of wrong type", ["--editors", "identity", "--editor-arg", "identity.seed=abc"],
     ["--editor-arg identity.seed", "expected an integer, got 'abc'"]),
    ("malformed --editor-arg", ["--editors", "identity", "--editor-arg", "seed=3"],
     ["--editor-arg 'seed=3'", "expected EDITOR.KEY=VALUE"]),
    ("--editor-arg for an editor not run", ["--editors", "identity", "--editor-arg", "ip2p.seed=3"],
     ["--editor-arg given for ip2p", "not in --editors"]),
    ("non-existent --data", ["--data", "/no/such/pie_bench_folder"],
     ["/no/such/pie_bench_folder: --data path does not exist", "pass smoke"]),
    ("unknown category", ["--categories", "recolour"], ["--categories: unknown edit type 'recolour'", "use ids or names"]),
    ("unknown sample id", ["--ids", "999"], ["--ids: 999 not in dataset smoke", "check the ids"]),
])
def test_bad_options_cli(tmp_path, case, args, needles):
    res, lines = run_cli("bench", "--data", "smoke", "--metrics", "mse_unedit_part", "--no-progress", "--no-report", "--limit", "2",
                         "--out", str(tmp_path / "run"), *args)
    assert res.exit_code == 2, res.output
    assert len(lines) == 1 and "Traceback" not in res.output, res.output
    for n in needles:
        assert n in lines[0], lines[0]
    assert not (tmp_path / "run" / "samples.jsonl").exists()


def _write_parquet(folder: Path, config: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = __import__("io").BytesIO()
    Image.fromarray(np.zeros((512, 512, 3), np.uint8)).save(buf, format="PNG")
    (folder / config).mkdir(parents=True)
    table = pa.table({"image": [{"bytes": buf.getvalue(), "path": None}], "id": ["000000000000"],
                      "source_prompt": ["a cat"], "target_prompt": ["a dog"], "blended_words": ["[]"],
                      "mask": [" ".join(map(str, _mask()))]})
    pq.write_table(table, folder / config / "V1-00000-of-00001.parquet")


def test_hf_config_that_does_not_exist(tmp_path, monkeypatch):
    _write_parquet(tmp_path / "pp", "0_random_140")
    with pytest.raises(DataError) as err:  # a local PIE_Bench_pp copy without the asked-for config
        load_hf(f"hf:{tmp_path / 'pp'}", categories=[0, 3])
    assert_one_line(err.value, "config '3_delete_object_80' does not exist", "it has 0_random_140",
                    "download that config or pick --categories it has")
    # a hub repo without the config: the error `datasets` itself raises, from a local repo with a card
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    (repo / "data" / "V1.csv").write_text("id,source_prompt\n1,a cat\n")
    (repo / "README.md").write_text("---\nconfigs:\n- config_name: 0_random_140\n  data_files:\n  - split: V1\n"
                                    "    path: data/*.csv\n---\n")
    import datasets

    real = datasets.load_dataset
    monkeypatch.setattr(datasets, "load_dataset", lambda name, *a, **k: real(str(repo), *a, **k)
                        if name == "someone/PIE_Bench_fork" else real(name, *a, **k))
    with pytest.raises(DataError) as err:
        load_hf("hf:someone/PIE_Bench_fork", categories=[1])
    assert_one_line(err.value, "hf:someone/PIE_Bench_fork", "config '1_change_object_80' does not exist",
                    "it has ['0_random_140']", "point hf: at a copy of UB-CVML-Group/PIE_Bench_pp")


# ---------------------------------------------------------------------------------------------
# the output folder: resume refusals, read-only, disk full - finished results stay intact


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 3-sample identity run, copied per test."""
    out = tmp_path_factory.mktemp("finished") / "run"
    run_bench(load_dataset("smoke", limit=3), BenchOptions(editors=["identity"]), build_metrics(METRICS), out)
    return out


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _resume(out: Path, **opts):
    return run_bench(load_dataset("smoke", limit=4), BenchOptions(editors=["identity"], **opts),
                     build_metrics(METRICS), out)


def _intact(out: Path, n: int = 3) -> None:
    assert len(read_records(sorted(out.glob("samples*.jsonl")))) == n


def test_incompatible_results_schema_on_resume(finished, tmp_path):
    out = _copy(finished, tmp_path / "run")
    manifest = json.loads((out / MANIFEST).read_text())
    (out / MANIFEST).write_text(json.dumps({**manifest, "schema_version": 0}))
    with pytest.raises(ResultsError) as err:
        _resume(out)
    assert_one_line(err.value, str(out / MANIFEST), "results schema version 0 is not 1", "use a new --out folder")
    (out / MANIFEST).write_text(json.dumps(manifest))
    lines = (out / "samples.jsonl").read_text().splitlines()
    rec = json.loads(lines[1])
    (out / "samples.jsonl").write_text("\n".join([lines[0], json.dumps({**rec, "schema_version": 9}), lines[2]]) + "\n")
    with pytest.raises(ResultsError) as err:
        _resume(out)
    assert_one_line(err.value, "samples.jsonl:2", "record schema version 9", "use a new --out folder")


def test_corrupt_record_line_mid_file(finished, tmp_path):
    out = _copy(finished, tmp_path / "run")
    lines = (out / "samples.jsonl").read_text().splitlines()
    (out / "samples.jsonl").write_text("\n".join([lines[0], lines[1][:40], lines[2]]) + "\n")
    with pytest.raises(ResultsError) as err:
        _resume(out)
    assert_one_line(err.value, "samples.jsonl:2", "corrupt record line", "delete that line to redo the sample")


def test_editor_config_changed_on_resume(finished, tmp_path):
    out = _copy(finished, tmp_path / "run")
    with pytest.raises(ResultsError) as err:
        _resume(out, editor_args={"identity": {"seed": "5"}})
    assert_one_line(err.value, "editor identity was run here with another config", "differs in seed",
                    "use another --out")
    _intact(out)


def test_read_only_output_folder(finished, tmp_path, monkeypatch):
    out = _copy(finished, tmp_path / "run")
    if os.geteuid() == 0:  # root writes through permission bits: simulate a read-only mount instead
        real_open = os.open

        def ro_open(path, flags, *a, **k):
            if str(path).startswith(str(out)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            return real_open(path, flags, *a, **k)

        monkeypatch.setattr(os, "open", ro_open)
    else:
        out.chmod(0o555)
    try:
        with pytest.raises(ResultsError) as err:
            _resume(out)
    finally:
        out.chmod(0o755)
    assert_one_line(err.value, str(out), "output folder is not writable", "choose a writable --out")
    monkeypatch.undo()
    _intact(out)


@pytest.mark.parametrize("target", ["png", "leaderboard"])
def test_disk_full_while_writing_images_or_leaderboard(finished, tmp_path, monkeypatch, target):
    import pie_bench.run.runner as runner

    out = _copy(finished, tmp_path / "run")
    enospc = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    if target == "png":
        monkeypatch.setattr(runner, "save_png", lambda *a, **k: (_ for _ in ()).throw(enospc))
        needles = ["identity/", ".png", "No space left on device", "free disk space and rerun"]
    else:
        monkeypatch.setattr(runner, "atomic_write_json", lambda *a, **k: (_ for _ in ()).throw(enospc))
        needles = ["leaderboard.json", "could not write the leaderboard", "free space and rerun to resume"]
    with pytest.raises(ResultsError) as err:
        _resume(out)
    assert_one_line(err.value, *needles)
    _intact(out, 3 if target == "png" else 4)  # the failed write recorded nothing; finished records stay
    assert lock_is_free(out) and not (out / HOLDER_NAME).exists()
    monkeypatch.undo()
    board = _resume(out)
    assert board["editors"]["identity"]["n_ok"] == 4


def test_every_harness_error_is_a_harness_error():
    assert all(issubclass(c, HarnessError) for c in (DataError, ConfigError, ResultsError))
