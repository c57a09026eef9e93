"""``--backbone sd-random``: the real SD1.x architecture (UNet 860M, VAE, CLIP-L text encoder; the IP2P
8-channel and iCD w-embedding variants; random rank-64 iCD adapters) with random weights, built in memory
and registered as a backbone, so timing needs no weights."""
from __future__ import annotations

import torch


def sd_random_backbone(variant: str, device: torch.device, dtype: torch.dtype, fp32_source=None):
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from editors.backbone import DDIM_KWARGS, Backbone, write_clip_tokenizer_files
    from pie_bench.core.paths import cache_root

    if fp32_source is not None:  # same random weights in another dtype
        import copy

        mods = {k: copy.deepcopy(getattr(fp32_source, k)).to(dtype) for k in ("unet", "vae", "text_encoder")}
        tokenizer = fp32_source.tokenizer
    else:
        torch.manual_seed(0)
        with torch.device(device):
            unet = UNet2DConditionModel(
                sample_size=64, in_channels=8 if variant == "ip2p" else 4, out_channels=4, layers_per_block=2,
                block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
                down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                time_cond_proj_dim=512 if variant == "icd" else None)
            vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                                up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512),
                                layers_per_block=2, latent_channels=4, sample_size=512)
            text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072,
                                                num_attention_heads=12, num_hidden_layers=12,
                                                max_position_embeddings=77, hidden_act="quick_gelu",
                                                bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
                                                projection_dim=768))
        mods = {"unet": unet, "vae": vae, "text_encoder": text}
        if dtype != torch.float32:
            mods = {k: m.to(dtype) for k, m in mods.items()}
        tok_dir = cache_root() / "sd-random" / "tokenizer"
        if not (tok_dir / "tokenizer_config.json").exists():
            write_clip_tokenizer_files(tok_dir)
        tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    for m in mods.values():
        m.requires_grad_(False)
        m.eval()
    return Backbone(tokenizer=tokenizer, scheduler=DDIMScheduler(**DDIM_KWARGS), model_id=f"sd-random:{variant}",
                    variant=variant, is_toy=False, device=device, dtype=dtype, resolution=512, **mods)


def register_sd_random(variants, device, dtypes) -> None:
    """Put sd-random backbones into ``editors.backbone``'s cache, so ``--backbone sd-random`` loads them."""
    from editors import backbone as B

    for variant in variants:
        base = None
        for dtype in sorted(set(dtypes), key=lambda d: d != torch.float32):
            bb = sd_random_backbone(variant, device, dtype, fp32_source=base)
            base = base or bb
            for unet_id in (None, B.ICD_TEACHER_UNET):
                B._CACHE[("sd-random", variant, str(device), dtype, unet_id)] = bb


def sd_random_icd_loras(device) -> str:
    """Random rank-64 iCD adapters (the real rank) for the sd-random UNet, as a local adapter folder."""
    from editors.backbone import load_backbone
    from editors.icd import ICDConfig, build_toy_lora_folder

    bb = load_backbone("sd-random", device, torch.float32, variant="icd")
    return str(build_toy_lora_folder(bb.unet, ICDConfig(), rank=64, seed=0).resolve())
