"""Training-script invariants that need no training: continuing from an exported model (``--init-from``)
starts from exactly the exported model's function, even when the architecture grew attention layers."""
from __future__ import annotations

import argparse

import pytest
import torch

from pie_bench.training.shapes_autoencoder import build_vae
from pie_bench.training.shapes_config import GEN_SIZE, RESOLUTION, unet_config
from pie_bench.training.shapes_data import to_model_pixels, to_model_pixels_batch
from pie_bench.training.shapes_diffusion import build_text_unet
from pie_bench.training.shapes_export import export_sd_folder


def test_grown_unet_starts_as_the_exported_one(tmp_path):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    args = argparse.Namespace(seed=0, workdir=str(tmp_path / "wd"), init_from=None)
    tok, text, _ = build_text_unet(args)
    # the first ShapesEdit UNet: no cross-attention at the 16x16 level
    small = dict(unet_config(), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"))
    old = UNet2DConditionModel(**small).eval()
    with torch.no_grad():  # random but non-trivial weights everywhere, incl. the zero-initialised convs
        for p in old.parameters():
            p.add_(0.05 * torch.randn(p.shape))
    folder = tmp_path / "export"
    export_sd_folder(folder / "sd", old, build_vae(0), text, tok)
    old = UNet2DConditionModel.from_pretrained(folder / "sd" / "unet", torch_dtype=torch.float32).eval()

    args.init_from = str(folder)
    _, text2, grown = build_text_unet(args)
    grown.eval()
    assert sum(p.numel() for p in grown.parameters()) > sum(p.numel() for p in old.parameters())
    ids = tok(["a photo of a large red solid circle at left on white"] * 2, padding="max_length",
              max_length=tok.model_max_length, return_tensors="pt").input_ids
    x, t = torch.randn(2, 4, 16, 16), torch.tensor([50, 700])
    with torch.no_grad():
        ctx = text2(ids)[0]
        text.half().float()  # what the fp16 export kept
        assert torch.equal(ctx, text(ids)[0])
        assert torch.allclose(grown(x, t, encoder_hidden_states=ctx).sample,
                              old(x, t, encoder_hidden_states=ctx).sample, atol=1e-6)


def test_init_from_rejects_a_unet_with_unknown_weights(tmp_path):
    from diffusers import UNet2DConditionModel

    args = argparse.Namespace(seed=0, workdir=str(tmp_path / "wd"), init_from=None)
    tok, text, _ = build_text_unet(args)
    wider = UNet2DConditionModel(**dict(unet_config(), block_out_channels=(32, 64, 64),
                                        down_block_types=("DownBlock2D",) * 3, up_block_types=("UpBlock2D",) * 3))
    export_sd_folder(tmp_path / "export" / "sd", wider, build_vae(0), text, tok)
    args.init_from = str(tmp_path / "export")
    with pytest.raises((ValueError, RuntimeError)):
        build_text_unet(args)


def test_batched_model_pixels_equal_the_harness_resize():
    """Training data must be what the harness feeds the backbone: the 512 px nearest upsample of the
    rendering, LANCZOS-resized by Pillow in one call. The batched two-pass path must equal it bit for bit,
    textures and sketch outlines included (their edges are where rounding would differ)."""
    import numpy as np
    from PIL import Image

    from pie_bench.datasets.shapes.scenes import random_scene, render

    rng = np.random.default_rng(3)
    images = [render(random_scene(rng, p_two=0.5, p_style=0.6), GEN_SIZE) for _ in range(24)]
    f = 512 // GEN_SIZE
    direct = [np.asarray(Image.fromarray(np.repeat(np.repeat(im, f, 0), f, 1)).resize(
        (RESOLUTION, RESOLUTION), Image.LANCZOS)) for im in images]
    batched = to_model_pixels_batch(images)
    assert batched.shape == (24, RESOLUTION, RESOLUTION, 3) and batched.dtype == np.uint8
    np.testing.assert_array_equal(batched, np.stack(direct))
    np.testing.assert_array_equal(to_model_pixels(images[5]), direct[5])
