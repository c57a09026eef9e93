"""Reference-style DDIM+P2P, null-text inversion+P2P and negative-prompt inversion+P2P, run the way
PIE-Bench's vendored code (``cure-lab/PnPInversion``: ``models/p2p_editor.py``, ``models/p2p/*``) and the
original ``google/prompt-to-prompt`` notebook run them:

* every attention layer computes explicit probabilities (no SDPA) and passes them through the
  controller, which counts layers to know the step, edits the conditional half in place, and stores
  every map with at most (latent/2)² queries (self and cross, used or not), copied to the CPU each
  step, summed over steps; LocalBlend reads the summed store;
* ``invert``: DDIM inversion at guidance 1, then the null-text loop: for DDIM+P2P and NPI with 0 inner
  iterations (the loop still recomputes ε_c and runs a guided step per timestep: 3 rows per step of
  wasted work), for NTI with Adam on the null embedding while the UNet weights keep ``requires_grad``
  (the reference never freezes them: weight gradients are computed and accumulated), ``loss.item()``
  every iteration; plus a decode of the input latent (``image_rec``);
* a reconstruction pass with the source prompt (batch [∅, c]) and an AttentionStore, decoded;
* the edit pass on [∅src, ∅tgt, c_src, c_tgt], then both rows decoded.

fp32 throughout (the caller passes an fp32 backbone). The DDIM maths is the reference's
``next_step`` / ``prev_step`` over ``alphas_cumprod``; the edit pass uses diffusers' ``DDIMScheduler``.
"""
from __future__ import annotations

from collections import defaultdict

import torch
import torch.nn.functional as F

from benchmarks.reference.common import RefResult, count_unet_rows, explicit_attention


