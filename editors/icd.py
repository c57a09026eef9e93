"""iCD (``icd``): invertible consistency distillation, text-guided editing in 4 + 4 model calls.

Paper: Starodubcev, Khoroshikh, Babenko, Baranchuk, "Invertible Consistency Distillation for
Text-Guided Image Editing in Around 7 Steps", NeurIPS 2024 (arXiv:2406.14539); code
``yandex-research/invertible-cd`` (``utils/{loading,generation,inversion,p2p}.py``,
``running/sd1.5/edit.py``, ``launch_editing_iCD_sd1.5.sh``).

Models: Stable Diffusion 1.5 whose UNet is replaced by a guidance-distilled teacher that takes the
guidance scale as an extra embedding (``time_cond_proj_dim=512``; hub ``dbaranchuk/sd15-cfg-distill-unet``),
plus two rank-64 LoRA adapters on it (hub ``dbaranchuk/icd-lora-sd15``): a *forward* consistency model
(image → noise) and a *reverse* one (noise → image). Both are loaded with peft as named adapters on the
shared UNet; by default each is then merged into its own UNet copy, as the reference does (two pipeline
copies), so no LoRA matmul runs per call; ``fuse_lora=false`` switches the adapters on the one UNet per
phase instead (same maths, less memory). LoRA files in PEFT layout (keys
``[unet.]base_model.model.<module>.lora_A.weight``, alpha 8 as peft's default, which iCD trained with) or
kohya layout (``lora_unet_…``, per-module ``.alpha``) load; ``lora_source`` is a hub id or a folder holding
the two files under the hub names or the authors' tarball names. The teacher (``teacher_unet``) may be a
hub id, a diffusers UNet folder or the authors' bare state dict ``sd15_cfg_distill.pt``.

PIE-Bench settings (``launch_editing_iCD_sd1.5.sh``, the defaults here)
  * encode: VAE posterior mean; DDPM-noise to t = 19 with the sample's generator.
  * forward (inversion): 4 consistency steps at timesteps [19, 259, 519, 779] to boundaries
    [259, 519, 779, 999], source prompt, guidance w = 0:  x0 = (x − σ_t ε)/α_t,  x_s = α_s x0 + σ_s ε.
  * reverse (editing): 4 steps at [999, 779, 519, 259] to boundaries [779, 519, 259, 0] (the last
    boundary forces α = 1, σ = 0) on the rows [source, target]. The w-embedding is 0 on the source row
    and w = 19 on the target row, except where dynamic guidance (τ1 = τ2 = 0.8) switches it off: w_t = w
    for t/1000 ≤ τ1, 0 for t/1000 ≥ τ2, linear between (here: only t = 999 runs unguided).
  * Prompt-to-Prompt with 4 steps: cross-attention replaced for steps < int(0.3·5) = 1, self-attention
    for steps < int(0.6·4) = 2, Replace controller when the prompts have the same word count else
    Refine, LocalBlend on the blended words from step 0 (threshold 0.3), and the target's added
    non-stop-words (NLTK's English list) re-weighted ×4 (amplify factor).
  * fp32, seed: the harness seed (the iCD script used 30; the noise is drawn the same way, a CPU generator).
  * LoRA tensors rounded to fp16 before they are merged (``lora_dtype``), as the authors' loader casts them
    (``utils/loading.py``), even in their fp32 run; uint8 by truncation, as their ``latent2image``.

Checked by running the authors' ``running/sd1.5/edit.py`` on the toy backbone (``tests/golden/icd-*.npz``,
README there): final latent max |Δ| ≤ 2.2e-4, uint8 ≤ 1 level on ≤ 0.03 % of the values; without the fp16
rounding of the LoRAs the same comparison gave 0.10 and 2 levels.

The Prompt-to-Prompt attention control is the harness's one implementation, ``editors.p2p``.
The reference runs the reverse UNet on [∅, ∅, src, tgt] and discards the ∅ rows (with a w-embedding
UNet they are never used); we run [src, tgt] only, which is the same computation at half the cost.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from pie_bench.core.errors import ConfigError
from pie_bench.core.paths import shapes_models_dir
from pie_bench.core.sample import Sample

from editors.backbone import ICD_TEACHER_UNET, load_backbone
from editors.base import EditOutput, Editor, EditorConfig
from editors.compile import compile_unet
from editors.icd_lora import (ICD_LORA_ALPHA, ICD_LORA_REPO, ICD_LORA_TARGETS, add_lora_adapter,  # noqa: F401
                              adapter_name, build_toy_lora_folder, lora_round_dtype, normalise_lora_state_dict,
                              resolve_lora_file, toy_lora_state_dict)

# NLTK's English stop-word list (nltk.corpus.stopwords.words("english")), which iCD's edit.py uses to pick
# the words to amplify; spelled out here so the editor needs neither nltk nor its corpus download.
NLTK_ENGLISH_STOPWORDS = frozenset("""
i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself yourselves he him his
himself she she's her hers herself it it's its itself they them their theirs themselves what which who whom this
that that'll these those am is are was were be been being have has had having do does did doing a an the and but
if or because as until while of at by for with about against between into through during before after above below
to from up down in out on off over under again further then once here there when where why how all any both each
few more most other some such no nor not only own same so than too very s t can will just don don't should
should've now d ll m o re ve y ain aren aren't couldn couldn't didn didn't doesn doesn't hadn hadn't hasn hasn't
haven haven't isn isn't ma mightn mightn't mustn mustn't needn needn't shan shan't shouldn shouldn't wasn wasn't
weren weren't won won't wouldn wouldn't""".split())


