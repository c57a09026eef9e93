"""Reference-style implementations of the five PIE-Bench editors, for ``benchmarks/latency.py`` and
``tests/test_fast_vs_reference.py``.

Each one is written the straightforward way the original code runs the algorithm (fp32, explicit
attention probabilities in every layer, no SDPA, the redundant passes the original does), so that the
benchmark measures what the harness's fast paths buy and the tests check they change nothing. They are
written here, not copied: the algorithms follow the papers and the notes in
``../shared/reference/editors.md``. Token alignment (which tokens map where) is taken from
``editors.p2p.align``: it costs nothing at run time and is tested on its own; everything that runs per
step (attention control, map storage, LocalBlend, inversion, null-text optimisation, sampling) is
independent of the fast implementation.

All functions take the harness's ``Editor`` object (for its config and backbone) and return
``RefResult(latents, image, unet_evals)``.
"""
from benchmarks.reference.common import RefResult, count_unet_rows, explicit_attention, unets_of  # noqa: F401
