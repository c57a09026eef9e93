"""The editor contract. A new editor is one file: subclass ``Editor``, give it a ``Config``
dataclass (the paper's argument names, PIE-Bench defaults) and implement ``load`` and ``edit``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

import numpy as np
import torch

from pie_bench.core.errors import ConfigError, shown
from pie_bench.core.options import coerce, field_hints
from pie_bench.core.sample import Sample


@dataclass
class EditorConfig:
    """Base config. Subclasses add fields named as in their paper, defaulting to PIE-Bench's settings."""

    seed: int = 1234


@dataclass
class EditOutput:
    """An edited 512x512 uint8 RGB image plus optional extras (e.g. ``unet_evals``, ``reconstruction``)."""

    image: np.ndarray
    extras: dict[str, Any] = field(default_factory=dict)


class SkipSample(Exception):
    """Raised (or returned by ``skip_reason``) when an editor cannot apply to a sample by design,
    e.g. InstructPix2Pix on a sample with no instruction. Recorded as skipped, never scored."""


class Editor:
    """Base class.

    Class attributes:
      name      registry name (``ddim_p2p``)
      Config    the config dataclass
      requires  sample fields the editor reads; a sample lacking one is skipped with that reason
      paper     citation shown by ``list-editors``
      bound     non-empty for the bounds (identity, oracle, blank): what the baseline bounds
    """

    name: ClassVar[str] = "editor"
    Config: ClassVar[type] = EditorConfig
    requires: ClassVar[frozenset[str]] = frozenset({"image"})
    paper: ClassVar[str] = ""
    uses_backbone: ClassVar[bool] = True  # False for baselines that load no model (never labelled toy)
    # a baseline that bounds the table (what it bounds, in a few words) rather than a method: tables
    # group it apart and never mark its numbers best
    bound: ClassVar[str] = ""
    # True when the output depends on the generator (sampled noise): ``bench --seeds K`` runs such an editor
    # K times per sample and scores the diversity of its outputs; a deterministic one runs once and scores 0
    stochastic: ClassVar[bool] = False
    # the backbones it runs on and what they need, for ``list-editors`` (empty: the SD1.x UNet family)
    backbones: ClassVar[str] = ""

    def __init__(self, config: Optional[EditorConfig] = None, **overrides):
        self.config = config if config is not None else self.Config()
        if overrides:
            self.config = apply_overrides(self.config, overrides, self.name)
        self.backbone_id: str = ""
        self.backbone = None  # the loaded backbone (editors.backbone.Backbone), the same name in every editor
        self.is_toy: bool = False
        self.device = torch.device("cpu")
        self.dtype = torch.float32

    @classmethod
    def describe(cls) -> str:
        """The ``list-editors`` line: the sample fields it reads, the paper and, where set, its backbones."""
        text = f"needs {', '.join(sorted(cls.requires))} · {cls.paper}"
        return text + (f" · {cls.backbones}" if cls.backbones else "")

    # -- lifecycle -------------------------------------------------------------------------------
    @classmethod
    def backbone_unavailable(cls, backbone: str) -> Optional[str]:
        """Why this editor cannot run on ``backbone`` by design (``--editors all`` then leaves it out with
        the reason instead of recording a load failure), or None. Here: an editor of the SD1.x UNet family
        (one that declares no ``backbones``) is not run on a rectified-flow alias."""
        if cls.uses_backbone and not cls.backbones:
            from editors.flow_backbone import is_flow_alias

            if is_flow_alias(backbone):
                return f"{cls.name} runs on the SD1.x UNet family; {backbone!r} is a rectified-flow backbone"
        return None

    def bind_backbone(self, backbone: str) -> None:
        """Record which backbone this editor runs on before it loads: the config hash (and so the run
        folder's bookkeeping) includes it, and the toy label follows from it."""
        self.backbone_id = backbone
        self.is_toy = is_toy_spec(backbone) and self.uses_backbone

    def load(self, backbone: str = "toy", device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> None:
        """Load weights. ``backbone`` is ``toy``, ``sd14``, ``sd15``, ``shapes``, a hub id or a local dir."""
        self.bind_backbone(backbone)
        self.device = torch.device(device)
        self.dtype = dtype

    def skip_reason(self, sample: Sample) -> Optional[str]:
        for name in sorted(self.requires):
            if not sample.field_value(name):
                return f"{self.name} needs the sample's {name}, which {sample.dataset or 'this dataset'} does not provide"
        return None

    def edit(self, sample: Sample, generator: torch.Generator) -> EditOutput | np.ndarray:
        """One sample. Implement this, or ``edit_batch`` (this default then edits a batch of one)."""
        if type(self).edit_batch is Editor.edit_batch:
            raise NotImplementedError(f"{type(self).__name__} implements neither edit nor edit_batch")
        return self.edit_batch([sample], [generator])[0]

    def edit_batch(self, samples: list[Sample], generators: list[torch.Generator]) -> list:
        """Edit several samples (``bench --batch-size``). Override it where one batched pass is faster;
        each sample keeps its own generator, so outputs equal ``edit`` one by one up to float reassociation."""
        return [self.edit(s, g) for s, g in zip(samples, generators)]

    @classmethod
    def batches(cls) -> bool:
        """True when the editor overrides ``edit_batch`` (the runner batches only those)."""
        return cls.edit_batch is not Editor.edit_batch

    # -- provenance ------------------------------------------------------------------------------
    def config_dict(self) -> dict:
        return config_to_dict(self.config)

    def config_hash(self) -> str:
        payload = json.dumps({"editor": self.name, "config": self.config_dict(), "backbone": self.backbone_id},
                             sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


def is_toy_spec(backbone: str) -> bool:
    """``toy``, or ``toy-<family>`` (the toy of another backbone family: ``toy-flux``): random weights."""
    return backbone == "toy" or backbone.startswith("toy-")


def inversion_batch_outputs(images, latents, counter, inversion_s: float, cached: int, **extra) -> list:
    """One ``EditOutput`` per row of a batched inversion edit: the call's UNet counts and inversion time shared
    out per sample, the row's final latent, ``extra`` as given; a batch of one reports whole counts."""
    b = len(images)
    outs = []
    for j in range(b):
        ex = {"unet_calls": counter.calls, "unet_evals": counter.evals / b, "inversion_s": inversion_s,
              "inversion_cached": cached / b, **extra, "final_latent": latents[j:j + 1].detach().float().cpu().numpy()}
        if b == 1:
            ex["unet_evals"], ex["inversion_cached"] = int(ex["unet_evals"]), bool(cached)
        else:
            ex["batch_size"] = b
        outs.append(EditOutput(image=np.ascontiguousarray(images[j]), extras=ex))
    return outs


def config_to_dict(config) -> dict:
    out = {}
    for f in dataclasses.fields(config):
        v = getattr(config, f.name)
        out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


def apply_overrides(config, overrides: dict, editor_name: str):
    """Return a copy of ``config`` with ``overrides`` ({field: value or string}) applied and type-checked."""
    names = {f.name: f for f in dataclasses.fields(config)}
    hints = field_hints(type(config))
    changes = {}
    for key, value in overrides.items():
        if key not in names:
            import difflib

            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean {editor_name}.{close[0]}?" if close else f"; valid keys: {', '.join(sorted(names))}"
            raise ConfigError(f"--editor-arg {editor_name}.{shown(key)}: unknown key{hint}")
        changes[key] = coerce(value, hints.get(key), getattr(config, key), f"--editor-arg {editor_name}.{key}")
    return dataclasses.replace(config, **changes)


def as_edit_output(result, sample_id: str, editor: str) -> EditOutput:
    """Validate what ``edit`` returned: 512x512x3 finite uint8 (floats in [0,1] are converted)."""
    if not isinstance(result, EditOutput):
        result = EditOutput(image=result)
    img = result.image
    if hasattr(img, "convert"):  # PIL
        img = np.asarray(img.convert("RGB"))
    if isinstance(img, torch.Tensor):
        img = img.detach().cpu().numpy()
    img = np.asarray(img)
    if img.dtype != np.uint8:
        if not np.all(np.isfinite(img)):
            raise ValueError(f"{editor} returned non-finite pixel values (NaN/inf) for sample {sample_id}")
        img = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
    if img.shape != (512, 512, 3):
        raise ValueError(f"{editor} returned an image of shape {img.shape} for sample {sample_id}; "
                         "editors must return 512x512x3 (PIE-Bench scores exactly 512x512)")
    result.image = img
    return result
