"""FlowEdit (``flowedit``): inversion-free editing with a pre-trained rectified-flow model.

Kulikov, Kleiner, Huberman-Spiegelglas, Michaeli, "FlowEdit: Inversion-Free Text-Based Editing Using
Pre-Trained Flow Models", 2024 (arXiv:2412.08629). An ODE is integrated directly between the source and
the target distributions: at each step t the source image is noised to z_src = (1 - t) x_src + t n
with fresh noise n, the same offset is applied to the edited latent (z_tar = z_edit + z_src - x_src),
and z_edit moves by the difference of the two guided velocities, v(z_tar | target) - v(z_src | source).
With identical conditionings that difference is zero and the source latent comes back unchanged.
Steps above ``n_max`` are skipped (the edit starts at t of step T - n_max); the last ``n_min`` steps
are plain sampling from the target conditioning; ``n_avg`` noise draws are averaged per step.

Defaults per backbone family, the authors' experiment files (``fallenshock/FlowEdit``: ``run_script.py``
with ``SD3_exp.yaml`` / ``FLUX_exp.yaml``); a field left None takes its family's value and every edit
records which set ran (``extras["settings"]``):

- SD3 (``sd3``, ``sd3.5``, ``shapes``, ``toy``): ``SD3_exp.yaml``, T 50, source CFG 3.5, target CFG 13.5,
  n_max 33, n_min 0, n_avg 1, negative prompt "" (classifier-free guidance: two passes per branch).
- FLUX (``flux-dev``, ``flux-schnell``, ``toy-flux``): ``FLUX_exp.yaml``, T 28, source guidance 1.5, target
  5.5, n_max 24, n_min 0, n_avg 1. As their ``FlowEditFLUX``: the guidance scales go into the distilled
  model's guidance embedding (none on schnell), no CFG and no negative prompt (one pass per branch), the
  schedule is FluxPipeline's (shifted by the image sequence length), the noise is drawn on packed latents.

The paper has no PIE-Bench numbers (its own 1024-px set).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from editors.base import EditOutput, EditorConfig
from editors.flow_backbone import FlowEditor
from pie_bench.core.errors import ConfigError
from pie_bench.core.sample import Sample

# the authors' experiment files, per backbone family
FAMILY_DEFAULTS = {
    "sd3": ("SD3_exp.yaml", dict(T_steps=50, n_avg=1, src_guidance_scale=3.5, tar_guidance_scale=13.5, n_min=0,
                                 n_max=33)),
    "flux": ("FLUX_exp.yaml", dict(T_steps=28, n_avg=1, src_guidance_scale=1.5, tar_guidance_scale=5.5, n_min=0,
                                   n_max=24)),
}


@dataclass
class FlowEditConfig(EditorConfig):
    """None: the backbone family's value (``FAMILY_DEFAULTS``)."""

    T_steps: Optional[int] = None
    n_avg: Optional[int] = None
    src_guidance_scale: Optional[float] = None
    tar_guidance_scale: Optional[float] = None
    n_min: Optional[int] = None
    n_max: Optional[int] = None
    negative_prompt: str = ""


class FlowEditEditor(FlowEditor):
    name = "flowedit"
    Config = FlowEditConfig
    requires = frozenset({"image", "source_prompt", "target_prompt"})
    paper = "Kulikov et al., FlowEdit: Inversion-Free Text-Based Editing Using Pre-Trained Flow Models, 2024"
    stochastic = True

    def load(self, backbone: str = "toy", device="cpu", dtype=torch.float32) -> None:
        super().load(backbone, device, dtype)
        # the config stays as given (its hash is fixed before loading); the family's values fill its Nones
        self.settings_name, family = FAMILY_DEFAULTS[self.backbone.family]
        given = {k: getattr(self.config, k) for k in family}
        self.settings = {k: v if given[k] is None else given[k] for k, v in family.items()}
        c = self.settings
        if not (0 <= c["n_min"] <= c["n_max"] <= c["T_steps"]) or c["n_avg"] < 1:
            raise ConfigError(f"flowedit: need 0 <= n_min <= n_max <= T_steps and n_avg >= 1, got n_min {c['n_min']}, "
                              f"n_max {c['n_max']}, T_steps {c['T_steps']}, n_avg {c['n_avg']}")
        if any(v is not None for v in given.values()):
            self.settings_name += " with overrides"

    def edit(self, sample: Sample, generator: torch.Generator) -> EditOutput:
        return self.edit_batch([sample], [generator])[0]

    @torch.no_grad()
    def edit_batch(self, samples: list, generators: list) -> list:
        """Several samples in one transformer batch per branch; each row draws its noise from its own
        generator in the order one sample alone would, so rows equal single edits up to float reassociation."""
        bb, c = self.backbone, self.settings
        T, n_avg, src_g, tar_g = c["T_steps"], c["n_avg"], c["src_guidance_scale"], c["tar_guidance_scale"]
        b = len(samples)
        src = bb.encode_prompt([s.source_prompt for s in samples])
        tar = bb.encode_prompt([s.target_prompt for s in samples])
        # FLUX: guidance-distilled, no negative branch (velocity ignores it); SD3: CFG, two passes
        flux = bb.family == "flux"
        neg = None if flux else bb.encode_prompt([self.config.negative_prompt] * b)
        passes = 1 if flux else 2

        def noise_like(x):
            return torch.cat([bb.randn_like(x[j:j + 1], g) for j, g in enumerate(generators)])

        x_src = torch.cat([bb.encode_image(s.image) for s in samples])
        timesteps, _ = bb.schedule(T)
        z_edit = x_src.clone().float()
        x_tar = None
        evals = 0
        for i, t in enumerate(timesteps):
            if T - i > c["n_max"]:
                continue
            t_i = float(t) / 1000
            t_next = float(timesteps[i + 1]) / 1000 if i + 1 < len(timesteps) else 0.0
            if T - i > c["n_min"]:
                v_delta = torch.zeros_like(z_edit)
                for _ in range(n_avg):
                    z_src = (1 - t_i) * x_src + t_i * noise_like(x_src)
                    z_tar = z_edit.to(x_src.dtype) + z_src - x_src
                    v_src = bb.velocity(z_src, t, src, neg, src_g)
                    v_tar = bb.velocity(z_tar, t, tar, neg, tar_g)
                    v_delta += (v_tar - v_src).float() / n_avg
                    evals += 2 * passes
                z_edit = z_edit + (t_next - t_i) * v_delta
            else:  # the last n_min steps: plain sampling from the target conditioning
                if x_tar is None:
                    x_tar = z_edit + ((1 - t_i) * x_src + t_i * noise_like(x_src)) - x_src
                x_tar = x_tar + (t_next - t_i) * bb.velocity(x_tar.to(x_src.dtype), t, tar, neg, tar_g).float()
                evals += passes
        out = z_edit if x_tar is None else x_tar
        # uint8 by rounding, as the authors' ``pipe.image_processor.postprocess``
        images = bb.decode(out, quantize="round")
        return [EditOutput(image=images[j], extras={"transformer_evals": evals, "settings": self.settings_name,
                                                    "final_latent": out[j:j + 1].cpu().numpy(),
                                                    **({"batch_size": b} if b > 1 else {})})
                for j in range(b)]
