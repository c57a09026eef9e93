"""The small ShapesEdit open_clip model, trained contrastively on scene captions (for the CLIP metrics)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pie_bench.training.shapes_config import BATCH, CLIP_PREPROCESS, clip_model_config
from pie_bench.training.shapes_data import scene_batch
from pie_bench.training.shapes_loop import train_loop


def stage_clip(args):
    import open_clip

    torch.manual_seed(args.seed + 10)
    model = open_clip.model.CLIP(**clip_model_config())
    mean = torch.tensor(CLIP_PREPROCESS["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_PREPROCESS["std"]).view(1, 3, 1, 1)

    def loss_fn(rng, gen):
        scenes, x = scene_batch(rng, BATCH["clip"])
        images = ((x + 1) / 2 - mean) / std
        text = open_clip.tokenize([s.caption() for s in scenes])
        img_f, txt_f, scale = model(images, text)
        logits = scale * img_f @ txt_f.t()
        labels = torch.arange(len(scenes))
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2

    losses = train_loop("clip", args, {"clip": model}, model.parameters(), loss_fn)
    return model, losses
