"""Direct Inversion (PnP Inversion) + Prompt-to-Prompt (``direct_inversion_p2p``; PIE-Bench method
``directinversion+p2p``).

Ju et al., "PnP Inversion: Boosting Diffusion-based Editing with 3 Lines of Code", ICLR 2024
(``cure-lab/PnPInversion``: ``models/p2p_editor.py: edit_image_directinversion``,
``models/p2p/inversion.py: DirectInversion``, ``models/p2p/p2p_guidance_forward.py:
direct_inversion_p2p_guidance_forward``, driven by ``run_editing_p2p.py``). DDIM inversion at guidance 1
(the same trajectory as ``ddim_p2p``, so the inversion cache is shared), then the P2P edit pass in which
the source branch's per-step error against the inversion is corrected, so the source branch retraces
the inversion exactly and the target branch edits with the source's true attention.

PIE-Bench settings (``run_editing_p2p.py``): CompVis/stable-diffusion-v1-4, 50 DDIM steps (timesteps
981, ..., 1), CFG 7.5 with the empty-prompt null embedding, ``cross_replace_steps`` 0.4,
``self_replace_steps`` 0.6, Refine, LocalBlend on the blended words (start 0.2, threshold 0.3), target
blended word x2, prompts with ``[ ]`` removed. Published (PnP Inversion paper, main table; also
``pie_bench/reference/pnp-inversion-paper.json``): Structure 11.65e-3, PSNR 27.22, LPIPS 54.55e-3,
MSE 32.86e-4, SSIM 84.76e-2, CLIP whole 25.02, edited 22.10.

Checked against the authors' code (adapted private copy on the toy backbone, ``tests/golden/README.md``):
final latents agree to 1.5e-4, uint8 images to 1 level on <0.05 % of values. Deviations, all numerically
invisible (``tests/test_direct_inversion.py`` also checks the fast path against the authors' two-pass
formulation written out in ``benchmarks/reference/direct_inversion.py``):

* The authors compute the offsets ``o_t = z*_{t-1} - step_cfg(z*_t, c_src)`` in a pass of their own
  (4 UNet rows per step: both prompts, though only the source's offset is used) and add ``o_t`` to the
  source branch's step during editing. The source branch is at ``z*_t`` whenever ``o_t`` is added, so the
  sum is ``z*_{t-1}``: here the source rows are set to ``z*_{t-1}``, the offset pass is dropped, and so is
  the source's unconditional UNet row (it only fed the overwritten step): 3 rows per step instead of 4.
* No reconstruction pass (the authors run a full extra edit pass with an AttentionStore to show the
  reconstruction; it does not touch the edit).
"""
from __future__ import annotations

from dataclasses import dataclass

from editors.p2p.editor import InversionP2PEditor, P2PEditConfig


@dataclass
class DirectInversionP2PConfig(P2PEditConfig):
    pass


class DirectInversionP2PEditor(InversionP2PEditor):
    name = "direct_inversion_p2p"
    Config = DirectInversionP2PConfig
    paper = "Direct Inversion / PnP Inversion (Ju et al., ICLR 2024) + Prompt-to-Prompt; PIE-Bench settings"
    direct_inversion = True

    def null_embeddings(self, *, trajectory, cond_src, uncond, sched, counter, extras):
        return uncond
