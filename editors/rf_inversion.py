"""RF-Inversion (``rf_inversion``): controlled forward and reverse rectified-flow ODEs.

Rout, Chen, Ruiz, Caramanis, Shakkottai, Chu, "Semantic Image Inversion and Editing using Rectified
Stochastic Differential Equations", ICLR 2025 (arXiv:2410.10792). Algorithm 1 inverts the image with the
model's unconditional field steered towards a fixed noise sample y_1 (controller ``gamma``):
u = u(Y_t) + gamma ((y_1 - Y_t) / (1 - t) - u(Y_t)). Algorithm 2 samples back under the target prompt,
steered towards the source latent y_0 (controller ``eta``) for the steps in [``start_timestep``,
``stop_timestep``) (fractions of the steps). ``eta`` 0 is plain sampling from the inverted latent.

Reference: diffusers' community pipeline ``examples/community/pipeline_flux_rf_inversion.py`` (read,
not copied); this editor follows its discretisation: the forward loop feeds timestep i / N and steps by
the scheduler's (shifted) sigma differences, the reverse loop steers with (y_0 - x) / sigma. Defaults
from its example: 28 steps, gamma 0.5, eta 0.9, start 0, stop 7/28, inversion prompt "" unguided.

Deviation: the pipeline is FLUX (guidance-distilled, guidance 3.5); FLUX backbones are not in the harness
yet, so this editor runs on the SD3-layout backbones (``sd3``, ``shapes``, ``toy``) with classifier-free
guidance ``guidance_scale`` (SD3's pipeline default 7.0) for the target prompt, negative prompt "". The
parity test against the community pipeline needs the FLUX toy backbone and is not written yet.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from editors.base import EditOutput, Editor, EditorConfig
from editors.flow_backbone import FLOW_BACKBONES, flow_backbone_unavailable, load_flow_backbone
from pie_bench.core.errors import ConfigError
from pie_bench.core.sample import Sample


@dataclass
class RFInversionConfig(EditorConfig):
    num_inversion_steps: int = 28
    gamma: float = 0.5
    eta: float = 0.9
    start_timestep: float = 0.0
    stop_timestep: float = 7 / 28
    source_prompt: str = ""
    guidance_scale: float = 7.0
    negative_prompt: str = ""


class RFInversionEditor(Editor):
    name = "rf_inversion"
    Config = RFInversionConfig
    requires = frozenset({"image", "target_prompt"})
    paper = "Rout et al., Semantic Image Inversion and Editing using Rectified Stochastic Differential Equations, ICLR 2025"
    stochastic = True  # y_1 is drawn from the sample's generator
    backbones = FLOW_BACKBONES

    @classmethod
    def backbone_unavailable(cls, backbone: str) -> Optional[str]:
        return flow_backbone_unavailable(cls.name, backbone)

    def load(self, backbone: str = "toy", device="cpu", dtype=torch.float32) -> None:
        super().load(backbone, device, dtype)
        c = self.config
        if c.num_inversion_steps < 1 or not (0 <= c.start_timestep <= c.stop_timestep <= 1):
            raise ConfigError("rf_inversion: need num_inversion_steps >= 1 and 0 <= start_timestep <= stop_timestep <= 1")
        self.backbone = load_flow_backbone(self.backbone_id, device, dtype)

    @torch.no_grad()
    def invert(self, y0: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Algorithm 1: the controlled forward ODE from the image latent to (near) y_1."""
        bb, c = self.backbone, self.config
        _, sigmas = bb.schedule(c.num_inversion_steps)
        cond = bb.encode_prompt([c.source_prompt])
        y1 = torch.randn(y0.shape, generator=generator).to(y0)
        y, n = y0, len(sigmas)
        for i in range(n - 1):
            t_i = i / n
            u = bb.velocity(y, 1000 * t_i, cond)
            u = u + c.gamma * ((y1 - y) / (1 - t_i) - u)
            y = y + u * (sigmas[i] - sigmas[i + 1])
        return y

    @torch.no_grad()
    def edit(self, sample: Sample, generator: torch.Generator) -> EditOutput:
        bb, c = self.backbone, self.config
        y0 = bb.encode_image(sample.image)
        x = self.invert(y0, generator)
        timesteps, sigmas = bb.schedule(c.num_inversion_steps)
        n = len(timesteps)
        start, stop = int(c.start_timestep * n), min(int(c.stop_timestep * n), n)
        tar, neg = bb.encode_prompt([sample.target_prompt]), bb.encode_prompt([c.negative_prompt])
        for i, t in enumerate(timesteps):
            v = -bb.velocity(x, t, tar, neg, c.guidance_scale)
            if start <= i < stop:
                v = v + c.eta * ((y0 - x) / sigmas[i] - v)
            x = x + v * (sigmas[i] - sigmas[i + 1])
        return EditOutput(image=bb.decode(x)[0], extras={"final_latent": x.cpu().numpy(),
                                                          "transformer_evals": (n - 1) + 2 * n})
