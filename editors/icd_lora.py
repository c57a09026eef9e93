"""iCD's LoRA adapters (Starodubcev et al., NeurIPS 2024): finding the two files (hub repo, folder, or the
authors' tarball names), reading PEFT or kohya layouts, adding them to a UNet with peft (rounded to fp16 as the
authors' loader does), and the seeded toy adapters the toy backbone uses. Its own module to keep
``editors/icd.py`` small; only that editor uses it.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Optional

import torch

from pie_bench.core.errors import ConfigError
from pie_bench.core.paths import cache_root

ICD_LORA_REPO = "dbaranchuk/icd-lora-sd15"
# rank-64 LoRA targets of iCD's training script (training/train_icd_sd15_lora.py)
ICD_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1",
                    "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj")
ICD_LORA_ALPHA = 8.0  # peft's default lora_alpha, which iCD trained with (scale 8/64); its kohya export says 8 too




# The authors' tarballs (README: iCD-SD15_4steps_1.tar.gz) name the same adapters differently; a local folder
# holding either spelling works without renaming.
TARBALL_NAMES = {"forward-19-259-519-779.safetensors": "iCD-SD15-forward_19_259_519_779.safetensors",
                 "reverse-259-519-779-999.safetensors": "iCD-SD15-reverse_259_519_779_999.safetensors"}


def resolve_lora_file(source: str, filename: str) -> Path:
    """A LoRA file from a local dir or a hub repo (hub cache, honours HF_HUB_OFFLINE)."""
    local = Path(source).expanduser()
    if local.is_dir():
        for name in (filename, TARBALL_NAMES.get(filename)):
            if name and (local / name).is_file():
                return local / name
        raise ConfigError(f"icd: {local / filename} not found; the folder must hold the iCD adapter file {filename} "
                          "(or set --editor-arg icd.forward_lora=/icd.reverse_lora= to its file name)")
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(source, filename))
    except Exception as exc:  # offline, missing repo or file: one actionable line
        offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
        raise ConfigError(f"icd: cannot get {filename} from hub repo {source}{offline}: "
                          f"{str(exc).splitlines()[0][:160]}; run `huggingface-cli download {source} {filename}` "
                          "or pass a local folder with --editor-arg icd.lora_source=DIR") from None


def normalise_lora_state_dict(state: dict, unet, default_alpha: float) -> tuple[dict, dict]:
    """-> ({"<module>.lora_A.weight"/"<module>.lora_B.weight": tensor}, {module: alpha}) from a PEFT
    (any of the usual prefixes) or kohya (``lora_unet_*``, ``lora_down/lora_up``, ``.alpha``) state dict."""
    out, alphas = {}, {}
    if any(k.startswith("lora_unet_") for k in state):
        by_flat = {name.replace(".", "_"): name for name, _ in unet.named_modules() if name}
        for key, value in state.items():
            stem, _, leaf = key.partition(".")
            module = by_flat.get(stem[len("lora_unet_"):])
            if module is None:
                raise ConfigError(f"icd: LoRA key {key!r} names no module of this UNet (wrong base model?)")
            if leaf == "alpha":
                alphas[module] = float(value)
            else:
                out[f"{module}.{leaf.replace('lora_down', 'lora_A').replace('lora_up', 'lora_B')}"] = value
    else:
        for key, value in state.items():
            for prefix in ("unet.base_model.model.", "base_model.model.", "unet."):
                if key.startswith(prefix):
                    key = key[len(prefix):]
                    break
            out[key.replace(".default.", ".")] = value
    modules = {k.rsplit(".lora_", 1)[0] for k in out}
    return out, {m: alphas.get(m, default_alpha) for m in modules}


def add_lora_adapter(unet, path: Path, adapter_name: str, default_alpha: float = ICD_LORA_ALPHA,
                     round_to: Optional[torch.dtype] = None) -> None:
    """Load a LoRA file (safetensors) into ``unet`` as the peft adapter ``adapter_name``; ``round_to``
    rounds every tensor to that dtype first (iCD's loader: fp16), then it is held in the UNet's dtype."""
    from peft import LoraConfig, set_peft_model_state_dict
    from safetensors.torch import load_file

    state, alphas = normalise_lora_state_dict(load_file(str(path)), unet, default_alpha)
    modules = sorted(alphas)
    known = dict(unet.named_modules())
    missing = [m for m in modules if m not in known]
    if not modules or missing:
        raise ConfigError(f"icd: {path} is not a LoRA for this UNet "
                          f"({'no lora_A/lora_B weights' if not modules else 'unknown module ' + missing[0]})")
    ranks = {m: int(state[f"{m}.lora_A.weight"].shape[0]) for m in modules}
    rank = max(set(ranks.values()), key=list(ranks.values()).count)
    alpha = max(set(alphas.values()), key=list(alphas.values()).count)
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=modules,
                        rank_pattern={m: r for m, r in ranks.items() if r != rank},
                        alpha_pattern={m: a for m, a in alphas.items() if a != alpha})
    with warnings.catch_warnings():  # peft warns on every adapter after the first; two is the design here
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        unet.add_adapter(config, adapter_name=adapter_name)
    if round_to is not None:
        state = {k: v.to(round_to) for k, v in state.items()}
    result = set_peft_model_state_dict(unet, {k: v.to(unet.dtype) for k, v in state.items()},
                                       adapter_name=adapter_name)
    unexpected = [k for k in result.unexpected_keys if "lora" in k]
    if unexpected:
        raise ConfigError(f"icd: {path}: weights not used by the adapter, e.g. {unexpected[0]}")


def toy_lora_state_dict(unet, rank: int, seed: int) -> dict:
    """Random rank-``rank`` adapter on a copy of ``unet`` created with peft, in the PEFT layout of the real
    iCD files (``unet.base_model.model.<module>.lora_A.weight``)."""
    from peft import LoraConfig, get_peft_model_state_dict

    model = copy.deepcopy(unet).float()
    model.add_adapter(LoraConfig(r=rank, lora_alpha=ICD_LORA_ALPHA, target_modules=list(ICD_LORA_TARGETS)),
                      adapter_name="toy")
    gen = torch.Generator().manual_seed(seed)
    state = get_peft_model_state_dict(model, adapter_name="toy")
    for key, value in state.items():  # peft zero-initialises B; a toy adapter must change the model
        value.copy_(torch.randn(value.shape, generator=gen) * (0.3 if "lora_A" in key else 0.1))
    return {f"unet.base_model.model.{k}": v.contiguous() for k, v in state.items()}


def build_toy_lora_folder(unet, config, rank: int = 4, seed: int = 0) -> Path:
    """Create (once) random forward/reverse adapters for the toy UNet under the real file names of
    ``config`` (an ``ICDConfig``: ``forward_lora``, ``reverse_lora``)."""
    from safetensors.torch import save_file

    digest = hashlib.sha256(json.dumps([dict(unet.config), rank, seed, ICD_LORA_TARGETS], sort_keys=True,
                                       default=str).encode()).hexdigest()[:10]
    folder = cache_root() / "toy" / f"icd-lora-{digest}"
    files = {config.forward_lora: seed, config.reverse_lora: seed + 1}
    if all((folder / f).is_file() for f in files):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for name, s in files.items():
        tmp = folder / f".{name}.tmp{os.getpid()}"
        save_file(toy_lora_state_dict(unet, rank, s), str(tmp), metadata={"format": "pt"})
        os.replace(tmp, folder / name)
    return folder


def adapter_name(kind: str, path: Path, lora_dtype: str = "") -> str:
    """Adapters are named after their file (and the dtype they were rounded to) so a UNet shared by several
    editor instances loads each once."""
    key = str(path.resolve()) + (f"|{lora_dtype}" if lora_dtype else "")
    return f"icd_{kind}_{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def lora_round_dtype(name: str) -> Optional[torch.dtype]:
    """``ICDConfig.lora_dtype`` -> the torch dtype (None: keep the tensors as stored)."""
    if not name:
        return None
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ConfigError(f"icd.lora_dtype={name!r}: expected a floating dtype name (float16, bfloat16, float32) or ''")
    return dtype
