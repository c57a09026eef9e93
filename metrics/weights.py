"""Where metric weights come from: real checkpoints (env override, local caches, hub) or toy ones.

Real weights are never fetched silently when offline: a missing file raises a one-line ConfigError
naming the file, where it was looked for, and how to get it. Toy weights are built from tiny configs
in code, seeded, written to disk in the real checkpoint format and read back by the real loaders.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from pathlib import Path
from typing import Callable

import torch

from pie_bench.core.paths import cache_root, offline  # noqa: F401  (re-exported)
from pie_bench.core.errors import ConfigError

BACKBONES = ("toy", "real", "shapes")

# One model per (kind, backbone, device, options) for the whole process: the three CLIP metrics share one
# CLIP, and a run that builds its metrics twice does not reload them.
_MODELS: dict[tuple, object] = {}
_LOCK = threading.Lock()


def toy_dir() -> Path:
    return cache_root() / "toy" / "metrics"


def torch_hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def check_backbone(backbone: str, metric: str) -> None:
    if backbone not in BACKBONES:
        raise ConfigError(f"metric {metric}: unknown --metrics-backbone {backbone!r}; use one of {', '.join(BACKBONES)}")


def shared_model(key: tuple, build: Callable[[], object]):
    with _LOCK:
        if key not in _MODELS:
            _MODELS[key] = build()
        return _MODELS[key]


def clear_models() -> None:
    with _LOCK:
        _MODELS.clear()


def url_checkpoint(env_var: str, url: str, what: str, how: str) -> Path:
    """A checkpoint torch.hub would download from ``url``: ``$env_var`` if set, else the torch hub cache
    (``$TORCH_HOME/hub/checkpoints``), else a download unless offline."""
    override = os.environ.get(env_var)
    if override:
        path = Path(override).expanduser()
        if not path.exists():
            raise ConfigError(f"{env_var}={override}: file does not exist ({what}); {how}")
        return path
    path = torch_hub_checkpoints() / Path(url).name
    if path.is_file():
        return path
    if offline():
        raise ConfigError(f"{what} not found at {path} and downloads are off (HF_HUB_OFFLINE/PIE_BENCH_OFFLINE); "
                          f"{how}, or set {env_var}=/path/to/file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), progress=False)
    except Exception as exc:  # network errors come in many types
        raise ConfigError(f"{what}: could not download {url} ({type(exc).__name__}); {how}, "
                          f"or set {env_var}=/path/to/file") from None
    return path


def load_state_dict_file(path: Path) -> dict:
    """safetensors or a plain torch state dict, never unpickling code."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"{path}: not a readable weight file ({type(exc).__name__}: {exc})") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ConfigError(f"{path}: expected a state dict, found {type(sd).__name__}")
    return sd


def toy_folder(name: str, config: dict, write: Callable[[Path], None]) -> Path:
    """Create (once, race-safe) ``<cache>/toy/metrics/<name>-<digest>`` by calling ``write(tmp_folder)``."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:10]
    folder = toy_dir() / f"{name}-{digest}"
    if (folder / ".complete").exists():
        return folder
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}.{threading.get_ident()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    (tmp / ".complete").write_text(json.dumps(config, sort_keys=True, default=str))
    try:
        os.replace(tmp, folder)
    except OSError:  # another process won the race; its folder is identical
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[0,1] float (B,3,H,W) -> uint8, exactly inverting MetricBatch.from_arrays' /255."""
    return images.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
