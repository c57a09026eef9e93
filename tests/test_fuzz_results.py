"""Generated damage (hypothesis) to what the harness reads back: leaderboards given to ``compare`` and the
run folder a resume reads (samples*.jsonl cut short or corrupted, foreign lines, PNGs truncated or gone,
run.json damaged). Property: it runs, or stops with a one-line error naming the file and the fix and
leaves the folder as it was - never a traceback, never a file opened outside the folder, never a finished
record lost (an intact record stays done; a record whose PNG was damaged is redone, not dropped).

Budgets and seed: tests/fuzz_support.py."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

import cli as cli_module
from metrics.registry import build_metrics
from pie_bench.core.errors import ResultsError
from pie_bench.datasets.pie import load_dataset
from pie_bench.run.results import read_records
from pie_bench.run.run_folder import RunFolder
from pie_bench.run.runner import BenchOptions, run_bench
from tests import fault_editors
from tests.fuzz_support import assert_one_line, count, fuzz, opens_only_under
from tests.test_fuzz_inputs import json_values, texts

REPO = Path(__file__).resolve().parent.parent
BOARD = json.loads((REPO / "results" / "shapes-ci.json").read_text())
ODD = st.sampled_from(["abc", "inf", "-inf", "nan", "", [], {}, -1, 0, 10**30, 1e308, True, None, [1, 2], {"a": 1}])


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


ALL_PATHS = [p for p in _paths(BOARD) if p]


@st.composite
def damaged_boards(draw):
    board = json.loads(json.dumps(BOARD))
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(ALL_PATHS))
        parent = board
        try:
            for key in path[:-1]:
                parent = parent[key]
            if draw(st.booleans()) and isinstance(parent, dict):
                parent.pop(path[-1], None)
            else:
                parent[path[-1]] = draw(ODD | json_values)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit removed or retyped that branch
    return board


def _compare(a: Path, b: Path, *extra: str):
    res = CliRunner().invoke(cli_module.cli, ["compare", str(a), str(b), *extra])
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception  # a traceback: the property fails with the real error
    return res


@fuzz(200)
@given(board=damaged_boards(), cut=st.none() | st.integers(0, 4000), which=st.sampled_from(["a", "b"]))
def test_compare_damaged_leaderboards(board, cut, which):
    count("compare_leaderboards")
    with tempfile.TemporaryDirectory() as tmp:
        good, bad = Path(tmp) / "good.json", Path(tmp) / "bad.json"
        good.write_text(json.dumps(BOARD))
        text = json.dumps(board, allow_nan=True)
        bad.write_text(text if cut is None else text[:cut])
        res = _compare(*((bad, good) if which == "a" else (good, bad)), "--fail-on-regression")
        assert res.exit_code in (0, 1, 2), res.output
        if res.exit_code == 2:
            errors = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
            assert len(errors) == 1 and str(bad) in errors[0] and "; " in errors[0], res.output


# ---------------------------------------------------------------------------------------------
# a finished run folder, damaged


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """3 smoke samples: identity (all ok) and raise_on (one failed), with their PNGs."""
    mp = pytest.MonkeyPatch()
    fault_editors.register(mp)
    try:
        out = tmp_path_factory.mktemp("finished") / "run"
        ds = load_dataset("smoke", limit=3)
        run_bench(ds, BenchOptions(editors=["identity", "raise_on"],
                                   editor_args={"raise_on": {"fail_on": ds.samples[1].id}}),
                  build_metrics(["mse_unedit_part"]), out)
    finally:
        mp.undo()
    return out


record_like = st.builds(lambda base, key, value, drop: {**{k: v for k, v in base.items() if k != drop}, key: value},
                        st.just({}), st.sampled_from(["sample_id", "editor", "status", "edit_type", "metrics", "image",
                                                      "schema_version", "seed", "warmup", "config_hash"]) | texts,
                        ODD | json_values, st.none() | texts)
damage_ops = st.one_of(
    st.tuples(st.just("truncate"), st.integers(0, 10**6)),
    st.tuples(st.just("replace_line"), st.integers(0, 10), st.binary(max_size=60) | json_values.map(json.dumps)),
    st.tuples(st.just("retype_line"), st.integers(0, 10), record_like),
    st.tuples(st.just("insert_line"), st.integers(0, 10), record_like.map(json.dumps) | json_values.map(json.dumps)),
    st.tuples(st.just("append"), st.binary(max_size=40)),
    st.tuples(st.just("png"), st.integers(0, 5), st.sampled_from(["cut", "garbage", "delete", "empty"]),
              st.integers(0, 10**5)),
    st.tuples(st.just("manifest"), st.sampled_from(["cut", "json", "drop"]), json_values, st.integers(0, 3000)),
    st.tuples(st.just("stray_shard"), st.binary(max_size=80)))


def apply_damage(out: Path, op: tuple) -> tuple[set, set]:
    """Apply one damage; returns (indices of original record lines touched, PNG (editor, id) touched)."""
    shard = out / "samples.jsonl"
    lines = shard.read_bytes().split(b"\n")[:-1]
    kind, touched_lines, touched_pngs = op[0], set(), set()
    if kind == "truncate":
        data = shard.read_bytes()
        cut = op[1] % (len(data) + 1)
        shard.write_bytes(data[:cut])
        touched_lines = {i for i in range(len(lines)) if len(b"\n".join(lines[:i + 1])) + 1 > cut}
    elif kind in ("replace_line", "retype_line", "insert_line") and lines:
        i = op[1] % len(lines)
        if kind == "retype_line":
            try:
                new = json.dumps({**json.loads(lines[i]), **op[2]})
            except (ValueError, TypeError):  # an earlier damage left no record on that line
                new = json.dumps(op[2])
        else:
            new = op[2]
        new = new if isinstance(new, bytes) else new.encode("utf-8", "surrogatepass")
        new = new.replace(b"\n", b" ")
        if kind == "insert_line":
            lines.insert(i, new)
        else:
            lines[i] = new
            touched_lines = {i}
        shard.write_bytes(b"\n".join(lines) + b"\n")
    elif kind == "append":
        with open(shard, "ab") as fh:
            fh.write(op[1])
    elif kind == "png":
        pngs = sorted(out.glob("*/*.png"))
        if pngs:
            png = pngs[op[1] % len(pngs)]
            touched_pngs = {(png.parent.name, png.stem)}
            data = png.read_bytes()
            if op[2] == "cut":
                png.write_bytes(data[:op[3] % max(1, len(data))])
            elif op[2] == "garbage":
                png.write_bytes(b"GARBAGE" * 10)
            elif op[2] == "delete":
                png.unlink()
            else:
                png.write_bytes(b"")
    elif kind == "manifest":
        manifest = out / "run.json"
        if op[1] == "cut":
            manifest.write_bytes(manifest.read_bytes()[:op[3]])
        elif op[1] == "json":
            manifest.write_text(json.dumps(op[2]))
        else:
            try:
                data = json.loads(manifest.read_text())
                data.pop(sorted(data)[op[3] % len(data)], None)
            except (ValueError, TypeError, AttributeError, ZeroDivisionError):
                return touched_lines, touched_pngs  # an earlier damage left nothing to drop a key from
            manifest.write_text(json.dumps(data))
    elif kind == "stray_shard":
        (out / "samples.rank7.jsonl").write_bytes(op[1])
    return touched_lines, touched_pngs


def snapshot(out: Path) -> dict:
    return {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@fuzz(250)
@given(ops=st.lists(damage_ops, min_size=1, max_size=3))
def test_resume_reads_a_damaged_run_folder(finished, ops):
    count("resume_readers")
    original = read_records([finished / "samples.jsonl"])
    with tempfile.TemporaryDirectory() as tmp:
        out = shutil.copytree(finished, Path(tmp) / "run")
        touched_lines, touched_pngs = set(), set()
        for op in ops:
            lines, pngs = apply_damage(out, op)
            touched_lines |= lines
            touched_pngs |= pngs
        before = snapshot(out)
        folder = RunFolder(out)
        with opens_only_under(Path(tmp), out) as outside:
            try:
                folder.read_manifest()
                done = folder.done_keys()
                folder.records()
            except ResultsError as exc:
                assert_one_line(exc, str(out))
                assert snapshot(out) == before  # a refusal changes nothing
                return
        assert not outside, outside
        # every finished record whose line survived is still done, unless its PNG was damaged (then redone)
        for i, rec in enumerate(original):
            if i not in touched_lines and (rec.status != "ok" or (rec.editor, rec.sample_id) not in touched_pngs):
                assert rec.key in done, (i, rec.key)


@fuzz(60)
@given(ops=st.lists(damage_ops.filter(lambda op: op[0] != "stray_shard"), min_size=1, max_size=2))
def test_resume_runs_on_a_damaged_run_folder(finished, ops):
    """The whole resume, in-process: afterwards every sample of the command is recorded once, ok."""
    count("resume_runs")
    with tempfile.TemporaryDirectory() as tmp:
        out = shutil.copytree(finished, Path(tmp) / "run")
        for op in ops:
            apply_damage(out, op)
        before = snapshot(out)
        ds = load_dataset("smoke", limit=3)
        try:
            board = run_bench(ds, BenchOptions(editors=["identity"]), build_metrics(["mse_unedit_part"]), out)
        except ResultsError as exc:
            assert_one_line(exc, str(out))
            assert snapshot(out) == before
            return
        wanted = {s.id for s in ds.samples}
        latest = {r.sample_id: r for r in RunFolder(out).records() if r.editor == "identity" and r.sample_id in wanted
                  and r.dataset_sha256 == ds.annotations_sha256}
        assert set(latest) == wanted and all(r.status == "ok" for r in latest.values())
        assert board["editors"]["identity"]["n_ok"] >= 3  # plus any foreign records the damage planted
        assert all(RunFolder(out).image_intact("identity", s.id) for s in ds.samples)
