"""Pix2Pix-Zero (``pix2pix_zero``): zero-shot image-to-image translation with an edit direction in
text-embedding space and cross-attention guidance.

Paper: Parmar, Singh, Zhang, Li, Lu, Zhu, "Zero-shot Image-to-Image Translation", SIGGRAPH 2023
(arXiv:2302.03027); code ``pix2pixzero/pix2pix-zero``. PIE-Bench runs it through
``cure-lab/PnPInversion: run_editing_pix2pix_zero.py`` with Stable Diffusion v1.4.

PIE-Bench settings (the defaults here)
  * caption c: a BLIP caption of the source (LAVIS ``blip_caption/base_coco``). **Default here:
    ``caption=source_prompt``**, the sample's source prompt, because it needs no extra model and the
    PIE-Bench source prompt describes the image at least as well as a caption; set ``caption=blip``
    (with ``captioner=<hub id or local dir>``, default ``Salesforce/blip-image-captioning-base``) for the
    protocol's captioned variant, prompted as LAVIS does (``"a picture of "``, beam 3, length 10-30).
  * edit direction Δ = CLIP(target prompt) − CLIP(source prompt), per token, all 77 positions (no
    sentence banks). The paper's sentence-bank direction (mean embedding of many sentences with the
    target word minus that of sentences with the source word) is available with
    ``source_sentences=<file>`` and ``target_sentences=<file>`` (text files, one sentence per line);
    it then replaces the per-sample direction.
  * timesteps: SD v1.4's scheduler config has ``steps_offset`` 1 (and the vendored pipeline forces 1
    whatever the config says), so with Δ = 1000 / steps the edit runs t = 1000 − Δ + 1, …, 1
    (50 steps: 981, 961, …, 1; 10 steps: 901, …, 1), the last step landing on ᾱ_0.
  * DDIM inversion, conditional on c at guidance 1, on the authors' own schedule: the UNet is called at
    the edit's timesteps in ascending order (1, 1 + Δ, …, 1000 − Δ + 1) and the step at t moves the
    latent from ᾱ[t − 1] to ᾱ[t + Δ − 1], the last one to ᾱ_999. The edit then starts from that latent
    at t = 1000 − Δ + 1 (the two schedules do not meet exactly; that is the authors' code, kept).
    Every predicted ε is regularised: 5 rounds of (5 auto-correlation gradient steps with random rolls
    over a pyramid down to 8x8, λ_ac = 20, then one KL step, λ_kl = 20). The roll amounts are Python
    ``random.randrange`` draws, per map and pyramid level, from the global Python RNG that the driver
    reseeds with 1234 before every sample: here a ``random.Random`` seeded with the sample's seed
    (the seed of its generator; the harness's default seed is 1234), so every sample gets the authors'
    rolls. The source latent is a VAE posterior *sample* (as the original), drawn from the sample's
    generator (the driver's draw is the first one from the freshly seeded global torch RNG).
  * editing, DDIM, CFG 7.5 (repository default 5) with **the caption as the negative prompt**:
    ε = ε(c) + 7.5 (ε(c + Δ) − ε(c)). A reference pass with c alone (the reconstruction) records every
    cross-attention map; at each edit step the latent takes one SGD step of size ``xa_guidance`` = 0.1
    on Σ_layers ‖A_edit − A_ref‖² (sum over pixels and tokens, mean over batch·heads), then ε is
    recomputed at the moved latent.
  * the decoded image becomes uint8 by rounding (diffusers' ``numpy_to_pil``, which the driver's
    pipeline uses), not by truncation as the P2P code does.

Implementation choice: written on the shared backbone, not on diffusers'
``StableDiffusionPix2PixZeroPipeline``. That pipeline is deprecated (moved to ``pipelines/deprecated``
in 0.25, its tests deleted in 2024, its docs page removed in 0.38) and may vanish in any release;
pinning diffusers for one editor would hold the whole harness back. Writing it directly also lets us
(1) run the reference pass in lockstep with the edit pass, so only one step's attention maps exist,
on the device (the pipeline stores all 50 steps' maps and copies each to the CPU), (2) take every
random draw from the sample's seed (its generator for the VAE noise, a Python RNG seeded from it for the
rolls), (3) install our attention processors only for the
duration of an edit and restore them, because the UNet is shared with the other editors (the
pipeline replaces them for good), and (4) default to the source prompt instead of requiring a BLIP
model, and (5) run fast: the UNet in the backbone's dtype (bf16/fp16 on a GPU) while latents, scheduler
steps, the regulariser and the guidance loss stay fp32; fused SDPA in every attention layer whose
probabilities nothing reads (all self-attention, and cross-attention in the no-grad edit pass); the
reference pass on one row (its CFG has the caption as both prompts, so it is ε(c)).
The edit steps with diffusers' ``DDIMScheduler`` (``steps_offset`` 1); the inversion schedule is
written here (``inversion_schedule``), because diffusers' ``DDIMInverseScheduler`` is not the authors'
(its steps run ᾱ[t − Δ] → ᾱ[t], and its first step barely moves the latent).

Checks: ``tests/golden/pix2pix_zero-*.npz`` hold final latents and images produced by PIE-Bench's own
code (``cure-lab/PnPInversion``, minimally adapted to diffusers 0.42 and the toy backbone; see
``tests/golden/README.md``), which ``tests/test_golden_official.py`` compares with this editor.
``tests/test_fast_vs_reference.py`` checks the whole edit against diffusers' shipped (deprecated)
pipeline, given the authors' inverse schedule and roll draws (``benchmarks/reference/pix2pix_zero.py``),
and ``tests/test_pix2pix_zero.py`` the same per stage (skipping, saying so, once diffusers drops it).

Deviations from PIE-Bench's code: the caption (above); on CUDA the authors' VAE noise comes from the
CUDA RNG, ours from the sample's (CPU) generator, so GPU runs use another posterior sample; and
numerics only: the reference pass runs one row instead of two identical ones, self-attention and the
no-grad passes use fused SDPA instead of explicit softmax, and with ``--dtype`` bf16/fp16 the UNet runs
in that dtype. Measured on the toy backbone in fp32 (2 samples, 10 steps, xa_guidance 0.1, 1 and 30):
final latents within 1.5e-4 of the authors' (latents up to ~12), decoded images within 0.0032/255.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pie_bench.core.errors import ConfigError
from pie_bench.core.sample import Sample

from editors.attention import HeadAttnProcessor, attention_probs, swapped_processors
from editors.backbone import load_backbone
from editors.base import EditOutput, Editor, EditorConfig
from editors.noise_regularizer import auto_corr_loss, draw_rolls, kl_loss, regularize_noise, roll_rng  # noqa: F401

CAPTION_SOURCES = ("source_prompt", "blip")
BLIP_CAPTIONER = "Salesforce/blip-image-captioning-base"


@dataclass
class Pix2PixZeroConfig(EditorConfig):
    num_inference_steps: int = 50  # DDIM steps, inversion and editing
    guidance_scale: float = 7.5  # CFG with the caption as negative prompt (PIE-Bench; the repository: 5)
    xa_guidance: float = 0.1  # cross-attention guidance step size (diffusers: cross_attention_guidance_amount)
    lambda_ac: float = 20.0  # inversion regulariser: auto-correlation weight
    lambda_kl: float = 20.0  # inversion regulariser: KL weight
    num_reg_steps: int = 5
    num_ac_rolls: int = 5
    caption: str = "source_prompt"  # "source_prompt" (default, no extra model) | "blip" (PIE-Bench's protocol)
    captioner: str = BLIP_CAPTIONER  # hub id or local dir of a transformers BLIP captioning model
    source_sentences: str = ""  # sentence bank (text file, one sentence per line) for the paper's direction
    target_sentences: str = ""


# ---------------------------------------------------------------------------------------------
# cross-attention maps


class CrossAttentionProbe:
    """Collects the cross-attention probabilities of one UNet call, in layer order."""

    def __init__(self):
        self.maps: list[torch.Tensor] = []
        self.recording = False

    def take(self) -> list[torch.Tensor]:
        maps, self.maps = self.maps, []
        return maps


class ProbedCrossAttnProcessor(HeadAttnProcessor):
    """Cross-attention whose probabilities are handed to a probe while it records (explicit softmax);
    fused SDPA while nothing reads them."""

    def __init__(self, probe: CrossAttentionProbe):
        self.probe = probe

    def attend(self, attn, q, k, v, mask):
        if not self.probe.recording:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        probs = attention_probs(attn, q, k, mask)  # (batch*heads, pixels, tokens)
        self.probe.maps.append(probs)
        b, h, n, d = q.shape
        return torch.bmm(probs, v.reshape(b * h, -1, d)).view(b, h, n, d)


@contextlib.contextmanager
def probed_cross_attention(unet):
    """Probing processors on every ``attn2`` layer for the duration of the block (the UNet is shared with
    other editors, so the previous processors are put back afterwards)."""
    probe = CrossAttentionProbe()
    with swapped_processors(unet, lambda name, _: ProbedCrossAttnProcessor(probe) if ".attn2." in name else None):
        yield probe


def attention_guidance_loss(maps: list[torch.Tensor], reference: list[torch.Tensor]) -> torch.Tensor:
    """Σ_layers mean_(batch·heads) Σ_(pixels, tokens) (A − A_ref)²; the reference is one prompt's maps,
    shared by every row of the batch."""
    loss = maps[0].new_zeros((), dtype=torch.float32)
    for cur, ref in zip(maps, reference, strict=True):
        ref = ref.repeat(cur.shape[0] // ref.shape[0], 1, 1)
        loss = loss + (cur.float() - ref.float()).pow(2).sum((1, 2)).mean(0)
    return loss


# ---------------------------------------------------------------------------------------------
# captions and directions


class BlipCaptioner:
    """PIE-Bench's caption: BLIP base (COCO captioning), prompted with "a picture of " and decoded with
    beam search 3, length 10-30, prompt stripped, as LAVIS ``blip_caption/base_coco`` does."""

    prompt = "a picture of "

    def __init__(self, model_id: str, device, dtype):
        from transformers import BlipForConditionalGeneration, BlipProcessor

        try:
            self.processor = BlipProcessor.from_pretrained(model_id)
            self.model = BlipForConditionalGeneration.from_pretrained(model_id, dtype=dtype).to(device).eval()
        except (OSError, ValueError) as exc:
            raise ConfigError(f"pix2pix_zero.captioner: cannot load BLIP from {model_id!r} "
                              f"({str(exc).splitlines()[0][:160]}); download it with `huggingface-cli download "
                              f"{BLIP_CAPTIONER}`, pass a local dir, or use pix2pix_zero.caption=source_prompt") from None
        self.device, self.dtype = torch.device(device), dtype

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> str:
        from PIL import Image

        inputs = self.processor(images=Image.fromarray(image), text=self.prompt, return_tensors="pt")
        inputs = {k: (v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device))
                  for k, v in inputs.items()}
        out = self.model.generate(**inputs, num_beams=3, max_length=30, min_length=10)
        text = self.processor.decode(out[0], skip_special_tokens=True).strip()
        stem = self.prompt.strip()
        return text[len(stem):].strip() if text.startswith(stem) else text


def read_sentences(path: str, key: str) -> list[str]:
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"pix2pix_zero.{key}: {p} is not a file; pass a text file with one sentence per line")
    sentences = [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not sentences:
        raise ConfigError(f"pix2pix_zero.{key}: {p} has no sentences; write one sentence per line")
    return sentences


# ---------------------------------------------------------------------------------------------
# the editor


class Pix2PixZeroEditor(Editor):
    name = "pix2pix_zero"
    Config = Pix2PixZeroConfig
    requires = frozenset({"image", "source_prompt", "target_prompt"})
    paper = "Parmar et al., Zero-shot Image-to-Image Translation (pix2pix-zero), SIGGRAPH 2023"
    stochastic = True  # the VAE posterior sample and the noise regulariser's rolls come from the generator

    def load(self, backbone: str = "toy", device="cpu", dtype=torch.float32) -> None:
        cfg = self.config
        if cfg.caption not in CAPTION_SOURCES:
            raise ConfigError(f"pix2pix_zero.caption={cfg.caption!r}: expected one of {', '.join(CAPTION_SOURCES)}")
        if bool(cfg.source_sentences) != bool(cfg.target_sentences):
            raise ConfigError("pix2pix_zero: give both source_sentences and target_sentences (or neither)")
        super().load(backbone, device, dtype)
        self.backbone = load_backbone(backbone, device, dtype, variant="sd")
        self.captioner = BlipCaptioner(cfg.captioner, device, dtype) if cfg.caption == "blip" else None
        self.bank_direction = None
        if cfg.source_sentences:
            self.bank_direction = (self.mean_embedding(read_sentences(cfg.target_sentences, "target_sentences"))
                                   - self.mean_embedding(read_sentences(cfg.source_sentences, "source_sentences")))

    # -- inputs ------------------------------------------------------------------------------------
    def mean_embedding(self, sentences: list[str], chunk: int = 64) -> torch.Tensor:
        """Mean CLIP text embedding over sentences, (1, 77, D)."""
        total = sum(self.backbone.encode_prompt(sentences[i:i + chunk]).float().sum(0, keepdim=True)
                    for i in range(0, len(sentences), chunk))
        return (total / len(sentences)).to(self.backbone.dtype)

    def caption(self, sample: Sample) -> str:
        return self.captioner(sample.image) if self.captioner is not None else sample.source_prompt

    def direction(self, sample: Sample) -> torch.Tensor:
        if self.bank_direction is not None:
            return self.bank_direction
        emb = self.backbone.encode_prompt([sample.target_prompt, sample.source_prompt])
        return emb[:1] - emb[1:]

    # -- the two stages ------------------------------------------------------------------------------
    def new_scheduler(self):
        """The edit's DDIM scheduler with the authors' timesteps (``steps_offset`` 1, see the module doc)."""
        sched = self.backbone.new_scheduler(steps_offset=1)
        sched.set_timesteps(self.config.num_inference_steps, device=self.backbone.device)
        return sched

    def inversion_schedule(self) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
        """(UNet timestep t, ᾱ the step starts from, ᾱ it ends at) per inversion step, as the authors'
        inverse scheduler computes them: the edit's timesteps in ascending order, ᾱ[t − 1] → ᾱ[t + Δ − 1],
        the index capped at the last training step (ᾱ_999)."""
        sched = self.new_scheduler()
        alphas = sched.alphas_cumprod
        T = sched.config.num_train_timesteps
        stride = T // sched.num_inference_steps
        return [(t, alphas[t - 1], alphas[min(t + stride, T) - 1]) for t in sched.timesteps.flip(0).tolist()]

    @torch.no_grad()
    def invert(self, latents: torch.Tensor, cond: torch.Tensor, rng) -> torch.Tensor:
        """Regularised DDIM inversion at guidance 1 (conditional prediction only) on the authors' schedule.
        ``rng``: the roll RNG (``roll_rng``), or one per batch row."""
        cfg = self.config
        x = latents.float()
        for t, a_from, a_to in self.inversion_schedule():
            eps = self.eps(x, torch.tensor(t, device=x.device), cond)
            eps = regularize_noise(eps, rng, cfg.lambda_ac, cfg.lambda_kl, cfg.num_reg_steps, cfg.num_ac_rolls)
            x0 = (x - (1 - a_from) ** 0.5 * eps) / a_from.sqrt()  # the predicted clean latent
            x = a_to.sqrt() * x0 + (1 - a_to).sqrt() * eps  # deterministic DDIM step, up the noise levels
        return x

    def eps(self, x: torch.Tensor, t, context: torch.Tensor) -> torch.Tensor:
        """UNet noise prediction in fp32; only the UNet runs in the backbone's dtype (bf16/fp16 on a GPU),
        the latents, scheduler steps, regulariser and guidance loss stay fp32."""
        unet = self.backbone.unet
        return unet(x.to(unet.dtype), t, encoder_hidden_states=context.to(unet.dtype), return_dict=False)[0].float()

    def generate(self, x_t: torch.Tensor, cond: torch.Tensor, direction: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reference (reconstruction) and edited trajectories from the inverted latent, in lockstep.
        Returns (edited latents, reconstruction latents)."""
        cfg, unet = self.config, self.backbone.unet
        sched = self.new_scheduler()
        # rows [negatives..., edits...]: the caption is the negative prompt of its own sample
        B = x_t.shape[0]
        cond_edit = torch.cat([cond, cond + direction.to(cond)])
        ref, x = x_t.float(), x_t.float()
        with probed_cross_attention(unet) as probe:
            for t in sched.timesteps:
                with torch.no_grad():
                    # CFG whose negative prompt is the caption itself reduces to ε(c): one row suffices
                    probe.recording = True
                    eps_ref = self.eps(ref, t, cond)
                    probe.recording = False
                    ref_maps = probe.take()
                    ref = sched.step(eps_ref, t, ref).prev_sample
                x_in = torch.cat([x, x]).detach()
                if cfg.xa_guidance > 0:
                    with torch.enable_grad():
                        x_in.requires_grad_(True)
                        probe.recording = True
                        unet(x_in.to(unet.dtype), t, encoder_hidden_states=cond_edit.to(unet.dtype))
                        probe.recording = False
                        # × B: the loss averages over the batch; each sample's gradient must be as alone
                        loss = B * attention_guidance_loss(probe.take(), ref_maps)
                        # backward() rather than autograd.grad: same gradient (the UNet weights are frozen),
                        # and it lets torch.utils.flop_counter follow the pass (benchmarks/latency.py)
                        loss.backward()
                    x_in = (x_in - cfg.xa_guidance * x_in.grad).detach()  # one SGD step, as the original
                with torch.no_grad():
                    eps_neg, eps_edit = self.eps(x_in, t, cond_edit).chunk(2)
                    eps = eps_neg + cfg.guidance_scale * (eps_edit - eps_neg)
                    x = sched.step(eps, t, x_in[:B]).prev_sample
        return x, ref

    def edit_batch(self, samples: list[Sample], generators: list[torch.Generator]) -> list[EditOutput]:
        """Edit several samples with batched UNet calls (``--batch-size``). Every random draw comes from
        the sample's own generator in the order ``edit`` makes it and the guidance loss is normalised per
        sample, so each output equals its one-by-one ``edit`` up to floating-point reassociation."""
        if len(samples) != len(generators):
            raise ValueError("edit_batch: one generator per sample")
        bb, cfg = self.backbone, self.config
        captions = [self.caption(s) for s in samples]
        with torch.no_grad():
            dist = bb.vae.encode(torch.cat([bb.image_to_tensor(s.image) for s in samples])).latent_dist
            # DiagonalGaussianDistribution.sample, one draw per sample from its own generator
            noise = torch.cat([torch.randn((1, *dist.mean.shape[1:]), generator=g, device=g.device,
                                           dtype=dist.mean.dtype).to(dist.mean.device) for g in generators])
            latents = (dist.mean + dist.std * noise) * bb.scaling_factor
        cond = bb.encode_prompt(captions)
        rngs = [roll_rng(g) for g in generators]
        x_t = self.invert(latents, cond, rngs[0] if len(rngs) == 1 else rngs)
        edited, _ = self.generate(x_t, cond, torch.cat([self.direction(s) for s in samples]))
        n = cfg.num_inference_steps
        evals = n + n + (4 if cfg.xa_guidance > 0 else 2) * n  # inversion, reference, edit (grad pass + final)
        images = bb.decode(edited, quantize="round")  # as diffusers' numpy_to_pil in the authors' pipeline
        return [EditOutput(image=im, extras={"unet_evals": evals, "caption": c, "batch_size": len(samples),
                                             "final_latent": edited[i:i + 1].detach().float().cpu().numpy()})
                for i, (im, c) in enumerate(zip(images, captions))]

