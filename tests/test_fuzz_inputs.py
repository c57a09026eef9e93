"""Generated bad input (hypothesis) for everything a user or a data file hands the harness: mapping_file.json
entries, PIE_Bench_pp rows, --editor-arg and --metrics strings. Property: it loads (and each sample's image
reads or fails that sample alone), or it stops with a one-line error naming the file or sample and the fix -
never a traceback, and never a file opened outside the data root.

Loaders and parsers are called in-process (no editors run), so a thousand cases take seconds. The seed and
budgets are in tests/fuzz_support.py; the count of cases run is printed at the end of the test run."""
from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import assume, given
from hypothesis import strategies as st
from PIL import Image

import cli as cli_module
from pie_bench.core.errors import ConfigError, DataError, shown
from pie_bench.core.masks import encode_mask
from pie_bench.core.options import parse_editor_args
from pie_bench.datasets.pie import _hf_rows_to_samples, load_dataset
from pie_bench.run.runner import instantiate_editors
from tests.fuzz_support import assert_one_line, count, fuzz, opens_only_under

# -- values -----------------------------------------------------------------------------------------
CONTROL = "".join(map(chr, range(32))) + "\x7f\x85\u2028\u2029\u200b\ufeff"
texts = st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from(CONTROL), max_size=40)
scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True, allow_infinity=True)
           | texts)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(texts, inner, max_size=4), max_leaves=12)
path_like = st.sampled_from(["../outside/secret.png", "../../etc/passwd", "/etc/passwd", "a/../../outside/secret.png",
                             "ok/../../outside/secret.png", "C:\\Windows\\x.png", "~/x.png", ".", "..", "", "a\x00b.png",
                             "link/secret.png", "x" * 300 + ".png", "a/" * 60 + "b.png", "ok/img.png", "ok/img.jpg",
                             "ok/missing.png", "ok/garbage.png", "ok/", "%2e%2e/outside/secret.png", "ok/ünï çødé.png"])
ids = st.sampled_from(["000000000000", "../../x", "a/b", "a\\b", "", " ", "\x00", "..", "CON", "é" * 90]) | texts
mask_values = st.one_of(
    st.lists(st.integers(0, 512 * 512 + 5), max_size=8),
    st.lists(st.integers(-2**40, 2**40), max_size=5),
    st.lists(json_values, max_size=4),
    st.lists(st.lists(st.integers(0, 100), max_size=2), max_size=3),
    st.just([0, 512 * 512]), st.just([5, 2**63]), st.just([True, 3]), st.just([1.0, 2.0]), json_values)


def _mask():
    m = np.zeros((512, 512), bool)
    m[100:200, 100:300] = True
    return encode_mask(m)


BASE = {"image_path": "ok/img.png", "original_prompt": "a [cat] on a sofa", "editing_prompt": "a [dog] on a sofa",
        "editing_instruction": "make it a dog", "editing_type_id": "0", "blended_word": "cat dog", "mask": _mask()}
FIELDS = list(BASE) + ["target_image_path", "attributes", "edit"]


