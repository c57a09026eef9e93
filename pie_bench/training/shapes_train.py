"""Train the ShapesEdit model family on CPU: a KL autoencoder, a small open_clip model, a latent
text-to-image UNet with its CLIP text encoder (Stable Diffusion layout) and an InstructPix2Pix UNet.

    python -m pie_bench.training.shapes_train --workdir .cache/shapes_train --out pie_bench/models/shapes

On top of exported models (``--init-from``; every other model is copied byte-identical into ``--out``):

    --stages ip2p_continue          # continue the InstructPix2Pix UNet, (1 + SNR) / SNR-weighted
    --stages icd_teacher,icd_lora   # iCD: guidance distillation, then forward/reverse consistency LoRAs
    --stages flow                   # the rectified-flow MMDiT in the SD3 layout (``flow/``)

Every stage is seeded per step (the batch of step i depends only on the seed and i) and checkpoints
to ``--workdir`` every ``--ckpt-every`` steps, so an interrupted run resumes where it stopped and
produces the same weights. ``export`` writes fp16 safetensors in the diffusers / open_clip layouts,
a manifest (sha256, command, git sha, losses) and a sample grid.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from pie_bench.core.paths import SHAPES_MODELS
from pie_bench.training.shapes_autoencoder import frozen_vae, stage_vae, stage_vae_decoder
from pie_bench.training.shapes_clip import stage_clip
from pie_bench.training.shapes_config import DEFAULT_STEPS, STAGES
from pie_bench.training.shapes_diffusion import load_exported_ip2p, stage_ip2p, stage_sd
from pie_bench.training.shapes_export import export, export_ip2p_continued, export_sd_folder, git_sha
from pie_bench.training.shapes_flow import train_flow
from pie_bench.training.shapes_icd import train_icd
from pie_bench.training.shapes_loop import log


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default=".cache/shapes_train")
    p.add_argument("--out", default=str(SHAPES_MODELS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ckpt-every", type=int, default=25)
    p.add_argument("--stages", default="vae,sd,ip2p,clip,export")
    p.add_argument("--init-from", default=None,
                   help="An exported models folder to continue from (its VAE, text encoder and UNet start the "
                        "stages; use the vae_decoder stage instead of vae).")
    p.add_argument("--ip2p-train-text", action="store_true",
                   help="ip2p stages: train the text encoder with the UNet (it saw only captions, never the "
                        "instructions' verbs)")
    for s in STAGES:
        p.add_argument(f"--{s}-steps", type=int, default=DEFAULT_STEPS[s])
    args = p.parse_args(argv)
    args.steps = {s: getattr(args, f"{s}_steps") for s in STAGES}
    torch.set_num_threads(args.threads)
    args.git_sha = git_sha()  # the code that trains, not whatever HEAD is when the export happens
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    stages = args.stages.split(",")
    if args.init_from:  # read now: --out may be the same folder and be overwritten by export
        init = json.loads((Path(args.init_from) / "manifest.json").read_text())
        args.init_lineage = {"folder": str(args.init_from), "files": init["files"],
                             **{k: init.get(k) for k in ("command", "git_sha", "steps", "final_losses", "history",
                                                         "evaluation", "init_from")}}
    losses: dict = {}
    if "vae" in stages or "vae_decoder" in stages:
        vae, losses["vae"], last = stage_vae(args) if "vae" in stages else stage_vae_decoder(args)
        (workdir / "vae_scale.json").write_text(json.dumps({"scaling_factor": vae.config.scaling_factor,
                                                            "stage": last}))
    tok = text = sd_unet = ip2p_unet = clip_model = None
    if "sd" in stages:
        tok, text, sd_unet, losses["sd"] = stage_sd(args)
        if "export" in stages:  # early, so the base model can be evaluated while the rest trains
            export_sd_folder(Path(args.out) / "sd", sd_unet, frozen_vae(args), text, tok)
    if "ip2p" in stages:
        ip2p_unet, losses["ip2p"] = stage_ip2p(args, sd_unet, text, tok)
    if "ip2p_continue" in stages:  # continues the exported --init-from ip2p UNet; writes only the ip2p folder
        if not args.init_from:
            raise SystemExit("--stages ip2p_continue needs --init-from (the exported models to continue)")
        tok, text, init_unet = load_exported_ip2p(Path(args.init_from))
        unet, curve = stage_ip2p(args, None, text, tok, stage="ip2p_continue", init_unet=init_unet)
        export_ip2p_continued(args, unet, frozen_vae(args), text, tok, curve)
        log(workdir, f"continued ip2p exported to {args.out}")
        return
    if "icd_teacher" in stages or "icd_lora" in stages:  # on top of the exported --init-from models
        if not args.init_from:
            raise SystemExit("--stages icd_teacher,icd_lora needs --init-from (the exported models to distil)")
        train_icd(args, workdir)
        return
    if "flow" in stages:  # on top of the exported --init-from models (their VAE and caption encoder)
        if not args.init_from:
            raise SystemExit("--stages flow needs --init-from (the exported models whose VAE and text encoder it uses)")
        train_flow(args, workdir)
        return
    if "clip" in stages:
        clip_model, losses["clip"] = stage_clip(args)
    if "export" in stages:
        export(args, frozen_vae(args), text, tok, sd_unet, ip2p_unet, clip_model, losses)
        log(workdir, f"exported to {args.out}")


if __name__ == "__main__":
    main()
