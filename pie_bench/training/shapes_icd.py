"""iCD for the ShapesEdit model (Starodubcev et al., "Invertible Consistency Distillation for Text-Guided
Image Editing in Around 7 Steps", NeurIPS 2024), trained on CPU in two stages on top of the exported
text-to-image model (``--init-from``):

``icd_teacher`` — guidance distillation: a UNet with a guidance-scale embedding (``time_cond_proj_dim``,
the embedding of ``editors.icd.guidance_embedding``) learns ε_c + w (ε_c − ε_u) of the frozen base UNet
for w ~ U[0, W_MAX] in one call. It starts as the base UNet with a zero-initialised guidance projection
(so at step 0 it predicts ε_c for every w) and is trained with the base stage's (1 + SNR) / SNR weighting.

``icd_lora`` — forward and reverse multi-boundary consistency distillation of that teacher into two
LoRA adapters (peft), as the authors' ``training/src/train.py`` does per batch:
  * reverse CD: t = DDIM timestep [19, 39, …, 999] (N = 50), the teacher's guided DDIM step to
    t − 20, loss between the student's jump from t and its own (stop-gradient) jump from t − 20 to the
    boundary below (0, 259, 519, 779; at a boundary the target is the teacher's point itself);
    w from the discrete set ``ICD_W``;
  * forward CD: t in [19, …, 979], the teacher's unguided DDIM inversion step to t + 20, jumps to the
    boundary above (259, 519, 779, 999), w = 0;
  * preservation losses (coefficient 1.5 each): from x at a forward boundary, the reverse model's jump
    down (w = 0, stop-gradient) then the forward model's jump back up must return x (forward
    preservation), and from x at a reverse boundary (0 read as 19), the forward jump up (stop-gradient)
    then the reverse jump back down must return x (reverse preservation);
  * pseudo-Huber distance with c = 0.001, the authors' ``--loss_type huber --huber_c 0.001``.
The editor applies dynamic guidance at inference (``editors.icd.dynamic_guidance``).

Deviations, for a 2-core CPU budget: rank 16 (the authors: 64 on SD 1.5's 320–1280 channels; this UNet has
32–64), learning rate 3e-4 (theirs 8e-6 for a 860M-parameter UNet), batch 8 (as the authors), the four losses summed into
one optimiser step per batch (theirs: four successive steps of two optimisers; the adapters' parameters are
disjoint, so only the gradient clipping, here over both, differs), and w sampled from (0, 2.5, 4.5, 6.5)
instead of (0, 7, 11, 15, 19): the ShapesEdit model is used at CFG 7.5, i.e. w = 6.5 in this convention.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pie_bench.training.shapes_autoencoder import encode
from pie_bench.training.shapes_config import BATCH, CFG_DROPOUT
from pie_bench.training.shapes_data import scene_batch
from pie_bench.training.shapes_diffusion import noise_scheduler, snr_weight
from pie_bench.training.shapes_loop import train_loop

W_DIM = 32  # guidance-embedding width (the toy teacher's too)
W_MAX = 8.0
ICD_W = (0.0, 2.5, 4.5, 6.5)
ICD_RANK = 16
ICD_ALPHA = 8.0  # peft's default, which the editor assumes for PEFT-layout files
REVERSE_ENDPOINTS = (0, 259, 519, 779)
FORWARD_ENDPOINTS = (259, 519, 779, 999)
START_FORWARD = 19
DDIM_TIMESTEPS = torch.arange(1, 51) * 20 - 1  # 19, 39, ..., 999
PRESERVE_COEF = 1.5
HUBER_C = 1e-3


def load_exported(folder: Path, subfolder: str = "sd"):
    """Tokenizer, text encoder, UNet and VAE of an exported models folder, fp32, frozen."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    f = Path(folder) / subfolder
    parts = (CLIPTokenizer.from_pretrained(f / "tokenizer"),
             CLIPTextModel.from_pretrained(f / "text_encoder", torch_dtype=torch.float32),
             UNet2DConditionModel.from_pretrained(f / "unet", torch_dtype=torch.float32),
             AutoencoderKL.from_pretrained(f / "vae", torch_dtype=torch.float32))
    for m in parts[1:]:
        m.requires_grad_(False).eval()
    return parts


