"""What ``python cli.py bench --editors all`` runs when no ``--data`` is given: the embedded default.

ShapesEdit (generated scenes with exact ground-truth edits) on the ShapesEdit models trained in this
repo, scored with the PIE-Bench protocol metrics plus the ground-truth ones. The sampling/inversion
editors run 10 steps instead of PIE-Bench's 50 (null-text inversion 3 inner steps instead of 10) so
that every editor runs on 100 samples in about ten minutes on 2 CPU cores; every other setting is PIE-Bench's.
Pass ``--data`` (and ``--backbone``) to run at the full PIE-Bench settings.
"""
from __future__ import annotations

EMBEDDED_DATA = "shapes"
EMBEDDED_BACKBONE = "shapes"
EMBEDDED_EDITOR_ARGS: dict[str, dict[str, str]] = {
    "ddim_p2p": {"num_ddim_steps": "10"},
    "nti_p2p": {"num_ddim_steps": "10", "inner_steps": "3"},
    "npi_p2p": {"num_ddim_steps": "10"},
    "direct_inversion_p2p": {"num_ddim_steps": "10"},
    # MasaCtrl starts at step 4 of 50 (an absolute index in the authors' code): 1 of 10 keeps the fraction
    "masactrl": {"num_ddim_steps": "10", "start_step": "1"},
    "direct_inversion_masactrl": {"num_ddim_steps": "10", "start_step": "1"},
    "pnp": {"num_ddim_steps": "10"},
    "direct_inversion_pnp": {"num_ddim_steps": "10"},
    "ledits_pp": {"num_inversion_steps": "10"},
    "ip2p": {"num_inference_steps": "10"},
    "pix2pix_zero": {"num_inference_steps": "10"},
    # iCD keeps its 4 + 4 steps; the ShapesEdit adapters were distilled for w in (0, 2.5, 4.5, 6.5), and the
    # target row runs the largest, as iCD's w = 19 is the largest of its (0, 7, 11, 15, 19); 6.5 in the
    # editor's convention is the CFG 7.5 every other ShapesEdit editor uses
    "icd": {"guidance_scale": "6.5"},
    # the flow editors on the ShapesEdit flow model (SD3 layout, so SD3's settings): 10 steps as the others;
    # FlowEdit skips the same fraction of them (n_max 33 of 50 -> 7 of 10); RF-Inversion's start/stop are
    # fractions already; RF-Solver-Edit runs FireFlow's 8 steps (its paper: 15), so the two solvers meet at equal
    # steps (at 10 it added 17 s to the run, over the 15 s an editor may add), its value sharing keeping its
    # share of them (2 of 15 -> 1 of 8); FireFlow's 8 steps are fewer already
    "flowedit": {"T_steps": "10", "n_max": "7"},
    "rf_inversion": {"num_inversion_steps": "10"},
    "rf_solver_edit": {"num_steps": "8", "inject": "1"},
}
# editors that batch (the P2P editors, ip2p, pix2pix_zero) edit this many samples per call: on a CPU a tiny
# UNet at batch 10 costs far less than ten calls at batch 1; outputs equal unbatched ones up to float
# reassociation
EMBEDDED_BATCH_SIZE = 10
EMBEDDED_NOTE = ("embedded default: ShapesEdit on the ShapesEdit models trained in this repo, 10 sampling "
                 "steps (PIE-Bench: 50) and null-text inner steps 3 (PIE-Bench: 10), one process per CPU core "
                 "(--limit 20 for a quick look); pass --data/--backbone for the PIE-Bench settings")


def default_backbone(data: str) -> str:
    """``--backbone auto`` and ``--metrics-backbone auto``: ShapesEdit data runs on the ShapesEdit models,
    anything else on the toy backbone (no weights can be assumed; real runs name ``sd14``/``sd15``/a
    folder, and ``--metrics-backbone real``)."""
    return "shapes" if data == "shapes" else "toy"


def embedded_editor_args(editors: list[str], given: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """The preset's step counts for the editors being run, under anything the user passed."""
    out = {name: dict(EMBEDDED_EDITOR_ARGS[name]) for name in editors if name in EMBEDDED_EDITOR_ARGS}
    for name, kv in given.items():
        out.setdefault(name, {}).update(kv)
    return out
