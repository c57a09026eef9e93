"""PIE mask codec and loaders: official folder (real annotations), smoke set, PIE_Bench_pp parquet."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from pie_bench.datasets.pie import load_dataset, load_hf, parse_categories
from pie_bench.core.errors import DataError
from pie_bench.core.masks import decode_mask, encode_mask, parse_mask_string
from pie_bench.core.sample import EDIT_TYPES, strip_brackets


def _border(mask):
    m = mask.copy()
    m[0, :] = m[-1, :] = m[:, 0] = m[:, -1] = True
    return m


def test_mask_roundtrip_random():
    rng = np.random.default_rng(0)
    for density in (0.01, 0.3, 0.9):
        mask = _border(rng.random((512, 512)) < density)
        assert np.array_equal(decode_mask(encode_mask(mask)), mask)


def test_mask_orientation_left_half_is_left():
    mask = np.zeros((512, 512), bool)
    mask[:, :256] = True
    decoded = decode_mask(encode_mask(mask))
    interior = decoded[1:-1, 1:-1]
    assert interior[:, :255].all() and not interior[:, 256:].any()
    # row-major: a single run of 10 pixels starting at flat index 5*512+100 lands on row 5, cols 100..109
    one = decode_mask([5 * 512 + 100, 10])
    assert one[5, 100:110].all() and not one[5, 110] and not one[100, 5]


def test_mask_border_forced_and_runs_clipped():
    m = decode_mask([])
    assert m[0].all() and m[-1].all() and m[:, 0].all() and m[:, -1].all() and not m[1:-1, 1:-1].any()
    full = decode_mask([0, 262144])
    assert full.all()
    clipped = decode_mask([262140, 100])  # runs past the end are clipped as the official decoder does
    assert clipped.reshape(-1)[262140:].all()


@pytest.mark.parametrize("bad,needle", [([0, 10, 5], "odd number"), ([300000, 5], "outside"), ([1.5, 2], "integers")])
def test_mask_bad_input_one_line(bad, needle):
    with pytest.raises(DataError) as err:
        decode_mask(bad, where="sample X")
    assert needle in str(err.value) and "sample X" in str(err.value) and "\n" not in str(err.value)


def test_parse_mask_string():
    assert parse_mask_string("0 513 1023 2") == [0, 513, 1023, 2]


def test_strip_brackets():
    assert strip_brackets("a slanted [rusty] mountain bicycle") == "a slanted rusty mountain bicycle"
    assert strip_brackets("[a watercolor painting] of  galaxies") == "a watercolor painting of galaxies"


def test_real_piebench_annotations(piebench_mini):
    """The checked facts of ../shared/piebench-mini/README.md, through our decoder and loader."""
    ds = load_dataset(str(piebench_mini))
    assert [s.id for s in ds.samples] == ["000000000000", "000000000001"]
    facts = {"000000000000": (143407, (23, 502), (81, 480)), "000000000001": (82730, (129, 381), (78, 435))}
    for s in ds.samples:
        total, rows, cols = facts[s.id]
        assert s.mask.sum() == total
        interior = s.mask[1:-1, 1:-1]
        r = np.flatnonzero(interior.any(1)) + 1
        c = np.flatnonzero(interior.any(0)) + 1
        assert (r.min(), r.max()) == rows and (c.min(), c.max()) == cols
        assert s.edit_type == 0 and "[" not in s.target_prompt and "[" in s.target_prompt_raw
    bike, cake = ds.samples
    assert bike.instruction == "Make the frame of the bike rusty"
    assert bike.blended_words == ("bicycle", "bicycle")
    # orientation against the real image: the cake mask covers the cake, which differs from the table above it
    img = cake.image
    assert img.shape == (512, 512, 3) and img.dtype == np.uint8
    with pytest.raises(DataError, match="000000000000.jpg is missing"):
        _ = bike.image


def test_real_mask_orientation_matches_image(piebench_mini):
    cake = load_dataset(str(piebench_mini), ids=["000000000001"]).samples[0]
    img = cake.image.astype(float)
    m = cake.mask.copy()
    m[0, :] = m[-1, :] = m[:, 0] = m[:, -1] = False
    # the transposed (column-major) reading puts the region elsewhere: its overlap with the true one is small
    overlap = (m & m.T).sum() / m.sum()
    assert overlap < 0.9
    # inside vs outside the mask the image statistics differ more for the row-major reading than the transposed one
    def contrast(mask):
        return np.abs(img[mask].mean(0) - img[~mask].mean(0)).sum()
    assert contrast(m) > contrast(m.T)


def test_smoke_set_properties(smoke):
    assert 8 <= len(smoke) <= 12
    assert len(smoke.categories) >= 6
    for s in smoke.samples:
        assert s.image.shape == (512, 512, 3)
        assert s.mask.shape == (512, 512) and s.mask.dtype == bool
        assert s.instruction and s.source_prompt and s.target_prompt
        assert s.source_prompt != s.target_prompt
        assert "[" in s.source_prompt_raw + s.target_prompt_raw
        interior = s.mask[1:-1, 1:-1].mean()
        assert 0.005 < interior <= 1.0
    style = [s for s in smoke.samples if s.edit_type == 9]
    assert style and all(s.mask.all() for s in style)


def test_categories_ids_limit(smoke):
    ds = load_dataset("smoke", categories=parse_categories("6,change background"))
    assert {s.edit_type for s in ds.samples} == {6, 8}
    ds = load_dataset("smoke", limit=3)
    assert len(ds) == 3
    first = smoke.samples[0].id
    assert [s.id for s in load_dataset("smoke", ids=[first]).samples] == [first]
    with pytest.raises(DataError, match="unknown edit type 'colour'"):
        parse_categories("colour")
    with pytest.raises(DataError, match="not in dataset"):
        load_dataset("smoke", ids=["nope"])


def _write_parquet(folder, config, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (folder / config).mkdir(parents=True)
    table = pa.table({
        "image": [{"bytes": r.pop("image_bytes"), "path": None} for r in rows],
        **{k: [r[k] for r in rows] for k in rows[0]},
    })
    pq.write_table(table, folder / config / "V1-00000-of-00001.parquet")


def test_hf_local_parquet(tmp_path):
    """PIE_Bench_pp layout: <config>/V1-*.parquet, masks as space-separated runs, no instruction column."""
    img = np.zeros((300, 400, 3), np.uint8)
    img[:, :200] = 255
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    mask = np.zeros((512, 512), bool)
    mask[100:200, 50:150] = True
    rows = [{"image_bytes": buf.getvalue(), "id": "611000000000", "source_prompt": "a red [car]",
             "target_prompt": "a [blue] car", "edit_action": "{}", "aspect_mapping": "{}",
             "blended_words": json.dumps(["car,car"]), "mask": " ".join(map(str, encode_mask(mask)))}]
    _write_parquet(tmp_path, "6_change_attribute_color_40", rows)
    with pytest.warns(UserWarning, match="400x300"):
        ds = load_dataset(f"hf:{tmp_path}")
        s = ds.samples[0]
        image = s.image
    assert s.edit_type == 6 and s.instruction is None and s.blended_words == ("car", "car")
    assert s.target_prompt == "a blue car"
    assert image.shape == (512, 512, 3)
    assert np.array_equal(s.mask[1:-1, 1:-1], mask[1:-1, 1:-1])
    # centre crop of a 400x300 image keeps columns 50..349, so white (cols < 200) fills the left half
    assert image[:, :250].mean() > 250 and image[:, 262:].mean() < 5
    assert load_hf(f"hf:{tmp_path}").annotations_sha256 == ds.annotations_sha256


def test_edit_types_table():
    assert len(EDIT_TYPES) == 10 and EDIT_TYPES[9][0] == "9_change_style_80"
