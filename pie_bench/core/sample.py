"""The one sample type every loader produces and every editor and metric consumes."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

# PIE-Bench editing types: id -> (folder name, display name). Folder names are the
# official `annotation_images/` sub-folders and the PIE_Bench_pp config names.
EDIT_TYPES: dict[int, tuple[str, str]] = {
    0: ("0_random_140", "random"),
    1: ("1_change_object_80", "change object"),
    2: ("2_add_object_80", "add object"),
    3: ("3_delete_object_80", "delete object"),
    4: ("4_change_attribute_content_40", "change content"),
    5: ("5_change_attribute_pose_40", "change pose"),
    6: ("6_change_attribute_color_40", "change color"),
    7: ("7_change_attribute_material_40", "change material"),
    8: ("8_change_background_80", "change background"),
    9: ("9_change_style_80", "change style"),
}
EDIT_TYPE_BY_NAME = {name: i for i, (_, name) in EDIT_TYPES.items()}
IMAGE_SIZE = 512

_BRACKETS = re.compile(r"[\[\]]")


def strip_brackets(prompt: str) -> str:
    """Remove the `[ ]` that mark edited words, as every official script does before use."""
    return " ".join(_BRACKETS.sub("", prompt).split())


def edit_type_name(edit_type: int) -> str:
    return EDIT_TYPES[edit_type][1]


@dataclass
class Sample:
    """One PIE-format editing sample.

    ``image`` and ``target_image`` are loaded lazily (the loader passes a callable) so that a
    missing or corrupt image file fails that one sample, with its own error, not the dataset.
    Images are uint8 RGB arrays of shape (512, 512, 3); ``mask`` is bool (512, 512) with
    True = region to edit (row-major, as the official decoder).
    """

    id: str
    edit_type: int
    source_prompt_raw: str
    target_prompt_raw: str
    mask: np.ndarray
    instruction: Optional[str] = None
    blended_words: Optional[tuple[str, str]] = None
    dataset: str = ""
    image_path: str = ""
    _image_fn: Optional[Callable[[], np.ndarray]] = field(default=None, repr=False)
    _target_fn: Optional[Callable[[], np.ndarray]] = field(default=None, repr=False)
    extras: dict = field(default_factory=dict)
    # For generated datasets with a scene description (ShapesEdit): (edited image, extras["attributes"]) ->
    # the fraction of requested changes the image shows. Set by the dataset, so metrics need not import it.
    attribute_scorer: Optional[Callable[[np.ndarray, dict], float]] = field(default=None, repr=False)
    _image: Optional[np.ndarray] = field(default=None, repr=False)
    _target: Optional[np.ndarray] = field(default=None, repr=False)

    @property
    def source_prompt(self) -> str:
        return strip_brackets(self.source_prompt_raw)

    @property
    def target_prompt(self) -> str:
        return strip_brackets(self.target_prompt_raw)

    @property
    def edit_type_name(self) -> str:
        return edit_type_name(self.edit_type)

    @property
    def image(self) -> np.ndarray:
        if self._image is None:
            if self._image_fn is None:
                raise ValueError(f"sample {self.id}: no source image")
            self._image = self._image_fn()
        return self._image

    @property
    def has_target_image(self) -> bool:
        return self._target is not None or self._target_fn is not None

    @property
    def target_image(self) -> Optional[np.ndarray]:
        """Exact ground-truth edit, for generated datasets that carry one (ShapesEdit)."""
        if self._target is None and self._target_fn is not None:
            self._target = self._target_fn()
        return self._target

    def field_value(self, name: str):
        """Value of a field an editor may declare in ``Editor.requires``."""
        return {
            "source_prompt": self.source_prompt,
            "target_prompt": self.target_prompt,
            "instruction": self.instruction,
            "blended_words": self.blended_words,
            "image": True,
            "mask": True,
            "target_image": self.has_target_image,
        }[name]
