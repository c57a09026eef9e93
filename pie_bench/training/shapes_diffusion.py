"""The ShapesEdit diffusion models: the text-to-image UNet with its CLIP text encoder (Stable Diffusion
layout, optionally continued from an exported model) and the InstructPix2Pix UNet grown from it."""
from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F

from pie_bench.training.shapes_autoencoder import encode, frozen_vae
from pie_bench.training.shapes_config import BATCH, CFG_DROPOUT, text_config, unet_config
from pie_bench.training.shapes_data import edit_batch, scene_batch
from pie_bench.training.shapes_loop import train_loop


def build_text_unet(args, in_channels=4):
    from transformers import CLIPTextConfig, CLIPTextModel
    from diffusers import UNet2DConditionModel

    from pie_bench.datasets.shapes.tokenizer import write_tokenizer

    tok = write_tokenizer(Path(args.workdir) / "tokenizer")
    torch.manual_seed(args.seed + 20)
    text = CLIPTextModel(CLIPTextConfig(**text_config(len(tok))))
    torch.manual_seed(args.seed + 21)
    unet = UNet2DConditionModel(**unet_config(in_channels))
    if args.init_from:
        init_from_export(Path(args.init_from) / "sd", text, unet)
    return tok, text, unet


def init_from_export(folder: Path, text, unet) -> None:
    """Continue from an exported text encoder and UNet (fp16, upcast). Attention layers the exported UNet
    lacks start with a zero output projection, so the grown model computes what the exported one did."""
    from safetensors.torch import load_file

    text.load_state_dict({k: v.float() for k, v in load_file(folder / "text_encoder" / "model.safetensors").items()})
    state = {k: v.float() for k, v in load_file(folder / "unet" / "diffusion_pytorch_model.safetensors").items()}
    missing, unexpected = unet.load_state_dict(state, strict=False)
    if unexpected:
        raise ValueError(f"{folder}: exported UNet has weights this architecture lacks: {unexpected[:3]}")
    blocks = [re.match(r"(.*?\.attentions\.\d+)\.", k) for k in missing]  # the attention block each key is in
    if not all(blocks):
        raise ValueError(f"{folder}: exported UNet misses non-attention weights: "
                         f"{[k for k, b in zip(missing, blocks) if not b][:3]}")
    with torch.no_grad():
        for name in {b.group(1) for b in blocks}:
            proj = unet.get_submodule(name).proj_out
            proj.weight.zero_()
            proj.bias.zero_()


def noise_scheduler():
    from diffusers import DDPMScheduler

    from editors.backbone import DDIM_KWARGS

    kw = {k: v for k, v in DDIM_KWARGS.items() if k in ("beta_start", "beta_end", "beta_schedule",
                                                         "num_train_timesteps", "clip_sample")}
    return DDPMScheduler(**kw)


def snr_weight(sched, t: torch.Tensor) -> torch.Tensor:
    """Per-sample weight (1 + SNR) / SNR on the epsilon MSE, i.e. the v-prediction loss's weighting.

    An error d in the predicted image costs d^2 * SNR in epsilon MSE, so with the plain loss the
    high-noise steps, where the caption decides colour, shape and place, weigh 1/SNR (up to ~200x) less
    than the near-clean steps that only sharpen edges; at step 450 the model denoised as well with a
    wrong caption as with the right one, and 1600 steps left object colour and shape at chance."""
    ab = sched.alphas_cumprod[t].float()
    return 1.0 + (1.0 - ab) / ab


def stage_sd(args):
    vae = frozen_vae(args)
    tok, text, unet = build_text_unet(args)
    sched = noise_scheduler()

    def loss_fn(rng, gen):
        scenes, x = scene_batch(rng, BATCH["sd"])
        prompts = [("" if rng.random() < CFG_DROPOUT else s.caption()) for s in scenes]
        ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids
        z = encode(vae, x)
        noise = torch.randn(z.shape, generator=gen)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(z),), generator=gen)
        pred = unet(sched.add_noise(z, noise, t), t, encoder_hidden_states=text(ids)[0]).sample
        return (snr_weight(sched, t) * (pred - noise).pow(2).mean((1, 2, 3))).mean()

    losses = train_loop("sd", args, {"unet": unet, "text": text},
                        list(unet.parameters()) + list(text.parameters()), loss_fn)
    return tok, text, unet, losses


def stage_ip2p(args, sd_unet, text, tok, stage="ip2p", init_unet=None):
    """InstructPix2Pix's recipe: start from the text-to-image UNet with zero-initialised extra input
    channels for the source latent; drop text, image or both conditions 5% of the time each.

    ``ip2p_continue`` resumes from an exported InstructPix2Pix UNet (``init_unet``) and weighs the loss by
    (1 + SNR) / SNR as the text-to-image stage does: with the plain loss the high-noise steps, where the
    instruction decides what changes, weigh up to ~200x less than the near-clean ones; 800 plain steps
    left attribute accuracy at 45 % and the background at 15 dB PSNR."""
    from diffusers import UNet2DConditionModel

    vae = frozen_vae(args)
    unet = UNet2DConditionModel(**unet_config(8))
    if init_unet is not None:
        unet.load_state_dict(init_unet.state_dict())
    else:
        state = sd_unet.state_dict()
        w = state["conv_in.weight"]
        state["conv_in.weight"] = torch.cat([w, torch.zeros_like(w)], 1)
        unet.load_state_dict(state)
    train_text = getattr(args, "ip2p_train_text", False)
    text.requires_grad_(train_text).train(train_text)
    sched = noise_scheduler()
    weighted = stage == "ip2p_continue"

    def loss_fn(rng, gen):
        src, tgt, instr = edit_batch(rng, BATCH[stage])
        r = rng.random(len(instr))
        prompts = [("" if (0.05 <= ri < 0.10 or ri >= 0.95) else s) for ri, s in zip(r, instr)]
        drop_img = torch.from_numpy((r < 0.05) | (r >= 0.95)).float().view(-1, 1, 1, 1)
        ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids
        with torch.set_grad_enabled(train_text):
            cond = text(ids)[0]
        zs = encode(vae, src) / vae.config.scaling_factor  # IP2P conditions on the unscaled latent mode
        zt = encode(vae, tgt)
        noise = torch.randn(zt.shape, generator=gen)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(zt),), generator=gen)
        inp = torch.cat([sched.add_noise(zt, noise, t), zs * (1 - drop_img)], 1)
        err = (unet(inp, t, encoder_hidden_states=cond).sample - noise).pow(2).mean((1, 2, 3))
        return (snr_weight(sched, t) * err).mean() if weighted else err.mean()

    modules = {"unet": unet, "text": text} if train_text else {"unet": unet}
    losses = train_loop(stage, args, modules, [p for m in modules.values() for p in m.parameters()], loss_fn)
    return unet, losses


def load_exported_ip2p(folder: Path):
    """The text encoder, tokenizer and InstructPix2Pix UNet of an exported models folder, in fp32."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    ip2p = folder / "ip2p"
    unet = UNet2DConditionModel.from_pretrained(ip2p / "unet", torch_dtype=torch.float32)
    text = CLIPTextModel.from_pretrained(ip2p / "text_encoder", torch_dtype=torch.float32)
    return CLIPTokenizer.from_pretrained(ip2p / "tokenizer"), text, unet
