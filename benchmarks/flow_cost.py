"""What a real rectified-flow run costs, counted rather than guessed: parameters of SD3-medium's and
FLUX.1's transformers and text encoders built from their published configs on the meta device (no
weights), FLOPs of one transformer forward counted with ``FlopCounterMode`` at 512 and 1024 px, and each
flow editor's transformer passes per edit. Memory is bf16 weight bytes; activations are not included.

    python benchmarks/flow_cost.py [--tflops 400]

``--tflops``: the sustained bf16 throughput assumed for the seconds column (an H200 peaks at ~989 dense;
400 is ~40 % of it, typical of a diffusion transformer at batch 1-4).
"""
from __future__ import annotations

import argparse
import json

import torch

SD3_MEDIUM = dict(sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64,
                  num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
                  pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=192)
FLUX_DEV = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
                axes_dims_rope=(16, 56, 56))
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, projection_dim=768)
CLIP_G = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20, projection_dim=1280)
T5_XXL = dict(d_model=4096, d_ff=10240, num_layers=24, num_heads=64, d_kv=64, vocab_size=32128,
              feed_forward_proj="gated-gelu")
# transformer passes per edit (source and target branches, CFG doubling where the model uses CFG)
PASSES = {"sd3": {"flowedit (T 50, n_max 33, CFG both branches)": 4 * 33,
                  "rf_inversion (28 + 28, CFG on the reverse pass)": 28 + 2 * 28},
          "flux": {"flowedit (T 28, n_max 24, guidance-distilled)": 2 * 24,
                   "rf_inversion (28 + 28)": 56, "rf_solver_edit (15 steps, 2nd order, inv + edit)": 4 * 15,
                   "fireflow (8 steps, inv + edit, one pass per step)": 2 * 8 + 2}}


def meta_params(build) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in build().parameters())


def forward_flops(kind: str, px: int) -> int:
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        if kind == "sd3":
            m = SD3Transformer2DModel(**SD3_MEDIUM)
            z = torch.zeros(1, 16, px // 8, px // 8)
            kw = dict(hidden_states=z, timestep=torch.ones(1), encoder_hidden_states=torch.zeros(1, 77 + 256, 4096),
                      pooled_projections=torch.zeros(1, 2048))
        else:
            m = FluxTransformer2DModel(**FLUX_DEV)
            n = (px // 16) ** 2
            kw = dict(hidden_states=torch.zeros(1, n, 64), timestep=torch.ones(1), guidance=torch.ones(1),
                      encoder_hidden_states=torch.zeros(1, 512, 4096), pooled_projections=torch.zeros(1, 768),
                      txt_ids=torch.zeros(512, 3), img_ids=torch.zeros(n, 3))
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            m(**kw)
    return fc.get_total_flops()


def main(argv=None) -> dict:
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tflops", type=float, default=400.0)
    args = p.parse_args(argv)
    enc = {"clip_l": meta_params(lambda: CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_L))),
           "clip_g": meta_params(lambda: CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_G))),
           "t5_xxl": meta_params(lambda: T5EncoderModel(T5Config(**T5_XXL)))}
    trans = {"sd3": meta_params(lambda: SD3Transformer2DModel(**SD3_MEDIUM)),
             "flux": meta_params(lambda: FluxTransformer2DModel(**FLUX_DEV))}
    text = {"sd3": enc["clip_l"] + enc["clip_g"] + enc["t5_xxl"], "flux": enc["clip_l"] + enc["t5_xxl"]}
    out = {"assumed_tflops": args.tflops, "encoders_params": enc, "models": {}}
    for kind in ("sd3", "flux"):
        row = {"transformer_params": trans[kind], "text_encoder_params": text[kind],
               "bf16_weight_GB": round(2 * (trans[kind] + text[kind]) / 1e9, 1), "per_resolution": {}}
        for px in (512, 1024):
            f = forward_flops(kind, px)
            row["per_resolution"][px] = {"forward_TFLOP": round(f / 1e12, 2), "editors": {
                name: {"passes": n, "TFLOP": round(n * f / 1e12, 1), "seconds_at_assumed": round(n * f / 1e12 / args.tflops, 2)}
                for name, n in PASSES[kind].items()}}
        out["models"][kind] = row
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
