"""ShapesEdit scenes: a tiny, fully specified world of flat shapes whose captions say everything
that is drawn, so that any edit has one exact ground-truth image and one exact mask.

Geometry is in frame fractions and rasterised at pixel centres without anti-aliasing: a scene
renders identically at any size, and an object's region is a hard boolean mask.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

SHAPES = ("circle", "square", "triangle", "diamond")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 45, 45), "green": (40, 165, 65), "blue": (45, 85, 215),
    "yellow": (235, 205, 45), "purple": (145, 65, 195), "orange": (240, 135, 30),
}
TEXTURES = ("solid", "striped", "checked")
SIZES: dict[str, float] = {"small": 0.14, "large": 0.21}  # "radius" as a fraction of the frame
POSITIONS: dict[str, tuple[float, float]] = {  # (x, y) centres
    "left": (0.27, 0.5), "right": (0.73, 0.5), "top": (0.5, 0.27), "bottom": (0.5, 0.73), "center": (0.5, 0.5)}
# two-object scenes use one of these position pairs, so objects never overlap
PAIRS = (("left", "right"), ("top", "bottom"))
PARTNER = {a: b for a, b in PAIRS} | {b: a for a, b in PAIRS}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (238, 238, 232), "black": (28, 28, 32), "gray": (125, 125, 125), "sand": (205, 180, 130)}
STYLES = ("photo", "sketch", "negative")

STRIPE_PERIOD = 0.125  # texture period as a fraction of the frame (8 px at 64)
SHADE = 0.45  # texture's second colour = object colour x SHADE
OUTLINE = 0.07  # sketch outline width, fraction of the frame (2 px at the 32 px model resolution)

# every word the captions and instructions use: the shapes tokenizer's vocabulary
FUNCTION_WORDS = ("a", "of", "at", "on", "and", "the", "to", "into", "make", "turn", "add", "remove", "move",
                  "change", "background", "it")
VOCABULARY = tuple(dict.fromkeys(FUNCTION_WORDS + SHAPES + tuple(COLOURS) + TEXTURES + tuple(SIZES)
                                 + tuple(POSITIONS) + tuple(BACKGROUNDS) + STYLES))


@dataclass(frozen=True)
class Obj:
    shape: str
    colour: str
    texture: str = "solid"
    size: str = "large"
    position: str = "center"

    def words(self) -> str:
        return f"a {self.size} {self.colour} {self.texture} {self.shape} at {self.position}"


@dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]
    background: str = "white"
    style: str = "photo"

    def caption(self) -> str:
        return f"a {self.style} of " + " and ".join(o.words() for o in self.objects) + f" on {self.background}"

    def to_dict(self) -> dict:
        return {"objects": [dataclasses.asdict(o) for o in self.objects], "background": self.background,
                "style": self.style}

    @classmethod
    def from_dict(cls, d: dict) -> "Scene":
        return cls(objects=tuple(Obj(**o) for o in d["objects"]), background=d["background"], style=d["style"])

    def replace_object(self, k: int, **changes) -> "Scene":
        objs = list(self.objects)
        objs[k] = dataclasses.replace(objs[k], **changes)
        return dataclasses.replace(self, objects=tuple(objs))


def parse_caption(caption: str) -> Scene:
    """Inverse of ``Scene.caption`` (the base model's prompts are scenes, so its outputs can be scored)."""
    words = caption.split()
    if len(words) < 4 or words[0] != "a" or words[2] != "of" or words[-2] != "on":
        raise ValueError(f"not a ShapesEdit caption: {caption!r}")
    style, background = words[1], words[-1]
    body = words[3:-2]
    objs = []
    while body:
        if body[0] == "and":
            body = body[1:]
        _, size, colour, texture, shape, _, position = body[:7]
        objs.append(Obj(shape, colour, texture, size, position))
        body = body[7:]
    return Scene(tuple(objs), background, style)


# ---------------------------------------------------------------------------------------------
# rasterisation


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(size) + 0.5) / size
    return np.meshgrid(c, c, indexing="xy")  # x[row, col] = column coordinate