@st.composite
def entries(draw):
    """A mapping entry: the valid one with fields dropped, retyped, added, or replaced by odd text."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)  # not even an object
    entry = dict(BASE)
    for _ in range(draw(st.integers(0, 4))):
        key = draw(st.sampled_from(FIELDS) | texts)
        kind = draw(st.sampled_from(["drop", "json", "text", "path", "mask", "type"]))
        if kind == "drop":
            entry.pop(key, None)
        elif kind == "json":
            entry[key] = draw(json_values)
        elif kind == "text":
            entry[draw(st.sampled_from(["original_prompt", "editing_prompt", "blended_word",
                                        "editing_instruction"]))] = draw(texts)
        elif kind == "path":
            entry[draw(st.sampled_from(["image_path", "target_image_path"]))] = draw(path_like)
        elif kind == "mask":
            entry["mask"] = draw(mask_values)
        else:
            entry["editing_type_id"] = draw(st.sampled_from(["12", "-1", "05", "²", "٣", " 3 ", "3.0", "1e1"])
                                            | json_values)
    return entry


def _png(size=(64, 48), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 128).save(buf, format="PNG")
    return buf.getvalue()


def make_sandbox(tmp: Path) -> Path:
    """<tmp>/data is the data root; <tmp>/outside holds a file no annotation may reach, also through a
    symlink planted inside the root."""
    root = tmp / "data"
    (root / "annotation_images" / "ok").mkdir(parents=True)
    (tmp / "outside").mkdir()
    (tmp / "outside" / "secret.png").write_bytes(_png())
    images = root / "annotation_images"
    (images / "ok" / "img.png").write_bytes(_png((512, 512)))
    (images / "ok" / "img.jpg").write_bytes(_png((300, 200), "L"))
    (images / "ok" / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (images / "ok" / "ünï çødé.png").write_bytes(_png((512, 512), "RGBA"))
    (images / "link").symlink_to(tmp / "outside", target_is_directory=True)
    return root


def check_sample(s) -> None:
    """Reading a sample: its fields, or a one-line DataError naming it."""
    assert isinstance(s.id, str) and s.mask.shape == (512, 512) and s.mask.dtype == bool
    assert isinstance(s.source_prompt, str) and isinstance(s.target_prompt, str)
    for read in (lambda: s.image, lambda: s.target_image if s.has_target_image else None):
        try:
            img = read()
        except DataError as exc:
            assert_one_line(exc, f"sample {shown(s.id)}")
            continue
        assert img is None or (img.shape == (512, 512, 3) and img.dtype == np.uint8)


@fuzz(300)
@given(mapping=st.dictionaries(ids, entries(), min_size=1, max_size=4), as_text=st.sampled_from(["json", "raw"]))
def test_mapping_file_entries(mapping, as_text):
    count("mapping_file")
    with tempfile.TemporaryDirectory() as tmp:
        root = make_sandbox(Path(tmp))
        text = json.dumps(mapping, ensure_ascii=as_text == "json")
        (root / "mapping_file.json").write_text(text, encoding="utf-8", errors="surrogatepass")
        with opens_only_under(Path(tmp), root) as outside:
            try:
                ds = load_dataset(str(root))
            except DataError as exc:
                assert_one_line(exc, str(root))
                ds = None
            for s in ds.samples if ds else []:
                check_sample(s)
        assert not outside, f"opened outside the data root: {outside}"


@fuzz(100)
@given(raw=st.binary(max_size=200) | st.sampled_from([b"", b"{", b"[" * 5000 + b"]" * 5000, b"{\"a\": " * 3000,
                                                      b"\xff\xfe{}", b"null", b"NaN", b"{\"x\": NaN}"]))
def test_mapping_file_bytes(raw):
    count("mapping_file_bytes")
    with tempfile.TemporaryDirectory() as tmp:
        root = make_sandbox(Path(tmp))
        (root / "mapping_file.json").write_bytes(raw)
        try:
            ds = load_dataset(str(root))
        except DataError as exc:
            assert_one_line(exc, str(root / "mapping_file.json"))
        else:
            for s in ds.samples:
                check_sample(s)


images = st.one_of(st.none(), json_values, st.sampled_from([
    {"bytes": _png((512, 512)), "path": None}, {"bytes": b"not an image", "path": None}, {"bytes": None},
    {"bytes": _png((512, 512))[:60]}, {"path": "/etc/passwd"}, {"bytes": _png((40, 900), "P")},
    Image.new("RGB", (512, 512)), Image.new("I;16", (512, 512)), b"\x89PNG"]))


mask_strings = st.lists(st.integers(-5, 2**20) | st.sampled_from(["x", "1.5", "١٢"]), max_size=6).map(
    lambda v: " ".join(map(str, v)))


@st.composite
def hf_rows(draw):
    row = {"id": draw(ids | json_values), "source_prompt": "a [cat]", "target_prompt": "a [dog]",
           "blended_words": '["cat,dog"]', "mask": " ".join(map(str, _mask())), "image": {"bytes": _png((512, 512))}}
    for _ in range(draw(st.integers(0, 4))):
        key = draw(st.sampled_from(list(row) + ["edit_action", "aspect_mapping"]))
        row[key] = draw(st.one_of(json_values, texts, images if key == "image" else json_values, mask_strings))
    return row


@fuzz(200)
@given(rows=st.lists(hf_rows(), min_size=1, max_size=3),
       config=st.sampled_from(["0_random_140", "6_change_attribute_color_40", "9_change_style_80"]))
def test_pie_bench_pp_rows(rows, config):
    count("pie_bench_pp_rows")
    try:
        samples = _hf_rows_to_samples(rows, config, "hf:UB-CVML-Group/PIE_Bench_pp")
    except DataError as exc:
        assert_one_line(exc, f"hf:UB-CVML-Group/PIE_Bench_pp/{config}")
        return
    for s in samples:
        check_sample(s)


CHEAP_EDITORS = ["identity", "blank", "ddim_p2p", "nti_p2p", "ip2p", "pix2pix_zero"]
keys = st.sampled_from(["seed", "num_ddim_steps", "inner_steps", "guidance_scale", "cross_replace_steps",
                        "self_replace_steps", "blend_words", "equalizer", "num_inference_steps", "nope", ""]) | texts
values = st.sampled_from(["5", "-1", "0", "1e400", "nan", "inf", "true", "none", "[1,2]", "[", "[[[[", "{}",
                          "0.5,0.6", "\x00", "٣", "1_000", "  7 ", "[" * 3000 + "]" * 3000]) | texts


@fuzz(200)
@given(pairs=st.lists(st.one_of(
    st.builds(lambda e, k, v: f"{e}.{k}={v}", st.sampled_from(CHEAP_EDITORS) | texts, keys, values),
    texts), max_size=4), names=st.lists(st.sampled_from(CHEAP_EDITORS), min_size=1, max_size=3, unique=True))
def test_editor_arg_strings(pairs, names):
    count("editor_arg")
    try:
        editors = instantiate_editors(names, parse_editor_args(pairs))
    except ConfigError as exc:
        assert_one_line(exc, "--editor-arg")
        return
    assert [e.name for e in editors] == names
    for e in editors:
        json.dumps(e.config_dict(), default=str)  # provenance must serialise whatever was parsed
        assert len(e.config_hash()) == 12


PIXEL_METRICS = ["psnr_unedit_part", "mse_unedit_part", "ssim_unedit_part", "gt_psnr"]
metric_opts = st.lists(st.builds(lambda k, v: f"{k}={v}", keys | st.sampled_from(["data_range", "kernel_size"]),
                                 values) | texts, max_size=3).map(";".join)


@fuzz(150)
@given(specs=st.lists(st.builds(lambda n, o, colon: n + (":" + o if colon else ""),
                                st.sampled_from(PIXEL_METRICS) | texts, metric_opts, st.booleans()),
                      min_size=1, max_size=3))
def test_metrics_strings(specs):
    count("metrics")
    text = ",".join(specs)
    assume(text.strip() not in ("protocol", "none"))
    try:
        metrics = cli_module.resolve_metrics(text, "toy", "cpu")
    except ConfigError as exc:
        assert_one_line(exc, "--metrics", "metric")
        return
    assert all(isinstance(m.name, str) for m in metrics)