def teacher_from_base(base_unet):
    """The base UNet grown by a guidance embedding whose projection starts at zero."""
    from diffusers import UNet2DConditionModel

    # without the private keys: "_use_default_values" would reset time_cond_proj_dim to its default
    config = {k: v for k, v in base_unet.config.items() if not k.startswith("_")}
    unet = UNet2DConditionModel.from_config({**config, "time_cond_proj_dim": W_DIM})
    missing, unexpected = unet.load_state_dict(base_unet.state_dict(), strict=False)
    assert not unexpected and missing == ["time_embedding.cond_proj.weight"], (missing, unexpected)
    with torch.no_grad():
        unet.time_embedding.cond_proj.weight.zero_()
    return unet


def w_embedding(w: torch.Tensor) -> torch.Tensor:
    from editors.icd import guidance_embedding

    return guidance_embedding(w, W_DIM)


def prompt_ids(tok, prompts):
    return tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True,
               return_tensors="pt").input_ids


def stage_icd_teacher(args, tok, text, base_unet, vae):
    teacher = teacher_from_base(base_unet)
    sched = noise_scheduler()
    with torch.no_grad():
        empty = text(prompt_ids(tok, [""]))[0]

    def loss_fn(rng, gen):
        scenes, x = scene_batch(rng, BATCH["icd_teacher"])
        prompts = [("" if rng.random() < CFG_DROPOUT else s.caption()) for s in scenes]
        with torch.no_grad():
            cond = text(prompt_ids(tok, prompts))[0]
        z = encode(vae, x)
        noise = torch.randn(z.shape, generator=gen)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(z),), generator=gen)
        w = torch.rand(len(z), generator=gen) * W_MAX
        zt = sched.add_noise(z, noise, t)
        with torch.no_grad():
            e_c, e_u = base_unet(torch.cat([zt, zt]), torch.cat([t, t]),
                                 encoder_hidden_states=torch.cat([cond, empty.expand_as(cond)])).sample.chunk(2)
            target = e_c + w.view(-1, 1, 1, 1) * (e_c - e_u)
        pred = teacher(zt, t, encoder_hidden_states=cond, timestep_cond=w_embedding(w)).sample
        return (snr_weight(sched, t) * (pred - target).pow(2).mean((1, 2, 3))).mean()

    losses = train_loop("icd_teacher", args, {"teacher": teacher}, list(teacher.parameters()), loss_fn)
    return teacher.requires_grad_(False).eval(), losses


def with_lora(teacher):
    """A copy of the teacher carrying one trainable peft LoRA adapter (``default``) on iCD's target modules."""
    import copy

    from peft import LoraConfig

    from editors.icd_lora import ICD_LORA_TARGETS

    unet = copy.deepcopy(teacher)
    unet.add_adapter(LoraConfig(r=ICD_RANK, lora_alpha=ICD_ALPHA, target_modules=list(ICD_LORA_TARGETS),
                                init_lora_weights=True))
    return unet


def jump(eps, x, t, s, ac, hard_zero=True):
    """x_t -> x_s along the predicted ε (iCD's ``predicted_origin``); with ``hard_zero`` s = 0 is the clean
    latent (the consistency models' boundary), without it the teacher's DDIM step to alphas_cumprod[0]
    (``DDIMSolver.ddim_step``)."""
    a_t, s_t = ac[t].sqrt().view(-1, 1, 1, 1), (1 - ac[t]).sqrt().view(-1, 1, 1, 1)
    a_s, s_s = ac[s].sqrt().view(-1, 1, 1, 1), (1 - ac[s]).sqrt().view(-1, 1, 1, 1)
    if hard_zero:
        zero = (s == 0).view(-1, 1, 1, 1)
        a_s, s_s = torch.where(zero, torch.ones_like(a_s), a_s), torch.where(zero, torch.zeros_like(s_s), s_s)
    return a_s * (x - s_t * eps) / a_t + s_s * eps


