"""docs/condition-styles.png: onegen's condition renderings, and locally beside the released model's.

The released model's crops (shared/reference-styles: lehduong/OneDiffusion assets, CC BY-NC 4.0, kept
for comparison only and never shipped in this project) cannot be committed, so the committed picture
holds onegen's renderings alone, one row per condition in the order of the reference crops;
`--with-reference` puts each crop to the left of ours, for a developer's eyes, into a file outside the
repository (default /tmp/condition-styles-side-by-side.png). Ours go through the same functions the
annotators call:
- pose: `render_pose` (mmpose / ViTPose visualiser style) of a fixed COCO-17 person;
- boxes: `render_box_map` of one filled box with its `name: score` label;
- inpainting: `InpaintAnnotator.annotate_one` on skimage's astronaut (black fill);
- depth: the synthetic scene's exact inverse depth through `depth.normalise_depth` and the
  annotator's 8-bit rule (Depth Anything itself needs real weights).

    python bench/condition_styles.py [--out docs/condition-styles.png]
    python bench/condition_styles.py --with-reference [--shared ../shared] [--out /tmp/side-by-side.png]
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from skimage import data as skdata

from onegen.annotators.box_map import render_box_map
from onegen.annotators.conditions import InpaintAnnotator
from onegen.annotators.depth import normalise_depth
from onegen.annotators.render_pose import render_pose
from onegen.pipelines.demo.synthetic_scene import SceneConfig, make_scene, render

ROW_HEIGHT = 300
REFERENCE_CROPS = {  # file -> (left, top, right, bottom) of one panel, below its caption
    "pose": ("pose-coco17-mmpose-palette.png", (38, 130, 548, 781)),
    "boxes": ("boxes-filled-with-labels.png", (56, 130, 566, 781)),
    "inpainting": ("inpainting-input-black-box.webp", None),
    "depth": ("depth-input-inverse-grey.webp", None),
}


def our_pose() -> np.ndarray:
    """A fixed seated-ish person, small in a 510 x 651 frame like the reference panel."""
    xy = [(262, 400), (268, 394), (258, 394), (276, 398), (250, 398), (290, 430), (238, 430), (300, 470),
          (226, 466), (316, 500), (214, 494), (280, 520), (244, 520), (310, 560), (230, 566), (300, 610),
          (238, 616)]  # fmt: skip
    keypoints = np.array([(x, y, 0.9) for x, y in xy])
    return render_pose(651, 510, [keypoints])


def our_boxes() -> np.ndarray:
    return render_box_map(651, 510, np.array([[233.0, 328.0, 281.0, 378.0]]), [(0, 255, 255)], ["hood: 0.37"])


def our_inpainting() -> np.ndarray:
    out = InpaintAnnotator(max_strokes=0)(
        {"key": ["demo-astronaut"], "kind": ["image"], "image": [_png(skdata.astronaut())],
         "caption_original": [None], "meta": ["{}"], "width": [512], "height": [512]}
    )  # fmt: skip
    if out["status"] != ["ok"]:
        raise RuntimeError(f"inpaint failed: {out['error']}")
    return np.asarray(Image.open(io.BytesIO(out["condition"][0])).convert("RGB"))


def our_depth() -> np.ndarray:
    config = SceneConfig(n_views=1, width=416, height=608, seed=2, fov_x_deg=60.0)
    _, depth, _ = render(make_scene(config), config.width, config.height)  # (1, H, W) z-depth, 0 = sky
    inverse = np.where(depth > 0, 1.0 / np.maximum(depth, 1e-6), 0.0)  # sky: as far as it gets
    (norm, _, _), = normalise_depth(torch.from_numpy(inverse.astype(np.float32)), [depth.shape[1:]])
    grey = np.round(norm * 255.0).astype(np.uint8)  # the annotator's 8-bit rule
    return np.repeat(grey[:, :, None], 3, axis=2)


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _fit(image: Image.Image) -> Image.Image:
    return image.resize((round(image.width * ROW_HEIGHT / image.height), ROW_HEIGHT), Image.LANCZOS)


def compose(shared: Path | None) -> Image.Image:
    """Our renderings, one row each; with `shared`, each reference crop to their left."""
    ours = {"pose": our_pose(), "boxes": our_boxes(), "inpainting": our_inpainting(), "depth": our_depth()}
    tiles = []
    for name, (file, box) in REFERENCE_CROPS.items():
        reference = None
        if shared is not None:
            crop = Image.open(shared / "reference-styles" / file).convert("RGB")
            reference = _fit(crop.crop(box) if box else crop)
        tiles.append((name, reference, _fit(Image.fromarray(ours[name]))))
    width = max((ref.width + 20 if ref else 0) + mine.width for _, ref, mine in tiles) + 20
    sheet = Image.new("RGB", (width, len(tiles) * (ROW_HEIGHT + 24) + 24), "white")
    draw = ImageDraw.Draw(sheet)
    title = ("left: released OneDiffusion (lehduong/OneDiffusion, CC BY-NC 4.0, comparison only)   right: onegen"
             if shared is not None else "onegen's conditions (--with-reference: beside the released)")
    draw.text((10, 4), title, fill="black")
    for i, (name, ref, mine) in enumerate(tiles):
        top = 24 + i * (ROW_HEIGHT + 24)
        draw.text((10, top + 4), name, fill="black")
        if ref is not None:
            sheet.paste(ref, (10, top + 20))
        sheet.paste(mine, (10 + (ref.width + 20 if ref is not None else 0), top + 20))
    return sheet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    parser.add_argument("--with-reference", action="store_true",
                        help="put the released model's crops beside ours (never commit that picture)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    default = (Path("/tmp/condition-styles-side-by-side.png") if args.with_reference
               else Path(__file__).resolve().parents[1] / "docs" / "condition-styles.png")
    out = args.out or default
    compose(args.shared if args.with_reference else None).save(out, optimize=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
