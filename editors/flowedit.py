"""FlowEdit (``flowedit``): inversion-free editing with a pre-trained rectified-flow model.

Kulikov, Kleiner, Huberman-Spiegelglas, Michaeli, "FlowEdit: Inversion-Free Text-Based Editing Using
Pre-Trained Flow Models", 2024 (arXiv:2412.08629). An ODE is integrated directly between the source and
the target distributions: at each step t the source image is noised to z_src = (1 - t) x_src + t n
with fresh noise n, the same offset is applied to the edited latent (z_tar = z_edit + z_src - x_src),
and z_edit moves by the difference of the two guided velocities, v(z_tar | target) - v(z_src | source).
With identical conditionings that difference is zero and the source latent comes back unchanged.
Steps above ``n_max`` are skipped (the edit starts at t of step T - n_max); the last ``n_min`` steps
are plain sampling from the target conditioning; ``n_avg`` noise draws are averaged per step.

Defaults: the authors' ``SD3_exp.yaml`` (SD3: T 50, source CFG 3.5, target CFG 13.5, n_max 33, n_min 0,
n_avg 1, negative prompt ""). The paper has no PIE-Bench numbers (its own 1024-px set). Backbones:
``sd3`` / ``sd3.5``, ``shapes`` (the ShapesEdit flow model), ``toy``; FLUX (T 28, 1.5 / 5.5, n_max 24,
``FLUX_exp.yaml``) is not supported yet.
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
class FlowEditConfig(EditorConfig):
    T_steps: int = 50
    n_avg: int = 1
    src_guidance_scale: float = 3.5
    tar_guidance_scale: float = 13.5
    n_min: int = 0
    n_max: int = 33
    negative_prompt: str = ""


class FlowEditEditor(Editor):
    name = "flowedit"
    Config = FlowEditConfig
    requires = frozenset({"image", "source_prompt", "target_prompt"})
    paper = "Kulikov et al., FlowEdit: Inversion-Free Text-Based Editing Using Pre-Trained Flow Models, 2024"
    stochastic = True
    backbones = FLOW_BACKBONES

    @classmethod
    def backbone_unavailable(cls, backbone: str) -> Optional[str]:
        return flow_backbone_unavailable(cls.name, backbone)

    def load(self, backbone: str = "toy", device="cpu", dtype=torch.float32) -> None:
        super().load(backbone, device, dtype)
        c = self.config
        if not (0 <= c.n_min <= c.n_max <= c.T_steps) or c.n_avg < 1:
            raise ConfigError(f"flowedit: need 0 <= n_min <= n_max <= T_steps and n_avg >= 1, got n_min {c.n_min}, "
                              f"n_max {c.n_max}, T_steps {c.T_steps}, n_avg {c.n_avg}")
        self.backbone = load_flow_backbone(self.backbone_id, device, dtype)

    @torch.no_grad()
    def edit(self, sample: Sample, generator: torch.Generator) -> EditOutput:
        bb, c = self.backbone, self.config
        src, tar = bb.encode_prompt([sample.source_prompt]), bb.encode_prompt([sample.target_prompt])
        neg = bb.encode_prompt([c.negative_prompt])
        x_src = bb.encode_image(sample.image)
        timesteps, _ = bb.schedule(c.T_steps)
        z_edit = x_src.clone().float()
        x_tar = None
        evals = 0
        for i, t in enumerate(timesteps):
            if c.T_steps - i > c.n_max:
                continue
            t_i = float(t) / 1000
            t_next = float(timesteps[i + 1]) / 1000 if i + 1 < len(timesteps) else 0.0
            if c.T_steps - i > c.n_min:
                v_delta = torch.zeros_like(z_edit)
                for _ in range(c.n_avg):
                    noise = torch.randn(x_src.shape, generator=generator).to(x_src)
                    z_src = (1 - t_i) * x_src + t_i * noise
                    z_tar = z_edit.to(x_src.dtype) + z_src - x_src
                    v_src = bb.velocity(z_src, t, src, neg, c.src_guidance_scale)
                    v_tar = bb.velocity(z_tar, t, tar, neg, c.tar_guidance_scale)
                    v_delta += (v_tar - v_src).float() / c.n_avg
                    evals += 4
                z_edit = z_edit + (t_next - t_i) * v_delta
            else:  # the last n_min steps: plain sampling from the target conditioning
                if x_tar is None:
                    noise = torch.randn(x_src.shape, generator=generator).to(x_src)
                    x_tar = z_edit + ((1 - t_i) * x_src + t_i * noise) - x_src
                x_tar = x_tar + (t_next - t_i) * bb.velocity(x_tar.to(x_src.dtype), t, tar, neg,
                                                             c.tar_guidance_scale).float()
                evals += 2
        out = z_edit if x_tar is None else x_tar
        return EditOutput(image=bb.decode(out)[0], extras={"transformer_evals": evals,
                                                            "final_latent": out.cpu().numpy()})
