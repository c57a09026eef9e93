"""The ShapesEdit flow model: a small MMDiT (``SD3Transformer2DModel``) trained with the rectified-flow
loss on the ShapesEdit scenes, exported in Stable Diffusion 3's folder layout, so that ``--backbone
shapes-flow`` loads through ``StableDiffusion3Pipeline`` exactly as SD3 does.

    python -m pie_bench.training.shapes_train --init-from pie_bench/models/shapes --stages flow

What it shares with the exported SD model (``--init-from``): the autoencoder (its config gains
``shift_factor`` 0, as SD3's VAE config has one) and the caption encoder. SD3 has two CLIP encoders with
projection and a T5; here both CLIP slots hold the SD model's trained encoder, frozen, with an identity
projection, and the T5 slot is empty (``text_encoder_3`` None: the pipeline then feeds zeros for the T5
tokens, as SD3 does when loaded without T5). The number of those zero tokens, ``max_sequence_length``,
is recorded in the folder's ``pie_bench.json``; the harness passes it to the
pipeline's ``encode_prompt``.

Loss: SD3's — x_t = (1 - s) x_0 + s n, the transformer predicts n - x_0, s drawn logit-normal (0, 1),
timestep 1000 s; the caption dropped 10 % of the time (classifier-free guidance).
"""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import torch

from pie_bench.training.shapes_config import BATCH, CFG_DROPOUT, RESOLUTION
from pie_bench.training.shapes_data import scene_batch
from pie_bench.training.shapes_loop import train_loop

MAX_SEQUENCE_LENGTH = 4  # zero "T5" tokens after the 77 CLIP ones (SD3's default is 256, with T5 loaded)
FLOW_SHIFT = 1.0  # SD3 uses 3.0 at 1024 px; a 16x16 latent needs no shift towards noise


def transformer_config(text_dim: int) -> dict:
    return dict(sample_size=RESOLUTION // 2, patch_size=2, in_channels=4, out_channels=4, num_layers=6,
                attention_head_dim=16, num_attention_heads=6, joint_attention_dim=2 * text_dim,
                caption_projection_dim=96, pooled_projection_dim=2 * text_dim, pos_embed_max_size=RESOLUTION // 2)


def projected_text_encoder(sd_folder: Path):
    """The SD model's CLIP text encoder as a ``CLIPTextModelWithProjection`` with an identity projection."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection
    from safetensors.torch import load_file

    cfg = CLIPTextConfig.from_pretrained(sd_folder / "text_encoder")
    cfg.projection_dim = cfg.hidden_size
    model = CLIPTextModelWithProjection(cfg).float()  # the saved config says fp16; train and export from fp32
    # CLIPTextModel saves its weights without the "text_model." prefix the projection model's names have
    state = {(k if k.startswith("text_model.") else "text_model." + k): v.float()
             for k, v in load_file(sd_folder / "text_encoder" / "model.safetensors").items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.startswith("text_projection")]:
        raise ValueError(f"{sd_folder}: text encoder weights do not fit ({missing[:2]}, {unexpected[:2]})")
    with torch.no_grad():
        model.text_projection.weight.copy_(torch.eye(cfg.hidden_size))
    return model.requires_grad_(False).eval()


def flow_pipeline(transformer, vae, text, tok):
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    return StableDiffusion3Pipeline(transformer=transformer, vae=vae, text_encoder=text, tokenizer=tok,
                                    text_encoder_2=text, tokenizer_2=tok, text_encoder_3=None, tokenizer_3=None,
                                    scheduler=FlowMatchEulerDiscreteScheduler(shift=FLOW_SHIFT))


def stage_flow(args, vae, tok, text):
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(args.seed + 40)
    transformer = SD3Transformer2DModel(**transformer_config(text.config.hidden_size))
    vae = copy.deepcopy(vae)
    vae.register_to_config(shift_factor=0.0)
    pipe = flow_pipeline(transformer, vae, text, tok)

    def loss_fn(rng, gen):
        scenes, x = scene_batch(rng, BATCH["flow"])
        prompts = [("" if rng.random() < CFG_DROPOUT else s.caption()) for s in scenes]
        with torch.no_grad():
            emb, _, pooled, _ = pipe.encode_prompt(prompts, None, None, do_classifier_free_guidance=False,
                                                   max_sequence_length=MAX_SEQUENCE_LENGTH, device="cpu")
            z0 = (vae.encode(x).latent_dist.mean - vae.config.shift_factor) * vae.config.scaling_factor
        noise = torch.randn(z0.shape, generator=gen)
        s = torch.sigmoid(torch.randn(len(z0), generator=gen)).view(-1, 1, 1, 1)
        zt = (1 - s) * z0 + s * noise
        v = transformer(hidden_states=zt, timestep=s.flatten() * 1000, encoder_hidden_states=emb,
                        pooled_projections=pooled).sample
        return (v - (noise - z0)).pow(2).mean()

    losses = train_loop("flow", args, {"transformer": transformer}, transformer.parameters(), loss_fn)
    return transformer, vae, losses


def export_flow_folder(folder: Path, transformer, vae, text) -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler

    from editors.flow_backbone import sd3_model_index
    from pie_bench.datasets.shapes.tokenizer import write_tokenizer
    from pie_bench.training.shapes_export import strip_source_path

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for name, m in (("transformer", transformer), ("vae", vae), ("text_encoder", text), ("text_encoder_2", text)):
        copy.deepcopy(m).to(torch.float16).save_pretrained(folder / name, safe_serialization=True)
        strip_source_path(folder / name / "config.json")
    for name in ("tokenizer", "tokenizer_2"):
        write_tokenizer(folder / name)
    FlowMatchEulerDiscreteScheduler(shift=FLOW_SHIFT).save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps(sd3_model_index(), indent=2) + "\n")
    (folder / "pie_bench.json").write_text(json.dumps({"max_sequence_length": MAX_SEQUENCE_LENGTH}) + "\n")


def train_flow(args, workdir: Path) -> None:
    from transformers import CLIPTokenizer

    from pie_bench.training.shapes_autoencoder import frozen_vae
    from pie_bench.training.shapes_config import LR
    from pie_bench.training.shapes_export import export_continued
    from pie_bench.training.shapes_loop import log

    sd = Path(args.init_from) / "sd"
    tok = CLIPTokenizer.from_pretrained(sd / "tokenizer")
    text = projected_text_encoder(sd)
    transformer, vae, losses = stage_flow(args, frozen_vae(args), tok, text)
    export_continued(args, "flow", lambda out: export_flow_folder(out / "flow", transformer, vae, text), {
        "steps": args.steps["flow"], "batch": BATCH["flow"], "lr": LR["flow"],
        "transformer": transformer_config(text.config.hidden_size),
        "parameters": sum(p.numel() for p in transformer.parameters()),
        "loss": "rectified flow (v = noise - x0), logit-normal(0, 1) sigma", "shift": FLOW_SHIFT,
        "max_sequence_length": MAX_SEQUENCE_LENGTH, "cfg_dropout": CFG_DROPOUT,
        "final_loss": losses[-1][1] if losses else None, "loss_curve": losses})
    log(workdir, f"flow model exported to {args.out}/flow")