def below(t, ends):
    e = torch.tensor(ends)
    return torch.stack([e[e <= v].max() for v in t])


def above(t, ends):
    e = torch.tensor(ends)
    return torch.stack([e[e >= v].min() for v in t])


def huber(a, b):
    return (torch.sqrt((a - b) ** 2 + HUBER_C ** 2) - HUBER_C).mean()


def icd_losses(teacher, fwd, rev, z, cond, gen, ac):
    """The four iCD losses on one batch of clean latents ``z`` with text conditions ``cond``."""
    n = len(z)
    noise = torch.randn(z.shape, generator=gen)
    noisy = lambda t: ac[t].sqrt().view(-1, 1, 1, 1) * z + (1 - ac[t]).sqrt().view(-1, 1, 1, 1) * noise  # noqa: E731
    w = torch.tensor(ICD_W)[torch.randint(0, len(ICD_W), (n,), generator=gen)]
    w_emb, w0 = w_embedding(w), w_embedding(torch.zeros(n))

    def eps(model, x, t, emb):
        return model(x, t, encoder_hidden_states=cond, timestep_cond=emb).sample

    # reverse CD
    t = DDIM_TIMESTEPS[torch.randint(0, 50, (n,), generator=gen)]
    t_prev = (t - 20).clamp(min=0)
    s = below(t_prev, REVERSE_ENDPOINTS)
    x_t = noisy(t)
    pred = jump(eps(rev, x_t, t, w_emb), x_t, t, s, ac)
    with torch.no_grad():
        e = eps(teacher, x_t, t, w_emb)
        x_prev = jump(e, x_t, t, t_prev, ac, hard_zero=False)
        target = torch.where((t_prev == s).view(-1, 1, 1, 1), x_prev, jump(eps(rev, x_prev, t_prev, w_emb), x_prev,
                                                                              t_prev, s, ac))
    l_rev = huber(pred, target)
    # forward CD (unguided)
    t = DDIM_TIMESTEPS[torch.randint(0, 49, (n,), generator=gen)]
    t_next = t + 20
    s = above(t_next, FORWARD_ENDPOINTS)
    x_t = noisy(t)
    pred = jump(eps(fwd, x_t, t, w0), x_t, t, s, ac)
    with torch.no_grad():
        x_next = jump(eps(teacher, x_t, t, w0), x_t, t, t_next, ac)
        target = torch.where((t_next == s).view(-1, 1, 1, 1), x_next, jump(eps(fwd, x_next, t_next, w0), x_next,
                                                                              t_next, s, ac))
    l_fwd = huber(pred, target)
    # preservation: segment k spans [REVERSE_ENDPOINTS[k] (0 read as 19), FORWARD_ENDPOINTS[k]]
    k = torch.randint(0, len(FORWARD_ENDPOINTS), (n,), generator=gen)
    hi = torch.tensor(FORWARD_ENDPOINTS)[k]
    lo = torch.tensor(REVERSE_ENDPOINTS)[k].clamp(min=START_FORWARD)
    x_hi, x_lo = noisy(hi), noisy(lo)
    with torch.no_grad():
        down = jump(eps(rev, x_hi, hi, w0), x_hi, hi, lo, ac)
        up = jump(eps(fwd, x_lo, lo, w0), x_lo, lo, hi, ac)
    l_fwd_pres = huber(jump(eps(fwd, down, lo, w0), down, lo, hi, ac), x_hi)
    l_rev_pres = huber(jump(eps(rev, up, hi, w0), up, hi, lo, ac), x_lo)
    return l_rev, l_fwd, l_fwd_pres, l_rev_pres


