"""Reading a scene attribute off an image by analysis by synthesis: render the intended scene with
that one attribute set to every value it can take, and call the attribute right when the image is
nearest (MSE) to the rendering with the intended value. The candidates differ only where the
attribute shows, so the pixels elsewhere add the same error to each and cannot decide the vote."""
from __future__ import annotations

import dataclasses
import itertools
from typing import Optional, Sequence

import numpy as np

from pie_bench.datasets.shapes.edits import ATTRIBUTE_VALUES
from pie_bench.datasets.shapes.scenes import Scene, render

COMPARE_SIZE = 64


def downsample(image: np.ndarray, size: int = COMPARE_SIZE) -> np.ndarray:
    """(H, W, 3) uint8 or [0,1] float -> (size, size, 3) float in [0,1] by block averaging."""
    img = np.asarray(image, dtype=np.float64)
    if img.max() > 1.0 + 1e-6 or image.dtype == np.uint8:
        img = img / 255.0
    f = img.shape[0] // size
    if f * size != img.shape[0]:
        raise ValueError(f"image side {img.shape[0]} is not a multiple of {size}")
    return img.reshape(size, f, size, f, 3).mean(axis=(1, 3))


def _set(scene: Scene, change: dict, value) -> Scene:
    if change["attribute"] in ("background", "style"):
        return dataclasses.replace(scene, **{change["attribute"]: value})
    return scene.replace_object(change["object"], **{change["attribute"]: value})


def candidates(source: Scene, target: Scene, change: dict, others: Sequence[dict] = ()) -> list[tuple[object, Scene]]:
    """(value, scene) pairs: the target scene with ``change['attribute']`` set to each value it can take.

    ``others``: the sample's other changes (random edits compose two). Each of them takes both its
    source and its target value in the candidates, so that reading one attribute does not depend on
    whether the other change happened (a red solid square is not mistaken for "striped" just because
    a dark-blue stripe is nearer to red than blue is)."""
    attr, k = change["attribute"], change.get("object")
    if attr == "add":
        without = dataclasses.replace(target, objects=tuple(o for i, o in enumerate(target.objects) if i != k))
        return [(True, target), (False, without)]
    if attr == "delete":
        return [(True, target), (False, source)]
    if attr == "position" and len(target.objects) > 1:  # two-object moves are swaps
        return [(change["to"], target), (change["from"], source)]
    out = []
    for value in ATTRIBUTE_VALUES[attr]:
        base = _set(target, change, value)
        for combo in itertools.product(*[(o["from"], o["to"]) for o in others]):
            scene = base
            for o, v in zip(others, combo):
                scene = _set(scene, o, v)
            out.append((value, scene))
    return out


def read_attribute(image_small: np.ndarray, options: Sequence[tuple[object, Scene]]) -> object:
    """The value whose rendering is nearest to the (downsampled) image."""
    size = image_small.shape[0]
    best, best_err = None, np.inf
    for value, scene in options:
        err = float(np.mean((render(scene, size) / 255.0 - image_small) ** 2))
        if err < best_err:
            best, best_err = value, err
    return best


def change_hits(image: np.ndarray, attributes: dict) -> list[bool]:
    """One bool per recorded change: does the image show the target value of that attribute?"""
    source, target = Scene.from_dict(attributes["source"]), Scene.from_dict(attributes["target"])
    small = downsample(image)
    changes = attributes["changes"]
    hits = []
    for i, change in enumerate(changes):
        others = [c for j, c in enumerate(changes) if j != i and c["attribute"] in ATTRIBUTE_VALUES]
        expected = True if change["attribute"] in ("add", "delete") else change["to"]
        hits.append(read_attribute(small, candidates(source, target, change, others)) == expected)
    return hits


def attribute_accuracy(image: np.ndarray, attributes: Optional[dict]) -> float:
    """Fraction of the sample's changes the image shows (NaN without attributes)."""
    if not attributes or not attributes.get("changes"):
        return float("nan")
    return float(np.mean(change_hits(image, attributes)))


def prompt_hits(image: np.ndarray, scene: Scene, attributes=("colour", "shape")) -> dict[str, bool]:
    """Text-to-image check: does the image show the prompted value of each attribute (for object
    attributes, on every object)?"""
    small = downsample(image)
    out = {}
    for attr in attributes:
        if attr in ("background", "style"):
            change = {"attribute": attr, "to": getattr(scene, attr)}
            out[attr] = read_attribute(small, candidates(scene, scene, change)) == getattr(scene, attr)
            continue
        ok = True
        for k, obj in enumerate(scene.objects):
            change = {"attribute": attr, "object": k, "to": getattr(obj, attr)}
            ok &= read_attribute(small, candidates(scene, scene, change)) == getattr(obj, attr)
        out[attr] = bool(ok)
    return out
