"""The InstructPix2Pix continuation stage: what it trains and what its export records."""
from __future__ import annotations

import json
from argparse import Namespace

import pytest
import torch

from pie_bench.core.paths import SHAPES_MODELS
from pie_bench.training.shapes_config import DEFAULT_STEPS
from pie_bench.training.shapes_diffusion import load_exported_ip2p, stage_ip2p


def _args(tmp_path, train_text: bool) -> Namespace:
    return Namespace(workdir=str(tmp_path), init_from=str(SHAPES_MODELS), seed=0, ckpt_every=25,
                     steps={**DEFAULT_STEPS, "ip2p_continue": 2}, ip2p_train_text=train_text)


def _state(m) -> dict:
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


@pytest.mark.parametrize("train_text", [False, True])
def test_continue_trains_the_text_encoder_only_when_asked(tmp_path, train_text):
    tok, text, init = load_exported_ip2p(SHAPES_MODELS)
    text0, unet0 = _state(text), _state(init)
    unet, losses = stage_ip2p(_args(tmp_path, train_text), None, text, tok, stage="ip2p_continue", init_unet=init)
    assert losses and all(torch.isfinite(torch.tensor(v)) for _, v in losses)
    assert any(not torch.equal(unet0[k], v) for k, v in unet.state_dict().items())
    text_changed = [k for k, v in text.state_dict().items() if not torch.equal(text0[k], v)]
    assert bool(text_changed) == train_text
    saved = torch.load(tmp_path / "ip2p_continue.pt", weights_only=True)["modules"]
    assert ("text" in saved) == train_text  # a resumed run restores the encoder it trained


def test_bundled_ip2p_record():
    manifest = json.loads((SHAPES_MODELS / "manifest.json").read_text())
    rec = manifest["ip2p_continue"]
    assert rec["command"].startswith("python -m pie_bench.training.shapes_train")
    assert "--ip2p-train-text" in rec["command"] and rec["train_text"] is True
    # the bundled InstructPix2Pix has its own text encoder now; the text-to-image one is untouched
    files = manifest["files"]
    assert files["ip2p/text_encoder/model.safetensors"] != files["sd/text_encoder/model.safetensors"]
    assert rec["previous"]["steps"] == 1400  # the earlier continuation it builds on stays on record