@dataclass
class ICDConfig(EditorConfig):
    reverse_timesteps: tuple = (259, 519, 779, 999)
    forward_timesteps: tuple = (19, 259, 519, 779)
    start_timestep: int = 19  # noise level the real image is DDPM-noised to before the forward model
    guidance_scale: float = 19.0  # w of the target row (w-embedding), ε = ε_c + w (ε_c − ε_u) as distilled
    forward_guidance_scale: float = 0.0  # w during inversion (iCD: inv_guidance_scale 0)
    tau1: float = 0.8  # dynamic guidance: full w for t/1000 <= tau1
    tau2: float = 0.8  # ... none for t/1000 >= tau2, linear between
    cross_replace_steps: float = 0.3
    self_replace_steps: float = 0.6
    amplify_factor: float = 4.0  # P2P re-weighting of the target's added non-stop-words
    controller: str = "auto"  # "auto" (iCD: replace when the word counts match, else refine) | refine | replace
    local_blend: bool = True
    blend_threshold: float = 0.3
    # guidance-distilled UNet: hub id, diffusers UNet folder, or a bare state-dict file (.pt/.safetensors, as the
    # authors' sd15_cfg_distill.pt); the default is replaced by the toy/shapes backbones' own w-embedding UNet
    teacher_unet: str = ICD_TEACHER_UNET
    lora_source: str = ICD_LORA_REPO  # hub id or local dir holding both adapter files
    forward_lora: str = "forward-19-259-519-779.safetensors"  # file name in lora_source (hub repo or folder)
    reverse_lora: str = "reverse-259-519-779-999.safetensors"
    lora_alpha: float = ICD_LORA_ALPHA  # used for PEFT-layout files, which carry no alpha
    # dtype the LoRA tensors are rounded to before they are loaded and merged: the authors' loader casts them to
    # fp16 (utils/loading.py: get_module_kohya_state_dict(..., torch.float16)) even in the fp32 PIE-Bench run, so
    # "float16" is the default; "" keeps them as stored (in the UNet's dtype). On the toy this alone moves the
    # final latent by up to 0.1 and the image by up to 2/255 (README "iCD against the authors' code")
    lora_dtype: str = "float16"
    # merge each adapter into its own UNet copy, as the reference does (two pipeline copies): no LoRA matmuls
    # per call, at the memory of two more UNets; false switches peft adapters on the one shared UNet instead
    fuse_lora: bool = True
    # "" (eager) or a torch.compile mode for the forward (inversion) UNet, e.g. reduce-overhead (CUDA graphs);
    # the reverse UNet runs Prompt-to-Prompt's per-sample attention processors and stays eager (editors.compile)
    torch_compile: str = ""
    compile_backend: str = "inductor"


# ---------------------------------------------------------------------------------------------
# schedules


def boundaries(timesteps: Sequence[int], direction: str) -> list[tuple[int, int]]:
    """(t, s) pairs, in the order they run. Forward: each step jumps to the next timestep, the last to
    999. Reverse: from the largest timestep down, each to the next smaller one, the last to 0."""
    ts = sorted(int(t) for t in timesteps)
    if direction == "forward":
        return list(zip(ts, ts[1:] + [999]))
    if direction == "reverse":
        ts = ts[::-1]
        return list(zip(ts, ts[1:] + [0]))
    raise ValueError(direction)


def dynamic_guidance(t: int, w: float, tau1: float, tau2: float) -> float:
    """iCD's dynamic guidance (``linear_schedule_old``): w for t/1000 <= tau1, 0 for t/1000 >= tau2,
    linear in between."""
    s = t / 1000
    if s <= tau1:
        return w
    if s >= tau2:
        return 0.0
    return (tau2 - s) / (tau2 - tau1) * w


