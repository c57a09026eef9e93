"""DDIM inversion + Prompt-to-Prompt (``ddim_p2p``; PIE-Bench method ``ddim+p2p``).

Hertz et al., "Prompt-to-Prompt Image Editing with Cross Attention Control", ICLR 2023, on a real
image inverted with DDIM (Song et al., ICLR 2021). PIE-Bench (Ju et al., "PnP Inversion", ICLR 2024)
settings: CompVis/stable-diffusion-v1-4, DDIM inversion at guidance 1 over 50 steps, edit with CFG 7.5
and the empty-prompt null embedding, cross-replace 0.4, self-replace 0.6, Refine, LocalBlend on the
blended words (start 0.2, threshold 0.3), target blended word x2.

The reference runs this through a 0-iteration null-text loop (100 wasted UNet evaluations whose result
is the empty-prompt embedding) and a reconstruction pass; both are dropped here, the output is the same.
"""
from __future__ import annotations

from dataclasses import dataclass

from editors.p2p.editor import InversionP2PEditor, P2PEditConfig


@dataclass
class DDIMP2PConfig(P2PEditConfig):
    pass


class DDIMP2PEditor(InversionP2PEditor):
    name = "ddim_p2p"
    Config = DDIMP2PConfig
    paper = "DDIM inversion + Prompt-to-Prompt (Hertz et al., ICLR 2023); PIE-Bench settings"

    def null_embeddings(self, *, trajectory, cond_src, uncond, sched, counter, extras):
        return uncond
