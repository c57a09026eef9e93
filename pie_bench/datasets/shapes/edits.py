"""The ten PIE-Bench edit types as scene edits. An edit is a (source scene, target scene) pair, so
the ground-truth edited image is the target's rendering and the mask is exact: the union of the
changed objects' source and target regions, or the full frame for background and style edits."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from pie_bench.datasets.shapes.scenes import (BACKGROUNDS, COLOURS, PAIRS, PARTNER, POSITIONS, SHAPES, SIZES, STYLES, TEXTURES, Obj, Scene,
                     objects_mask, other, random_object, random_scene)

# PIE edit type id -> the attribute a single edit of that type changes
TYPE_ATTRIBUTE = {1: "shape", 2: "add", 3: "delete", 4: "size", 5: "position", 6: "colour", 7: "texture",
                  8: "background", 9: "style"}
ATTRIBUTE_VALUES = {"shape": SHAPES, "colour": tuple(COLOURS), "texture": TEXTURES, "size": tuple(SIZES),
                    "position": tuple(POSITIONS), "background": tuple(BACKGROUNDS), "style": STYLES}
RANDOM_POOL = ("shape", "colour", "texture", "size", "background")


@dataclass
class Edit:
    edit_type: int
    source: Scene
    target: Scene
    instruction: str
    blended: Optional[tuple[str, str]]
    # one entry per changed attribute: {"attribute", "from", "to", "object"} (object: index in the target
    # scene; None for scene-level attributes; for delete, the index in the source)
    changes: list[dict] = field(default_factory=list)
    source_objects: tuple[int, ...] = ()  # source objects whose region the edit touches
    target_objects: tuple[int, ...] = ()
    full_frame: bool = False

    def mask(self, size: int) -> np.ndarray:
        if self.full_frame:
            return np.ones((size, size), dtype=bool)
        return objects_mask(self.source, self.source_objects, size) | objects_mask(self.target, self.target_objects, size)

    def attributes(self) -> dict:
        return {"source": self.source.to_dict(), "target": self.target.to_dict(), "changes": self.changes}


def _name(scene: Scene, k: int) -> str:
    o = scene.objects[k]
    return f"the {o.shape}" if len(scene.objects) == 1 else f"the {o.colour} {o.shape}"


def _object_edit(rng, scene: Scene, attribute: str, edit_type: int, k: Optional[int] = None) -> Edit:
    k = int(rng.integers(len(scene.objects))) if k is None else k
    obj = scene.objects[k]
    old = getattr(obj, attribute)
    choices = ATTRIBUTE_VALUES[attribute]
    if attribute == "position" and len(scene.objects) > 1:  # keep two objects apart: swap sides of the pair
        choices = (PARTNER[old],)
        new = choices[0]
    else:
        new = other(rng, choices, old)
    target = scene.replace_object(k, **{attribute: new})
    if attribute == "position" and len(scene.objects) > 1:
        target = target.replace_object(1 - k, position=old)
        ks: tuple[int, ...] = (0, 1)
    else:
        ks = (k,)
    who = _name(scene, k)
    instruction = {"shape": f"turn {who} into a {new}", "position": f"move {who} to the {new}"}.get(
        attribute, f"make {who} {new}")
    return Edit(edit_type, scene, target, instruction, (obj.shape, new if attribute == "shape" else obj.shape),
                [{"attribute": attribute, "object": k, "from": old, "to": new}], ks, ks)


def make_edit(rng: np.random.Generator, edit_type: int) -> Edit:
    if edit_type == 2:  # add: one object on a pair position, the new one on its partner
        pos = PAIRS[rng.integers(len(PAIRS))][rng.integers(2)]
        src = random_scene(rng, n_objects=1, style="photo")
        src = dataclasses.replace(src, objects=(dataclasses.replace(src.objects[0], position=pos),))
        new = random_object(rng, PARTNER[pos])
        tgt = dataclasses.replace(src, objects=src.objects + (new,))
        return Edit(2, src, tgt, f"add a {new.colour} {new.shape} at {new.position}", (new.shape, new.shape),
                    [{"attribute": "add", "object": 1, "from": None, "to": new.shape}], (), (1,))
    if edit_type == 3:
        src = random_scene(rng, n_objects=2, style="photo")
        k = int(rng.integers(2))
        gone = src.objects[k]
        tgt = dataclasses.replace(src, objects=tuple(o for i, o in enumerate(src.objects) if i != k))
        return Edit(3, src, tgt, f"remove {_name(src, k)}", (gone.shape, gone.shape),
                    [{"attribute": "delete", "object": k, "from": gone.shape, "to": None}], (k,), ())
    if edit_type == 5:  # pose: move the single object to another place
        return _object_edit(rng, random_scene(rng, n_objects=1, style="photo"), "position", 5)
    if edit_type in (1, 4, 6, 7):
        return _object_edit(rng, random_scene(rng, style="photo"), TYPE_ATTRIBUTE[edit_type], edit_type)
    if edit_type == 8:
        src = random_scene(rng, style="photo")
        new = other(rng, tuple(BACKGROUNDS), src.background)
        return Edit(8, src, dataclasses.replace(src, background=new), f"change the background to {new}",
                    (src.background, new), [{"attribute": "background", "object": None, "from": src.background,
                                             "to": new}], full_frame=True)
    if edit_type == 9:
        src = random_scene(rng, style="photo")
        new = other(rng, STYLES, "photo")
        return Edit(9, src, dataclasses.replace(src, style=new), f"make it a {new}", None,
                    [{"attribute": "style", "object": None, "from": "photo", "to": new}], full_frame=True)
    if edit_type == 0:  # random: two different attribute edits composed
        src = random_scene(rng, style="photo")
        picks = rng.choice(len(RANDOM_POOL), size=2, replace=False)
        scene, parts = src, []
        for p in sorted(int(i) for i in picks):
            attr = RANDOM_POOL[p]
            if attr == "background":
                new = other(rng, tuple(BACKGROUNDS), scene.background)
                e = Edit(8, scene, dataclasses.replace(scene, background=new), f"change the background to {new}",
                         (scene.background, new), [{"attribute": "background", "object": None,
                                                    "from": scene.background, "to": new}], full_frame=True)
            else:
                e = _object_edit(rng, scene, attr, 0)
            parts.append(e)
            scene = e.target
        objs = tuple(sorted({k for e in parts for k in e.source_objects}))
        blended = next((e.blended for e in parts if not e.full_frame), parts[0].blended)
        return Edit(0, src, scene, " and ".join(e.instruction for e in parts), blended,
                    [c for e in parts for c in e.changes], objs, objs, any(e.full_frame for e in parts))
    raise ValueError(f"edit type {edit_type} is not 0-9")


def random_edit(rng: np.random.Generator) -> Edit:
    """A uniformly chosen edit type (InstructPix2Pix training triples)."""
    return make_edit(rng, int(rng.integers(10)))
