"""Regenerate ``mapping_file.json`` for the smoke set: ``python -m pie_bench.datasets.smoke.build_annotations``.

Masks were drawn by hand for these crops (ellipses/polygons in 512x512 pixel coordinates) or,
where the object separates cleanly, by thresholding the image itself (coins, stained tissue).
"""
from __future__ import annotations

import json

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from pie_bench.core.masks import encode_mask
from pie_bench.datasets.smoke import MAPPING_FILE, build_smoke_image

S = 512


def _draw(shapes) -> np.ndarray:
    im = Image.new("L", (S, S), 0)
    d = ImageDraw.Draw(im)
    for kind, *args in shapes:
        fill = 0 if kind.startswith("-") else 255
        if kind.lstrip("-") == "ellipse":
            (cx, cy), (rx, ry) = args
            d.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=fill)
        elif kind.lstrip("-") == "poly":
            d.polygon(args[0], fill=fill)
        elif kind.lstrip("-") == "rect":
            d.rectangle(args[0], fill=fill)
    return np.asarray(im) > 0


def _clean(mask: np.ndarray, open_iter: int = 2, close_iter: int = 4) -> np.ndarray:
    mask = ndimage.binary_opening(mask, iterations=open_iter)
    mask = ndimage.binary_closing(mask, iterations=close_iter)
    return ndimage.binary_fill_holes(mask)


def _masks() -> dict[str, np.ndarray]:
    coins = build_smoke_image("coins.png").astype(float).mean(-1)
    ihc = build_smoke_image("ihc.png").astype(float)
    brown = (ihc[..., 0] - ihc[..., 2]) > 25
    return {
        "astronaut": _draw([("ellipse", (395, 440), (118, 92))]),
        "chelsea": _draw([("ellipse", (162, 195), (62, 46)), ("ellipse", (422, 228), (54, 44))]),
        "coffee": _draw([("ellipse", (230, 190), (122, 60))]),
        "rocket": _draw([("rect", (0, 0, 511, 430)), ("-rect", (236, 140, 292, 430)),
                         ("-poly", [(244, 142), (264, 108), (284, 142)])]),
        "motorcycle": _draw([("poly", [(0, 160), (170, 110), (300, 130), (440, 120), (512, 150),
                                       (512, 460), (400, 470), (300, 400), (130, 460), (0, 440)])]),
        "camera": _draw([("poly", [(285, 215), (325, 215), (425, 512), (215, 512)])]),
        "hubble": np.ones((S, S), bool),
        "colorwheel": _draw([("ellipse", (256, 270), (70, 70))]),
        "coins": _clean(ndimage.gaussian_filter(coins, 2) - ndimage.gaussian_filter(coins, 40) > 20),
        "ihc": ~_clean(ndimage.gaussian_filter(brown.astype(float), 3) > 0.5),
    }


# id digits: type, 1 artificial / 2 natural, 1 animal / 2 human / 3 indoor / 4 outdoor, running number
ANNOTATIONS = [
    ("000000000900", "motorcycle", 0, "a red motorcycle parked in a garage",
     "a red [bicycle] parked in a [barn]", "Turn the motorcycle into a bicycle and the garage into a barn",
     "motorcycle bicycle"),
    ("122000000900", "astronaut", 1, "an astronaut in an orange suit holding a white helmet",
     "an astronaut in an orange suit holding a white [basketball]", "Replace the helmet with a basketball",
     "helmet basketball"),
    ("213000000900", "colorwheel", 2, "a color wheel on a black background",
     "a color wheel with [a white star] on a black background", "Add a white star in the middle of the wheel",
     "wheel star"),
    ("322000000900", "camera", 3, "a man with a camera on a [tripod] in a field",
     "a man with a camera in a field", "Remove the tripod", "tripod camera"),
    ("423000000900", "coffee", 4, "a cup of [coffee] with a spoon on a red saucer",
     "a cup of [tea] with a spoon on a red saucer", "Make the coffee tea", "coffee tea"),
    ("621000000900", "chelsea", 6, "a close-up photo of a cat with green eyes",
     "a close-up photo of a cat with [blue] eyes", "Make the cat's eyes blue", "eyes eyes"),
    ("713000000900", "coins", 7, "rows of silver coins on a dark table",
     "rows of [gold] coins on a dark table", "Make the coins gold", "coins coins"),
    ("814000000900", "rocket", 8, "a rocket on a launch pad under a night sky",
     "a rocket on a launch pad under a [cloudy blue] sky", "Make the sky a cloudy blue daytime sky", "sky sky"),
    ("823000000900", "ihc", 8, "brown stained cells on a pale blue background",
     "brown stained cells on a [pink] background", "Make the background pink", "background background"),
    ("924000000900", "hubble", 9, "a photo of galaxies in deep space",
     "[a watercolor painting] of galaxies in deep space", "Make it a watercolor painting", ""),
]


def main() -> None:
    masks = _masks()
    out = {}
    for sid, image, etype, src, tgt, instruction, blended in ANNOTATIONS:
        mask = masks[image]
        out[sid] = {
            "image_path": f"{image}.png",
            "original_prompt": src,
            "editing_prompt": tgt,
            "editing_instruction": instruction,
            "editing_type_id": str(etype),
            "blended_word": blended,
            "mask": encode_mask(mask),
        }
    MAPPING_FILE.write_text(json.dumps(out) + "\n")
    print(f"wrote {len(out)} annotations to {MAPPING_FILE}")


if __name__ == "__main__":
    main()
