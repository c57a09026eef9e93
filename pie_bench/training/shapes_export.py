"""Exporting the trained ShapesEdit models: fp16 safetensors in the diffusers (``sd``, ``ip2p``) and
open_clip (``clip``) layouts, and a manifest with every file's sha256, the command, the git sha and the
loss curves."""
from __future__ import annotations

import copy
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from pie_bench.datasets.shapes.tokenizer import write_tokenizer
from pie_bench.training.shapes_config import (BATCH, CFG_DROPOUT, CLIP_PREPROCESS, GEN_SIZE, LR, RESOLUTION,
                                              clip_model_config)
from pie_bench.training.shapes_loop import log
from pie_bench.training.shapes_sampling import sample_grid


def model_index() -> dict:
    return {"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1",
            "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
            "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
            "scheduler": ["diffusers", "DDIMScheduler"], "safety_checker": [None, None],
            "feature_extractor": [None, None], "requires_safety_checker": False}


def export_sd_folder(folder: Path, unet, vae, text, tok) -> None:
    from diffusers import DDIMScheduler

    from editors.backbone import DDIM_KWARGS

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for name, m in (("unet", unet), ("vae", vae), ("text_encoder", text)):
        copy.deepcopy(m).to(torch.float16).save_pretrained(folder / name, safe_serialization=True)
        strip_source_path(folder / name / "config.json")
    write_tokenizer(folder / "tokenizer")  # vocab.json + merges.txt (what CLIPTokenizer reads) and tokenizer.json
    DDIMScheduler(**DDIM_KWARGS).save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps(model_index(), indent=2) + "\n")


def strip_source_path(config: Path) -> None:
    """A model loaded with from_pretrained saves the folder it came from (``_name_or_path``): a path of the
    training machine, not part of the model."""
    data = json.loads(config.read_text())
    if data.pop("_name_or_path", None) is not None:
        config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def export_clip(folder: Path, model) -> None:
    from safetensors.torch import save_file

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": clip_model_config(), "preprocess_cfg": CLIP_PREPROCESS}, indent=2) + "\n")
    save_file({k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()},
              str(folder / "open_clip_model.safetensors"))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def git_sha() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], text=True, stderr=subprocess.DEVNULL).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def file_table(out: Path) -> dict:
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name not in ("manifest.json", "samples.png"))
    return {str(p.relative_to(out)): {"sha256": sha256(p), "bytes": p.stat().st_size} for p in files}


def export_continued(args, section: str, write, record: dict) -> None:
    """Write models trained on top of ``--init-from`` into ``--out`` (a copy of it; every other model stays
    byte-identical) with ``write(out)``, and record the run in the manifest under ``section`` beside the run
    that made the rest."""
    src, out = Path(args.init_from), Path(args.out)
    if src.resolve() != out.resolve():
        shutil.copytree(src, out, dirs_exist_ok=True)
    before = json.loads((src / "manifest.json").read_text())
    write(out)
    manifest = dict(before)
    manifest[section] = {"command": "python -m pie_bench.training.shapes_train " + " ".join(sys.argv[1:]),
                         "git_sha": args.git_sha, "torch": torch.__version__, "threads": torch.get_num_threads(),
                         **record}
    if section in before:  # a run continuing an earlier run of the same stage keeps its record
        manifest[section]["previous"] = before[section]
    manifest["files"] = file_table(out)
    manifest["total_bytes"] = sum(f["bytes"] for f in manifest["files"].values())
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def export_ip2p_continued(args, unet, vae, text, tok, losses: list) -> None:
    before = json.loads((Path(args.init_from) / "manifest.json").read_text())["files"]
    export_continued(args, "ip2p_continue", lambda out: export_sd_folder(out / "ip2p", unet, vae, text, tok), {
        "steps": args.steps["ip2p_continue"], "batch": BATCH["ip2p_continue"], "lr": LR["ip2p_continue"],
        "loss": "(1 + SNR) / SNR-weighted epsilon MSE", "final_loss": losses[-1][1] if losses else None,
        "train_text": bool(getattr(args, "ip2p_train_text", False)), "loss_curve": losses,
        "ip2p_before": {k: v for k, v in before.items() if k.startswith(("ip2p/unet/", "ip2p/text_encoder/"))}})


def export(args, vae, text, tok, sd_unet, ip2p_unet, clip_model, losses: dict) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    export_sd_folder(out / "sd", sd_unet, vae, text, tok)
    if ip2p_unet is not None:
        export_sd_folder(out / "ip2p", ip2p_unet, vae, text, tok)
    if clip_model is not None:
        export_clip(out / "clip", clip_model)
    manifest = {
        "command": "python -m pie_bench.training.shapes_train " + " ".join(sys.argv[1:]),
        "git_sha": args.git_sha, "seed": args.seed, "steps": args.steps, "batch": BATCH, "lr": LR,
        "resolution": RESOLUTION, "generation_size": GEN_SIZE, "cfg_dropout": CFG_DROPOUT,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "init_from": getattr(args, "init_lineage", None),
        "final_losses": {k: (v[-1][1] if v else None) for k, v in losses.items()},
        "loss_curves": losses,
        "files": file_table(out),
    }
    manifest["total_bytes"] = sum(f["bytes"] for f in manifest["files"].values())
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    try:
        from editors import backbone as backbone_mod

        backbone_mod._CACHE.clear()
        sample_grid(out, args.seed)
    except Exception as exc:  # the grid is a convenience; the weights are already written
        log(Path(args.workdir), f"sample grid failed: {exc}")