class RefControl:
    """P2P attention control in the reference's style (AttentionStore + AttentionControlEdit with
    Refine/Replace, Reweight and LocalBlend), driven by layer counting."""

    def __init__(self, unet, batch: int, latent_hw: tuple[int, int], edit=None, cpu_copy: bool = True):
        self.num_layers = len(unet.attn_processors)
        self.batch = batch  # prompts in the conditional half: 1 (AttentionStore) or 2 (edit)
        self.edit = edit  # the fast controller, read only for its alignment tables and schedules
        self.store_max = (latent_hw[0] // 2) * (latent_hw[1] // 2)  # the reference's 32**2 at 64² latents
        self.cpu_copy = cpu_copy
        self.cur_step = self.cur_layer = 0
        self.step_store = defaultdict(list)
        self.attention_store: dict[str, list[torch.Tensor]] = {}
        self.blend_counter = 0

    def __call__(self, probs: torch.Tensor, is_cross: bool, name: str) -> torch.Tensor:
        h = probs.shape[0]
        probs[h // 2:] = self.forward(probs[h // 2:], is_cross, name.split("_")[0])
        self.cur_layer += 1
        if self.cur_layer == self.num_layers:
            self.cur_layer = 0
            self.cur_step += 1
            self.between_steps()
        return probs

    def forward(self, attn: torch.Tensor, is_cross: bool, place: str) -> torch.Tensor:
        e = self.edit
        n_tok = attn.shape[1]
        if e is not None and (is_cross or e.self_steps[0] <= self.cur_step < e.self_steps[1]):
            heads = attn.shape[0] // self.batch
            a = attn.reshape(self.batch, heads, *attn.shape[1:])
            base, repl = a[0], a[1:]
            if is_cross:
                alpha = e.cross_alphas[self.cur_step].to(attn)
                a[1:] = self.replace_cross(base, repl) * alpha + (1 - alpha) * repl
            elif n_tok <= self.store_max:
                a[1:] = base.unsqueeze(0).expand_as(repl)
            attn = a.reshape(self.batch * heads, *attn.shape[1:])
        if n_tok <= self.store_max:
            key = f"{place}_{'cross' if is_cross else 'self'}"
            self.step_store[key].append(attn.detach().cpu() if self.cpu_copy else attn.detach().clone())
        return attn

    def replace_cross(self, base: torch.Tensor, repl: torch.Tensor) -> torch.Tensor:
        e = self.edit
        if e.mode == "refine":
            ra = e.refine_alphas.to(base)
            new = base[:, :, e.refine_mapper.to(base.device)].unsqueeze(0) * ra + repl * (1 - ra)
        else:
            new = torch.einsum("hpw,wn->hpn", base, e.replace_matrix.to(base)).unsqueeze(0)
        if e.equalizer is not None:
            new = new * e.equalizer.to(base)
        return new

    def between_steps(self) -> None:
        if not self.attention_store:
            self.attention_store = dict(self.step_store)
        else:
            for key, maps in self.step_store.items():
                for i, m in enumerate(maps):
                    self.attention_store[key][i] = self.attention_store[key][i] + m
        self.step_store = defaultdict(list)

    def local_blend(self, x_t: torch.Tensor) -> torch.Tensor:
        e = self.edit
        if e is None or e.blend_weights is None:
            return x_t
        self.blend_counter += 1
        if self.blend_counter <= int(e.blend_start * e.num_steps):
            return x_t
        cross = [m for key in ("down_cross", "up_cross") for m in self.attention_store.get(key, [])]
        n_blend = min(m.shape[1] for m in cross)  # the coarsest down/up cross-attention maps (SD1.x: 16²)
        ds = int(round((x_t.shape[2] * x_t.shape[3] / n_blend) ** 0.5))
        side_h, side_w = x_t.shape[2] // ds, x_t.shape[3] // ds
        maps = torch.cat([m.reshape(2, -1, 1, side_h, side_w, m.shape[-1]) for m in cross if m.shape[1] == n_blend], 1)
        alpha_layers = e.blend_weights.to(maps).view(2, 1, 1, 1, 1, -1)
        maps = (maps * alpha_layers).sum(-1).mean(1)
        maps = F.max_pool2d(maps, (3, 3), (1, 1), padding=(1, 1))
        mask = F.interpolate(maps, size=x_t.shape[2:])
        mask = mask / mask.max(2, keepdim=True)[0].max(3, keepdim=True)[0]
        mask = mask.gt(e.blend_threshold)
        mask = (mask[:1] + mask).float().to(x_t.device)
        return x_t[:1] + mask * (x_t - x_t[:1])


def _alphas(bb, num_steps):
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config(bb.scheduler.config)
    sched.set_timesteps(num_steps)
    return sched


def next_step(sched, eps, t, x):
    t, t_next = min(int(t) - sched.config.num_train_timesteps // sched.num_inference_steps, 999), int(t)
    a_t = sched.alphas_cumprod[t] if t >= 0 else sched.final_alpha_cumprod
    a_next = sched.alphas_cumprod[t_next]
    x0 = (x - (1 - a_t) ** 0.5 * eps) / a_t ** 0.5
    return a_next ** 0.5 * x0 + (1 - a_next) ** 0.5 * eps


def prev_step(sched, eps, t, x):
    t_prev = int(t) - sched.config.num_train_timesteps // sched.num_inference_steps
    a_t = sched.alphas_cumprod[int(t)]
    a_prev = sched.alphas_cumprod[t_prev] if t_prev >= 0 else sched.final_alpha_cumprod
    x0 = (x - (1 - a_t) ** 0.5 * eps) / a_t ** 0.5
    return a_prev ** 0.5 * x0 + (1 - a_prev) ** 0.5 * eps


def _unet(unet, x, t, ctx):
    return unet(x, t, encoder_hidden_states=ctx)["sample"]


def invert(editor, bb, sample, sched, cond, uncond, inner_steps: int, decode_rec: bool = True):
    """DDIM inversion + the null-text loop as the reference runs them; returns (x_T, null embeddings)."""
    cfg, unet = editor.config, bb.unet
    g = cfg.guidance_scale
    with torch.no_grad():
        z0 = bb.vae.encode(bb.image_to_tensor(sample.image))["latent_dist"].mean * bb.scaling_factor
        if decode_rec:
            bb.decode(z0)  # image_rec, returned by the reference's ddim_inversion and never used by the edit
        traj, x = [z0], z0.clone()
        for i in range(len(sched.timesteps)):
            t = sched.timesteps[len(sched.timesteps) - i - 1]
            x = next_step(sched, _unet(unet, x, t, cond), t, x)
            traj.append(x)
    n = len(sched.timesteps)
    nulls, phi, x = [], uncond.clone(), traj[-1]
    weights_on = inner_steps > 0  # the reference leaves the UNet trainable while it optimises
    if weights_on:
        unet.requires_grad_(True)
    try:
        for i in range(n):
            phi = phi.clone().detach()
            phi.requires_grad = True
            opt = torch.optim.Adam([phi], lr=cfg.learning_rate * (1.0 - cfg.lr_decay * i)) if weights_on else None
            target, t = traj[n - i - 1], sched.timesteps[i]
            with torch.no_grad():
                eps_c = _unet(unet, x, t, cond)
            for _ in range(inner_steps):
                with torch.enable_grad():
                    eps_u = _unet(unet, x, t, phi)
                    loss = F.mse_loss(prev_step(sched, eps_u + g * (eps_c - eps_u), t, x), target)
                    opt.zero_grad()
                    loss.backward()
                opt.step()
                if loss.item() < cfg.early_stop_epsilon + i * cfg.early_stop_slope:
                    break
            nulls.append(phi[:1].detach())
            with torch.no_grad():
                eu, ec = _unet(unet, torch.cat([x, x]), t, torch.cat([phi.detach(), cond])).chunk(2)
                x = prev_step(sched, eu + g * (ec - eu), t, x)
    finally:
        if weights_on:
            unet.requires_grad_(False)
            for p in unet.parameters():
                p.grad = None
    return traj[-1], nulls


@torch.no_grad()
def guidance_forward(bb, control: RefControl, x_T, text, nulls, guidance, num_steps):
    """``p2p_guidance_forward``: CFG DDIM from x_T for each prompt in ``text``; LocalBlend after each step."""
    sched = _alphas(bb, num_steps)
    latents = x_T.expand(text.shape[0], *x_T.shape[1:]).clone()
    with explicit_attention(bb.unet, control):
        for i, t in enumerate(sched.timesteps):
            ctx = torch.cat([nulls[i].expand(*text.shape), text])
            eu, ec = _unet(bb.unet, torch.cat([latents] * 2), t, ctx).chunk(2)
            latents = sched.step(eu + guidance * (ec - eu), t, latents)["prev_sample"]
            latents = control.local_blend(latents)
    return latents


def p2p_reference(editor, sample, method: str, bb=None, cpu_copy: bool = True) -> RefResult:
    """``method``: ``ddim`` (0-iteration null-text loop), ``nti`` (``editor.config.inner_steps``), ``npi``
    (source prompt as the null embedding after a 0-iteration loop)."""
    bb = bb or editor.backbone
    cfg = editor.config
    n = cfg.num_ddim_steps
    sched = _alphas(bb, n)
    edit = editor.controller_for(sample)
    with torch.no_grad():
        text = bb.encode_prompt([sample.source_prompt, sample.target_prompt]).float()
        uncond = bb.encode_prompt([""]).float()
    with count_unet_rows(bb.unet) as rows:
        with explicit_attention(bb.unet):
            x_T, nulls = invert(editor, bb, sample, sched, text[:1], uncond,
                                inner_steps=cfg.inner_steps if method == "nti" else 0)
        if method == "npi":
            from editors.inversion import negative_prompt_embeddings

            nulls = negative_prompt_embeddings(text[:1], uncond, n, getattr(cfg, "npi_interp", 0.0))
        hw = tuple(x_T.shape[-2:])
        rec = guidance_forward(bb, RefControl(bb.unet, 1, hw, None, cpu_copy), x_T, text[:1], nulls,
                               cfg.guidance_scale, n)
        bb.decode(rec)
        latents = guidance_forward(bb, RefControl(bb.unet, 2, hw, edit, cpu_copy), x_T, text, nulls,
                                   cfg.guidance_scale, n)
        images = bb.decode(latents)
    return RefResult(latents=latents[1:2], image=images[1], extras={"unet_evals": rows[0]})
