"""Safe file names: one rule for every file a run writes, injective on sample ids."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pie_bench.core.paths import safe_name
from pie_bench.run.run_folder import RunFolder


def test_plain_ids_keep_their_name_and_lookalikes_differ(tmp_path):
    folder = RunFolder(tmp_path)
    assert folder.image_path("ddim_p2p", "000000000000").name == "000000000000.png"
    a, b = folder.image_path("ddim_p2p", "a/b"), folder.image_path("ddim_p2p", "a_b")
    assert a != b and a.parent == b.parent == tmp_path / "ddim_p2p"
    for bad in ("..", "../../etc/passwd", "/abs", "", "."):
        p = folder.image_path("identity", bad)
        assert p.parent == tmp_path / "identity" and p.name not in (".png", "..png")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40), st.text(max_size=40))
def test_safe_name_is_injective_and_safe(x, y):
    sx = safe_name(x)
    assert sx and "/" not in sx and "\\" not in sx and sx not in (".", "..") and len(sx) <= 89
    if x != y:
        assert sx != safe_name(y)
