"""The ShapesEdit training recipe as data: image sizes, per-stage steps, batch sizes and learning rates,
and the architecture configs the exported diffusers / open_clip folders are built from."""
from __future__ import annotations

RESOLUTION = 32  # model pixels; the VAE halves it to a 16x16x4 latent
GEN_SIZE = 64  # scene rasterisation size (the dataset's generation resolution)
STAGES = ("vae", "clip", "sd", "ip2p", "vae_colour", "vae_refine", "vae_decoder", "ip2p_continue",
          "icd_teacher", "icd_lora", "flow")  # index seeds the stage; append only
# The committed models: one run of `--stages vae,sd,ip2p,clip,export --threads 2` with these defaults
# (114 min on a 2-core CPU; see the manifest's history). vae_decoder is for --init-from runs.
DEFAULT_STEPS = {"vae": 1000, "vae_colour": 600, "vae_refine": 1500, "vae_decoder": 600, "clip": 120, "sd": 4500,
                 "ip2p": 800, "ip2p_continue": 1400,
                 "icd_teacher": 600, "icd_lora": 600, "flow": 6000}
BATCH = {"vae": 16, "vae_colour": 16, "vae_refine": 16, "vae_decoder": 16, "clip": 64, "sd": 48, "ip2p": 32,
         "ip2p_continue": 32, "icd_teacher": 32, "icd_lora": 8, "flow": 48}
LR = {"vae": 2e-3, "vae_colour": 1e-3, "vae_refine": 5e-4, "vae_decoder": 5e-4, "clip": 1e-3, "sd": 1e-3,
      "ip2p": 5e-4, "ip2p_continue": 5e-4, "icd_teacher": 5e-4, "icd_lora": 3e-4, "flow": 1e-3}
CFG_DROPOUT = 0.1


def vae_config() -> dict:
    return dict(in_channels=3, out_channels=3, block_out_channels=(16, 32), layers_per_block=1, latent_channels=4,
                down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                norm_num_groups=8, sample_size=RESOLUTION)


def text_config(vocab_size: int) -> dict:
    return dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                num_hidden_layers=2, max_position_embeddings=77, bos_token_id=vocab_size - 2,
                eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1, projection_dim=64)


def unet_config(in_channels: int = 4) -> dict:
    return dict(sample_size=RESOLUTION // 2, in_channels=in_channels, out_channels=4, block_out_channels=(32, 64),
                layers_per_block=1, cross_attention_dim=64, attention_head_dim=4, norm_num_groups=8,
                # With cross-attention at the 8x8 level and the mid block only, 1600 steps gave a model that
                # rendered backgrounds but object colour and shape at chance. The caption, attention-pooled
                # into the timestep embedding (diffusers' "text" addition embedding), reaches every ResNet
                # block for 2% more parameters; with it, 2000 steps rendered backgrounds (94%) but object
                # colour and shape still near chance: a pooled caption cannot say which object sits where.
                # Cross-attention at the full 16x16 latent resolution binds words to places.
                down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                addition_embed_type="text", addition_embed_type_num_heads=4,
                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))


def clip_model_config() -> dict:
    return {"embed_dim": 64,
            "vision_cfg": {"image_size": RESOLUTION, "layers": 3, "width": 96, "patch_size": 4, "head_width": 32},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2}}


CLIP_PREPROCESS = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711],
                   "interpolation": "bicubic", "resize_mode": "shortest"}