def stage_icd_lora(args, tok, text, teacher, vae):
    fwd, rev = with_lora(teacher), with_lora(teacher)
    ac = noise_scheduler().alphas_cumprod.float()
    params = [p for m in (fwd, rev) for p in m.parameters() if p.requires_grad]
    parts_log = []

    def loss_fn(rng, gen):
        scenes, x = scene_batch(rng, BATCH["icd_lora"])
        with torch.no_grad():
            cond = text(prompt_ids(tok, [s.caption() for s in scenes]))[0]
        parts = icd_losses(teacher, fwd, rev, encode(vae, x), cond, gen, ac)
        parts_log.append([float(p.detach()) for p in parts])
        return parts[0] + parts[1] + PRESERVE_COEF * (parts[2] + parts[3])

    losses = train_loop("icd_lora", args, {"forward": fwd, "reverse": rev}, params, loss_fn)
    tail = np.mean(parts_log[-25:], 0).round(5).tolist() if parts_log else None
    return fwd, rev, losses, dict(zip(("reverse_cd", "forward_cd", "forward_preserve", "reverse_preserve"), tail or []))


def lora_file_state(unet) -> dict:
    """The adapter in the PEFT layout of the authors' files (``unet.base_model.model.<module>.lora_A.weight``), fp16."""
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(unet, adapter_name="default")
    return {f"unet.base_model.model.{k}": v.detach().to(torch.float16).contiguous() for k, v in state.items()}


def export_icd(args, teacher, fwd, rev, vae, text, tok, losses: dict, parts: dict) -> None:
    """``icd/``: the guidance-distilled teacher in the Stable Diffusion layout and, in ``icd/lora/``, the two
    adapters under the hub file names ``editors.icd`` looks for."""
    from safetensors.torch import save_file

    from editors.icd import ICDConfig
    from pie_bench.training.shapes_config import LR
    from pie_bench.training.shapes_export import export_continued, export_sd_folder

    def write(out: Path) -> None:
        export_sd_folder(out / "icd", teacher, vae, text, tok)
        (out / "icd" / "lora").mkdir()
        cfg = ICDConfig()
        for name, model in ((cfg.forward_lora, fwd), (cfg.reverse_lora, rev)):
            save_file(lora_file_state(model), str(out / "icd" / "lora" / name), metadata={"format": "pt"})

    export_continued(args, "icd", write, {
        "steps": {k: args.steps[k] for k in ("icd_teacher", "icd_lora")},
        "batch": {k: BATCH[k] for k in ("icd_teacher", "icd_lora")}, "lr": {k: LR[k] for k in ("icd_teacher", "icd_lora")},
        "w_dim": W_DIM, "w_max": W_MAX, "discrete_w": ICD_W, "rank": ICD_RANK, "lora_alpha": ICD_ALPHA,
        "reverse_endpoints": REVERSE_ENDPOINTS, "forward_endpoints": FORWARD_ENDPOINTS, "preserve_coef": PRESERVE_COEF,
        "huber_c": HUBER_C, "final_losses": {k: (v[-1][1] if v else None) for k, v in losses.items()},
        "final_loss_parts": parts, "loss_curves": losses})


def train_icd(args, workdir: Path) -> None:
    from pie_bench.training.shapes_loop import log

    tok, text, base_unet, vae = load_exported(Path(args.init_from))
    teacher, losses_teacher = stage_icd_teacher(args, tok, text, base_unet, vae)
    fwd, rev, losses_lora, parts = stage_icd_lora(args, tok, text, teacher, vae)
    export_icd(args, teacher, fwd, rev, vae, text, tok, {"icd_teacher": losses_teacher, "icd_lora": losses_lora},
               parts)
    log(workdir, f"iCD teacher and adapters exported to {args.out}/icd")
