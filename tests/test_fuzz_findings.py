"""Each crash the property-based tests (test_fuzz_inputs.py, test_fuzz_results.py; seed 21) found, kept as a
plain regression test with the generated input that showed it. Before the fix each raised a bare Python
exception (a traceback at the CLI) or printed an error over two lines; now each is one line naming the
file or sample and the fix."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import cli as cli_module
from pie_bench.core.errors import ConfigError, DataError, ResultsError
from pie_bench.core.options import parse_editor_args
from pie_bench.datasets.pie import _hf_rows_to_samples, load_dataset
from pie_bench.run.results import read_records
from pie_bench.run.run_folder import RunFolder
from pie_bench.run.runner import instantiate_editors
from tests.fuzz_support import assert_one_line
from tests.test_bad_input import ENTRIES, _mask, make_folder, with_entry

REPO = Path(__file__).resolve().parent.parent


def _load(tmp_path, entries=None, text=None, images=True):
    root = make_folder(tmp_path / "data", entries or ENTRIES, text, images=images)
    return root, load_dataset(str(root))


def test_unicode_digit_edit_type(tmp_path):  # was ValueError: invalid literal for int(): '²'
    with pytest.raises(DataError) as err:
        _load(tmp_path, with_entry(editing_type_id="²"))
    assert_one_line(err.value, "sample 111000000000", "editing_type_id '²'")


def test_image_path_with_a_nul_byte(tmp_path):  # was ValueError: embedded null byte
    with pytest.raises(DataError) as err:
        _load(tmp_path, with_entry(image_path="a\x00b.png"), images=False)
    assert_one_line(err.value, "sample 111000000000", "image_path")


def test_image_path_too_long_for_the_filesystem(tmp_path):  # was OSError: [Errno 36] File name too long
    _, ds = _load(tmp_path, with_entry(image_path="x" * 300 + ".png"), images=False)
    with pytest.raises(DataError) as err:
        next(s for s in ds.samples if s.id == "111000000000").image
    assert_one_line(err.value, "sample 111000000000", "cannot be looked up")


def test_sample_id_with_a_newline(tmp_path):  # was a two-line error: the id printed raw
    entries = {"\n": {**ENTRIES["111000000000"], "mask": [0]}}
    with pytest.raises(DataError) as err:
        _load(tmp_path, entries)
    assert_one_line(err.value, "sample '\\n'", "odd number of values")


def test_mapping_file_nested_too_deeply(tmp_path):  # was RecursionError from the JSON parser
    with pytest.raises(DataError) as err:
        _load(tmp_path, text="[" * 100_000 + "]" * 100_000)
    assert_one_line(err.value, "mapping_file.json", "nested too deeply")


@pytest.mark.parametrize("blended", [5, '5', '{"a": 1}', ["cat", 3]])  # were TypeError / KeyError
def test_pie_bench_pp_blended_words_of_another_shape(blended):
    row = {"id": "0", "source_prompt": "a cat", "target_prompt": "a dog", "blended_words": blended,
           "mask": " ".join(map(str, _mask()))}
    with pytest.raises(DataError) as err:
        _hf_rows_to_samples([row], "0_random_140", "hf:x")
    assert_one_line(err.value, "hf:x/0_random_140: sample 0", "blended_words")


@pytest.mark.parametrize("image", [{"bytes": "not bytes"}, {"bytes": b"not an image"}])  # TypeError / no fix named
def test_pie_bench_pp_image_bytes_that_are_no_image(image):
    row = {"id": "0", "source_prompt": "a cat", "target_prompt": "a dog", "mask": " ".join(map(str, _mask())),
           "image": image}
    (sample,) = _hf_rows_to_samples([row], "0_random_140", "hf:x")
    with pytest.raises(DataError) as err:
        sample.image
    assert_one_line(err.value, "hf:x/0_random_140: sample 0")


def test_editor_arg_key_with_a_newline():  # was a two-line error
    with pytest.raises(ConfigError) as err:
        instantiate_editors(["identity"], parse_editor_args(["identity.\n=5"]))
    assert_one_line(err.value, "--editor-arg identity.'\\n'", "unknown key")


def test_metrics_option_without_key_value():  # the error did not name --metrics
    with pytest.raises(ConfigError) as err:
        cli_module.resolve_metrics("psnr_unedit_part:0", "toy", "cpu")
    assert_one_line(err.value, "--metrics 'psnr_unedit_part:0'", "not key=value")


def _finished_lines(tmp_path) -> Path:
    from metrics.registry import build_metrics
    from pie_bench.run.runner import BenchOptions, run_bench

    out = tmp_path / "run"
    run_bench(load_dataset("smoke", limit=2), BenchOptions(editors=["identity"]), build_metrics(["mse_unedit_part"]), out)
    return out


@pytest.mark.parametrize("line,needle", [
    ("[1]", "a JSON list"),  # was AttributeError: 'list' object has no attribute 'get'
    ("{\"schema_version\": 1}", "field 'sample_id' is missing"),  # was TypeError: missing arguments
    (None, "field 'sample_id' is list"),  # wrong type: was a TypeError later, in the aggregation
])
def test_record_lines_that_are_no_records(tmp_path, line, needle):
    out = _finished_lines(tmp_path)
    lines = (out / "samples.jsonl").read_text().splitlines()
    lines[0] = line or json.dumps({**json.loads(lines[0]), "sample_id": [1]})
    (out / "samples.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ResultsError) as err:
        read_records([out / "samples.jsonl"])
    assert_one_line(err.value, "samples.jsonl:1", needle, "delete that line")


@pytest.mark.parametrize("manifest", ["[]", "{\"schema_version\": 1}",
                                      '{"schema_version": 1, "dataset": {}, "editors": {"identity": 3}}'])
def test_run_manifest_of_another_shape(tmp_path, manifest):  # were AttributeError / KeyError
    out = _finished_lines(tmp_path)
    (out / "run.json").write_text(manifest)
    with pytest.raises(ResultsError) as err:
        RunFolder(out).read_manifest()
    assert_one_line(err.value, "run.json", "corrupt run manifest", "rebuilt from the command")


@pytest.mark.parametrize("path,value", [(("editors", "identity", "metrics", "gt_psnr", "mean"), "abc"),
                                        (("editors", "identity", "n_failed"), "3")])
def test_compare_a_leaderboard_with_fields_of_another_type(tmp_path, path, value):
    # were ValueError: could not convert string to float / TypeError: '>' not supported
    good = json.loads((REPO / "results" / "shapes-ci.json").read_text())
    bad = json.loads(json.dumps(good))
    node = bad
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    (tmp_path / "a.json").write_text(json.dumps(good))
    (tmp_path / "b.json").write_text(json.dumps(bad))
    res = CliRunner().invoke(cli_module.cli, ["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    assert res.exit_code == 2 and res.exception is None or isinstance(res.exception, SystemExit), res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "b.json: malformed leaderboard" in errors[0] and path[-1] in errors[0]
