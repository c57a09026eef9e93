"""RF-Inversion (``rf_inversion``): controlled forward and reverse rectified-flow ODEs.

Rout, Chen, Ruiz, Caramanis, Shakkottai, Chu, "Semantic Image Inversion and Editing using Rectified
Stochastic Differential Equations", ICLR 2025 (arXiv:2410.10792). Algorithm 1 inverts the image with the
model's field steered towards a fixed noise sample y_1 (controller ``gamma``):
u = u(Y_t) + gamma ((y_1 - Y_t) / (1 - t) - u(Y_t)). Algorithm 2 samples back under the target prompt,
steered towards the source latent y_0 (controller ``eta``) for the steps in [``start_timestep``,
``stop_timestep``) (fractions of the steps). ``eta`` 0 is plain sampling from the inverted latent.

Reference: diffusers' community pipeline ``examples/community/pipeline_flux_rf_inversion.py`` (read,
not copied), whose discretisation this follows: y_0 is a VAE posterior sample, y_1 is drawn on packed
latents after it (both from the sample's generator, in the pipeline's order), the forward loop feeds
timestep i / N and steps by FluxPipeline's shifted sigma differences, the reverse loop steers with
(y_0 - x) / sigma. Defaults from its example and signatures: 28 steps, gamma 0.5, eta 0.9, start 0,
stop 7/28, inversion prompt "" with guidance 0, target guidance 3.5. Parity: on ``toy-flux`` our output
equals the community pipeline's (tests/golden/rf_inversion-*.npz, tests/test_golden_official.py).

Backbones: the FLUX family (``flux-dev``, ``flux-schnell``, ``toy-flux``), as the reference, with the
guidance scales in the distilled model's guidance embedding and no CFG; and the SD3 layout (``sd3``,
``shapes``, ``toy``). Deviation kept on SD3 (the reference is FLUX-only): an SD3 model has no guidance
embedding, so the inversion is unguided (conditional on the empty prompt) and the target prompt uses
classifier-free guidance ``guidance_scale`` (SD3's pipeline default 7.0) with negative prompt "". A field
left None takes its family's value; every edit records which set ran (``extras["settings"]``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from editors.base import EditOutput, EditorConfig
from editors.flow_backbone import FlowEditor
from pie_bench.core.errors import ConfigError
from pie_bench.core.sample import Sample

# guidance_scale per family: the community pipeline's default (FLUX, in the guidance embedding);
# StableDiffusion3Pipeline's default (SD3, classifier-free)
FAMILY_GUIDANCE = {"flux": ("community pipeline (FLUX)", 3.5), "sd3": ("SD3 port (CFG)", 7.0)}


@dataclass
class RFInversionConfig(EditorConfig):
    num_inversion_steps: int = 28
    gamma: float = 0.5
    eta: float = 0.9
    start_timestep: float = 0.0
    stop_timestep: float = 7 / 28
    source_prompt: str = ""
    source_guidance_scale: float = 0.0  # FLUX: the inversion's guidance embedding (the pipeline's ``invert``)
    guidance_scale: Optional[float] = None  # None: 3.5 on FLUX, 7.0 (CFG) on SD3
    negative_prompt: str = ""  # SD3 only


class RFInversionEditor(FlowEditor):
    name = "rf_inversion"
    Config = RFInversionConfig
    requires = frozenset({"image", "target_prompt"})
    paper = "Rout et al., Semantic Image Inversion and Editing using Rectified Stochastic Differential Equations, ICLR 2025"
    stochastic = True  # y_0's posterior sample and y_1 are drawn from the sample's generator

    def check_config(self) -> None:
        c = self.config
        if c.num_inversion_steps < 1 or not (0 <= c.start_timestep <= c.stop_timestep <= 1):
            raise ConfigError("rf_inversion: need num_inversion_steps >= 1 and 0 <= start_timestep <= stop_timestep <= 1")

    def load(self, backbone: str = "toy", device="cpu", dtype=torch.float32) -> None:
        super().load(backbone, device, dtype)
        c = self.config
        name, guidance = FAMILY_GUIDANCE[self.backbone.family]
        self.guidance_scale = guidance if c.guidance_scale is None else c.guidance_scale
        self.settings_name = name if c.guidance_scale is None else f"{name} with guidance_scale {c.guidance_scale}"

    @torch.no_grad()
    def invert(self, y0: torch.Tensor, generator) -> torch.Tensor:
        """Algorithm 1: the controlled forward ODE from the image latent to (near) y_1, drawn here from
        ``generator`` (or one generator per row of ``y0``)."""
        bb, c = self.backbone, self.config
        _, sigmas = bb.schedule(c.num_inversion_steps)
        gens = generator if isinstance(generator, (list, tuple)) else [generator]
        cond = bb.encode_prompt([c.source_prompt] * len(gens))
        y1 = torch.cat([bb.randn_like(y0[j:j + 1], g) for j, g in enumerate(gens)])
        y, n = y0, len(sigmas)
        for i in range(n - 1):
            t_i = i / n
            u = bb.velocity(y, 1000 * t_i, cond, guidance=c.source_guidance_scale)
            u = u + c.gamma * ((y1 - y) / (1 - t_i) - u)
            y = y + u * (sigmas[i] - sigmas[i + 1])
        return y

    def encode(self, sample: Sample, generator: torch.Generator) -> torch.Tensor:
        """y_0: a posterior sample of the VAE, as the community pipeline's ``encode_image`` takes it."""
        return self.backbone.encode_image(sample.image, sample=True, generator=generator)

    def edit(self, sample: Sample, generator: torch.Generator) -> EditOutput:
        return self.edit_batch([sample], [generator])[0]

    @torch.no_grad()
    def edit_batch(self, samples: list, generators: list) -> list:
        """Several samples in one transformer batch; each row draws y_0 and y_1 from its own generator in
        the order one sample alone would, so rows equal single edits up to float reassociation."""
        bb, c = self.backbone, self.config
        b = len(samples)
        y0 = torch.cat([self.encode(s, g) for s, g in zip(samples, generators)])
        x = self.invert(y0, generators)
        timesteps, sigmas = bb.schedule(c.num_inversion_steps)
        n = len(timesteps)
        start, stop = int(c.start_timestep * n), min(int(c.stop_timestep * n), n)
        tar = bb.encode_prompt([s.target_prompt for s in samples])
        flux = bb.family == "flux"
        neg = None if flux else bb.encode_prompt([c.negative_prompt] * b)
        for i, t in enumerate(timesteps):
            v = -bb.velocity(x, t, tar, neg, self.guidance_scale)
            if start <= i < stop:
                v = v + c.eta * ((y0 - x) / sigmas[i] - v)
            x = x + v * (sigmas[i] - sigmas[i + 1])
        passes = 1 if flux or self.guidance_scale == 1.0 else 2
        # uint8 by rounding, as the pipeline's postprocess (``numpy_to_pil``)
        images = bb.decode(x, quantize="round")
        return [EditOutput(image=images[j], extras={"final_latent": x[j:j + 1].cpu().numpy(),
                                                    "settings": self.settings_name,
                                                    "transformer_evals": n + passes * n,
                                                    **({"batch_size": b} if b > 1 else {})})
                for j in range(b)]
