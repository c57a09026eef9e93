"""The training loop every ShapesEdit stage runs: per-step seeded batches, warm-up / decay learning rate,
gradient clipping, a log line every 25 steps, and checkpoints that make an interrupted run resume where
it stopped and produce the same weights."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

from pie_bench.training.shapes_config import LR, STAGES
from pie_bench.training.shapes_data import step_rng


def log(workdir: Path, text: str) -> None:
    line = f"{time.strftime('%H:%M:%S')} {text}"
    print(line, flush=True)
    with open(workdir / "train.log", "a") as f:
        f.write(line + "\n")



def save_ckpt(path: Path, step: int, modules: dict, opt, losses: list) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"step": step, "modules": {k: m.state_dict() for k, m in modules.items()},
                "opt": opt.state_dict(), "losses": losses}, tmp)
    os.replace(tmp, path)


def load_ckpt(path: Path, modules: dict, opt) -> tuple[int, list]:
    if not path.exists():
        return 0, []
    ck = torch.load(path, weights_only=True)
    for k, m in modules.items():
        m.load_state_dict(ck["modules"][k])
    opt.load_state_dict(ck["opt"])
    return int(ck["step"]), list(ck["losses"])


def lr_at(step: int, total: int, base: float) -> float:
    """Short warm-up, flat, then linear decay over the last 40% (a cheap stand-in for EMA)."""
    warm = min(50, total // 10)
    if step < warm:
        return base * (step + 1) / warm
    decay_start = int(total * 0.6)
    if step < decay_start:
        return base
    return base * max(0.05, 1 - (step - decay_start) / max(1, total - decay_start))


def train_loop(stage: str, args, modules: dict, params, loss_fn) -> list:
    workdir = Path(args.workdir)
    total = args.steps[stage]
    opt = torch.optim.AdamW(params, lr=LR[stage], weight_decay=0.0)
    ck = workdir / f"{stage}.pt"
    step, losses = load_ckpt(ck, modules, opt)
    if step >= total:
        log(workdir, f"[{stage}] done already ({step} steps)")
        return losses
    log(workdir, f"[{stage}] {'resuming at' if step else 'starting'} step {step}/{total}")
    for m in modules.values():
        m.train()
    t0, window = time.time(), []
    while step < total:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, LR[stage])
        rng = step_rng(args.seed, stage, step)
        gen = torch.Generator().manual_seed(args.seed * 1_000_003 + STAGES.index(stage) * 100_003 + step)
        loss = loss_fn(rng, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], 1.0)
        opt.step()
        step += 1
        window.append(float(loss.detach()))
        if step % 25 == 0 or step == total:
            mean = float(np.mean(window))
            losses.append([step, mean])
            window = []
            rate = (time.time() - t0) / 25
            t0 = time.time()
            log(workdir, f"[{stage}] step {step}/{total} loss {mean:.4f} ({rate:.2f} s/step, "
                         f"eta {rate * (total - step) / 60:.1f} min)")
        if step % args.ckpt_every == 0 or step == total:
            save_ckpt(ck, step, modules, opt, losses)
    for m in modules.values():
        m.eval()
    return losses