def object_region(obj: Obj, size: int) -> np.ndarray:
    """Bool (size, size) region of one object, True inside."""
    x, y = _grid(size)
    cx, cy = POSITIONS[obj.position]
    r = SIZES[obj.size]
    dx, dy = x - cx, y - cy
    if obj.shape == "circle":
        return dx * dx + dy * dy <= r * r
    if obj.shape == "square":
        return (np.abs(dx) <= 0.85 * r) & (np.abs(dy) <= 0.85 * r)
    if obj.shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= 1.2 * r
    if obj.shape == "triangle":  # apex up
        top, base = -r, 0.8 * r
        return (dy <= base) & (np.abs(dx) <= 1.05 * r * (dy - top) / (base - top))
    raise ValueError(f"unknown shape {obj.shape!r}")


def _texture_shade(obj: Obj, size: int) -> np.ndarray:
    """Bool: where the texture draws the darker shade."""
    x, y = _grid(size)
    if obj.texture == "solid":
        return np.zeros((size, size), dtype=bool)
    u = np.floor(x / STRIPE_PERIOD * 2).astype(int)
    if obj.texture == "striped":
        return u % 2 == 1
    v = np.floor(y / STRIPE_PERIOD * 2).astype(int)
    return (u + v) % 2 == 1


def _outline(region: np.ndarray, size: int) -> np.ndarray:
    """Inner band of the region, ``OUTLINE`` of the frame wide (a box erosion by that many pixels)."""
    k = max(1, int(round(OUTLINE * size)))
    inner = region.copy()
    for _ in range(k):
        shrunk = inner.copy()
        shrunk[1:, :] &= inner[:-1, :]
        shrunk[:-1, :] &= inner[1:, :]
        shrunk[:, 1:] &= inner[:, :-1]
        shrunk[:, :-1] &= inner[:, 1:]
        shrunk[0, :] = shrunk[-1, :] = shrunk[:, 0] = shrunk[:, -1] = False
        inner = shrunk
    return region & ~inner


def render(scene: Scene, size: int = 64) -> np.ndarray:
    """uint8 (size, size, 3)."""
    bg = np.array(BACKGROUNDS[scene.background], dtype=np.float64)
    if scene.style == "sketch":  # paper: the background washed towards white, objects as outlines
        bg = bg * 0.4 + 255 * 0.6
    img = np.empty((size, size, 3), dtype=np.float64)
    img[:] = bg
    for obj in scene.objects:
        region = object_region(obj, size)
        colour = np.array(COLOURS[obj.colour], dtype=np.float64)
        if scene.style == "sketch":
            img[_outline(region, size)] = colour
            continue
        img[region] = colour
        img[region & _texture_shade(obj, size)] = colour * SHADE
    if scene.style == "negative":
        img = 255 - img
    return np.round(img).astype(np.uint8)


def objects_mask(scene: Scene, indices, size: int) -> np.ndarray:
    m = np.zeros((size, size), dtype=bool)
    for k in indices:
        m |= object_region(scene.objects[k], size)
    return m


# ---------------------------------------------------------------------------------------------
# random scenes


def random_object(rng: np.random.Generator, position: str, **fixed) -> Obj:
    kw = dict(shape=SHAPES[rng.integers(len(SHAPES))], colour=list(COLOURS)[rng.integers(len(COLOURS))],
              texture=TEXTURES[rng.integers(len(TEXTURES))], size=list(SIZES)[rng.integers(len(SIZES))],
              position=position)
    kw.update(fixed)
    return Obj(**kw)


def random_scene(rng: np.random.Generator, n_objects: Optional[int] = None, style: Optional[str] = None,
                 p_two: float = 0.3, p_style: float = 0.2) -> Scene:
    """One or two objects; two-object scenes sit on a left/right or top/bottom pair."""
    if n_objects is None:
        n_objects = 2 if rng.random() < p_two else 1
    if n_objects == 1:
        objs = (random_object(rng, list(POSITIONS)[rng.integers(len(POSITIONS))]),)
    else:
        pair = PAIRS[rng.integers(len(PAIRS))]
        objs = tuple(random_object(rng, p) for p in pair)
    if style is None:
        style = "photo" if rng.random() >= p_style else STYLES[1 + rng.integers(len(STYLES) - 1)]
    return Scene(objs, list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))], style)


def other(rng: np.random.Generator, choices, current):
    opts = [c for c in choices if c != current]
    return opts[rng.integers(len(opts))]