def guidance_embedding(w: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of the guidance scale (VDM / LCM convention: w scaled by 1000), (len(w), dim)."""
    w = w.float() * 1000.0
    half = dim // 2
    freqs = torch.exp(-torch.log(torch.tensor(10000.0)) / (half - 1) * torch.arange(half, dtype=torch.float32))
    args = w[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return torch.nn.functional.pad(emb, (0, 1)) if dim % 2 else emb


def consistency_step(eps: torch.Tensor, x: torch.Tensor, t: int, s: int, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """x0 = (x − σ_t ε)/α_t, then x_s = α_s x0 + σ_s ε; boundary 0 is the clean image (α = 1, σ = 0)."""
    a_t, s_t = alphas_cumprod[t].sqrt(), (1 - alphas_cumprod[t]).sqrt()
    a_s, s_s = (alphas_cumprod[s].sqrt(), (1 - alphas_cumprod[s]).sqrt()) if s > 0 else (1.0, 0.0)
    x0 = (x - s_t * eps) / a_t
    return a_s * x0 + s_s * eps


def added_words(source: str, target: str) -> list[str]:
    """iCD's words to amplify: target words absent from the source, minus stop-words."""
    src = source.split(" ")
    return [w for w in target.split(" ") if w not in src and w not in NLTK_ENGLISH_STOPWORDS]


# ---------------------------------------------------------------------------------------------
# the editor


class ICDEditor(Editor):
    name = "icd"
    Config = ICDConfig
    requires = frozenset({"image", "source_prompt", "target_prompt"})
    paper = "Starodubcev et al., Invertible Consistency Distillation for Text-Guided Image Editing, NeurIPS 2024"
    stochastic = True  # the forward (inversion) noise is drawn from the generator

    @classmethod
    def backbone_unavailable(cls, backbone: str) -> Optional[str]:
        why = super().backbone_unavailable(backbone)
        if why:
            return why
        if backbone == "shapes":
            try:
                shapes_models_dir("icd")
            except ConfigError as exc:  # a --out folder trained without the icd stages
                return str(exc)
        return None

    def load(self, backbone: str = "toy", device="cpu", dtype=torch.float32) -> None:
        cfg = self.config
        if cfg.controller not in ("auto", "refine", "replace"):
            raise ConfigError(f"icd.controller={cfg.controller!r}: expected auto, refine or replace")
        for name in ("reverse_timesteps", "forward_timesteps"):
            ts = getattr(cfg, name)
            if not ts or any(not 0 <= int(t) <= 999 for t in ts) or len(set(ts)) != len(ts):
                raise ConfigError(f"icd.{name}={list(ts)}: expected distinct timesteps in 0..999")
        super().load(backbone, device, dtype)
        # the toy/shapes backbones carry their own guidance-embedding UNet unless a teacher is named explicitly
        own_unet = not cfg.teacher_unet or (backbone in ("toy", "shapes") and cfg.teacher_unet == ICD_TEACHER_UNET)
        self.backbone = bb = load_backbone(backbone, device, dtype, variant="icd",
                                           unet_id=None if own_unet else cfg.teacher_unet)
        self.w_dim = bb.unet.config.time_cond_proj_dim
        if not self.w_dim:
            raise ConfigError(f"icd: the UNet of backbone {backbone!r} has no guidance embedding "
                              "(time_cond_proj_dim); iCD needs the guidance-distilled teacher "
                              f"(--editor-arg icd.teacher_unet={ICD_TEACHER_UNET})")
        round_to = lora_round_dtype(cfg.lora_dtype)
        source = cfg.lora_source
        if backbone == "toy":
            source = str(build_toy_lora_folder(bb.unet, cfg))
        elif backbone == "shapes" and cfg.lora_source == ICD_LORA_REPO:  # trained by pie_bench.training.shapes_icd
            source = str(shapes_models_dir("icd") / "lora")
        self.adapters = {}
        for kind, filename in (("forward", cfg.forward_lora), ("reverse", cfg.reverse_lora)):
            path = resolve_lora_file(source, filename)
            name = adapter_name(kind, path, cfg.lora_dtype)
            if name not in getattr(bb.unet, "peft_config", {}):
                add_lora_adapter(bb.unet, path, name, cfg.lora_alpha, round_to)
            self.adapters[kind] = name
        from peft.tuners.lora import LoraLayer

        # one LoRA layer tells which adapter is live: diffusers' set_adapter walks every module (ms per call on
        # the toy), so it runs only when the phase changes, and another editor sharing the UNet cannot fool it
        self._probe = next(m for m in bb.unet.modules() if isinstance(m, LoraLayer))
        self.models = {kind: self.fused_copy(name) if cfg.fuse_lora else bb.unet for kind, name in self.adapters.items()}
        if cfg.torch_compile and not cfg.fuse_lora:
            raise ConfigError("icd.torch_compile needs icd.fuse_lora=true: switching peft adapters on one UNet "
                              "between phases would invalidate the compiled graph every call")
        self.models["forward"] = compile_unet(self.models["forward"], cfg.torch_compile, cfg.compile_backend, self.name)
        self.alphas_cumprod = bb.scheduler.alphas_cumprod.to(device=bb.device, dtype=torch.float32)
        self.calls = self.evals = 0

    def fused_copy(self, adapter: str):
        """A plain UNet (no peft layers) whose weights have ``adapter`` merged in."""
        unet = self.backbone.unet
        unet.set_adapter(adapter)
        fused = copy.deepcopy(unet)
        fused.fuse_lora(adapter_names=[adapter])
        fused.unload_lora()
        return fused.requires_grad_(False).eval()

    # -- model calls -----------------------------------------------------------------------------
    def eps(self, adapter: str, x: torch.Tensor, t: int, context: torch.Tensor, w: Sequence[float]) -> torch.Tensor:
        """Noise prediction of the ``adapter`` consistency model, per-row guidance ``w`` (fp32 out)."""
        unet = self.models[adapter]
        if unet is self.backbone.unet and list(self._probe.active_adapters) != [self.adapters[adapter]]:
            unet.set_adapter(self.adapters[adapter])
        w_emb = guidance_embedding(torch.tensor(list(w)), self.w_dim).to(x.device, unet.dtype)
        self.calls += 1
        self.evals += x.shape[0]
        return unet(x.to(unet.dtype), t, encoder_hidden_states=context.to(unet.dtype), timestep_cond=w_emb,
                    return_dict=False)[0].float()

    @torch.no_grad()
    def invert(self, z0: torch.Tensor, cond_src: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Forward consistency: DDPM-noise to ``start_timestep`` then 4 jumps up to t = 999."""
        cfg, ac = self.config, self.alphas_cumprod
        noise = torch.randn(z0.shape, generator=generator, dtype=torch.float32).to(z0.device)
        t0 = cfg.start_timestep
        x = ac[t0].sqrt() * z0.float() + (1 - ac[t0]).sqrt() * noise
        for t, s in boundaries(cfg.forward_timesteps, "forward"):
            x = consistency_step(self.eps("forward", x, t, cond_src, [cfg.forward_guidance_scale]), x, t, s, ac)
        return x

    def guidance_rows(self, t: int) -> list[float]:
        """w per row of [source, target]: the source reconstructs unguided, the target follows dynamic guidance."""
        cfg = self.config
        return [0.0, dynamic_guidance(t, cfg.guidance_scale, cfg.tau1, cfg.tau2)]

    @torch.no_grad()
    def generate(self, x_T: torch.Tensor, cond: torch.Tensor, controller=None) -> torch.Tensor:
        """Reverse consistency on [source, target] from the inverted latent; returns both final latents."""
        latents = x_T.float().expand(2, *x_T.shape[1:]).clone()
        steps = boundaries(self.config.reverse_timesteps, "reverse")

        def run():
            nonlocal latents
            for i, (t, s) in enumerate(steps):
                if controller is not None:
                    controller.begin_step(i)
                latents = consistency_step(self.eps("reverse", latents, t, cond, self.guidance_rows(t)), latents, t,
                                           s, self.alphas_cumprod)
                if controller is not None:
                    latents = controller.after_step(latents)

        if controller is None:
            run()
        else:
            with controller.attach(self.models["reverse"]):
                run()
        return latents

    def controller_for(self, sample: Sample):
        from editors.p2p import P2PController

        cfg = self.config
        src, tgt = sample.source_prompt, sample.target_prompt
        words = added_words(src, tgt)
        blend = None
        if cfg.local_blend and sample.blended_words:
            blend = ((sample.blended_words[0],), (sample.blended_words[1],))
        return P2PController.from_prompts(
            self.backbone.tokenizer, src, tgt, num_steps=len(cfg.reverse_timesteps), mode=cfg.controller,
            cross_replace_steps=cfg.cross_replace_steps, self_replace_steps=cfg.self_replace_steps, blend_words=blend,
            equalizer={w: cfg.amplify_factor for w in words} if words and cfg.amplify_factor != 1 else None,
            blend_start=0.0, blend_threshold=cfg.blend_threshold, max_length=self.backbone.max_length,
            source_row=0, target_row=1)

    def edit(self, sample: Sample, generator: torch.Generator) -> EditOutput:
        bb = self.backbone
        self.calls = self.evals = 0
        controller = self.controller_for(sample)  # before any UNet work: bad prompts fail fast
        cond = bb.encode_prompt([sample.source_prompt, sample.target_prompt])
        x_T = self.invert(bb.encode_image(sample.image), cond[:1], generator)
        latents = self.generate(x_T, cond, controller)
        extras = {"unet_calls": self.calls, "unet_evals": self.evals, "unet_backward": 0,
                  "final_latent": latents[1:2].float().cpu().numpy()}
        extras.update(controller.describe())
        return EditOutput(image=bb.decode(latents[1:2], quantize="truncate")[0], extras=extras)
