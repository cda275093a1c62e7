"""Throughput of the segment annotator: end-to-end vs bare model forwards vs a naive per-image loop.

All three run on the same batch in the same process:
- annotator: `SegmentAnnotator.__call__` on a catalog-style batch (PNG decode, detector, batched
  post-processing, NMS, batched SAM, rendering, PNG encode);
- bare: the detector forward on the processed batch + SAM image encoder on the batch + the mask
  decoder for the same boxes (no pre/post-processing): the ceiling the annotator can approach;
- naive: one image at a time: processor + detector + the library's post-processing, then
  `SamPredictor.set_image` and one `predict(box=...)` per box, then rendering.
The last line, `summary:`, gives the annotator's images/s against the bare forwards and the naive loop.

    python bench/annotators_segment.py --tiny            # CPU, tiny random checkpoints
    python bench/annotators_segment.py --real            # OWLv2 base/16 at 960 px + SAM vit_h, random weights
    python bench/annotators_segment.py --detector grounding_dino \
        --detector-id IDEA-Research/grounding-dino-tiny --sam-type vit_h --sam-checkpoint sam_vit_h.pth
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from skimage import data as skdata  # noqa: E402

from onegen.annotators.segment import SegmentAnnotator, detect, render_outputs  # noqa: E402
from onegen.core.image_codec import encode_png  # noqa: E402
from onegen.pipelines.demo.tiny_models import tiny_owlv2, tiny_sam  # noqa: E402

NAMES = ["person", "cat", "cup", "rocket"]


def test_images(n: int, width: int) -> list[np.ndarray]:
    photos = [skdata.astronaut(), skdata.coffee(), skdata.chelsea(), skdata.rocket()]
    out = []
    for i in range(n):
        im = Image.fromarray(photos[i % len(photos)]).convert("RGB")
        if width:
            im = im.resize((width, round(im.height * width / im.width)))
        out.append(np.asarray(im))
    return out


def timed(fn, repeats: int) -> float:
    """Best wall time of `repeats` calls (after one warm-up), synchronising CUDA."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


@torch.no_grad()
def bare(ann: SegmentAnnotator, images: list[np.ndarray], inputs, boxes: list[torch.Tensor]) -> None:
    """Detector forward + SAM encoder on the batch + decoder per image: no pre/post-processing."""
    ann._detector(**inputs)
    sam = ann._sam
    size = sam.image_encoder.img_size
    embeddings = sam.image_encoder(torch.zeros((len(images), 3, size, size), device=sam.device))  # (B, C, h, w)
    for i, b in enumerate(boxes):
        sparse, dense = sam.prompt_encoder(points=None, boxes=b.to(sam.device), masks=None)
        sam.mask_decoder(image_embeddings=embeddings[i : i + 1], image_pe=sam.prompt_encoder.get_dense_pe(),
                         sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False)


@torch.no_grad()
def naive(ann: SegmentAnnotator, images: list[np.ndarray], key: str) -> None:
    """One image at a time through the libraries' own entry points."""
    from segment_anything import SamPredictor

    predictor = SamPredictor(ann._sam)
    for image in images:
        if ann.detector == "owlv2":
            inputs = ann._processor(text=[NAMES], images=[image], return_tensors="pt").to(ann._device)
            out = ann._detector(**inputs)
            res = ann._processor.post_process_grounded_object_detection(
                out, threshold=ann.box_threshold, target_sizes=[image.shape[:2]])[0]
            labels = res["labels"].cpu().numpy()
        else:
            inputs = ann._processor(images=[image], text=". ".join(NAMES) + ".", return_tensors="pt").to(ann._device)
            out = ann._detector(**inputs)
            res = ann._processor.post_process_grounded_object_detection(
                out, threshold=ann.box_threshold, text_threshold=ann.text_threshold, target_sizes=[image.shape[:2]])[0]
            labels = np.zeros(len(res["boxes"]), dtype=np.int64)
        boxes = res["boxes"][: 4 * len(NAMES)].cpu().numpy()
        predictor.set_image(image)
        masks = np.stack([predictor.predict(box=b, multimask_output=False)[0][0] for b in boxes])
        render_outputs(key, NAMES, boxes, res["scores"][: len(boxes)].cpu().numpy(), labels[: len(boxes)],
                       masks, *image.shape[:2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="build tiny random checkpoints (CPU run)")
    parser.add_argument("--real", action="store_true", help="OWLv2 + SAM vit_h at their real architectures, "
                        "random weights (bench/real_configs.py)")
    parser.add_argument("--detector", default="owlv2")
    parser.add_argument("--detector-id", default="google/owlv2-base-patch16-ensemble")
    parser.add_argument("--sam-type", default="vit_h")
    parser.add_argument("--sam-checkpoint", default="")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--width", type=int, default=512, help="resize images to this width (0: keep)")
    parser.add_argument("--threshold", type=float, default=0.2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.tiny:
        folder = tempfile.mkdtemp(prefix="bench-segment-")
        args.detector, args.detector_id = "owlv2", tiny_owlv2(os.path.join(folder, "owlv2"))
        args.sam_type, args.sam_checkpoint = "tiny", tiny_sam(os.path.join(folder, "sam"))
        args.threshold = 0.0
    elif args.real:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from real_configs import real_owlv2, real_sam

        folder = tempfile.mkdtemp(prefix="bench-segment-")
        args.detector, args.detector_id = "owlv2", real_owlv2(os.path.join(folder, "owlv2"))
        args.sam_type, args.sam_checkpoint = "vit_h", real_sam(os.path.join(folder, "sam"))
    ann = SegmentAnnotator(detector=args.detector, detector_id=args.detector_id, sam_model_type=args.sam_type,
                           sam_checkpoint=args.sam_checkpoint, box_threshold=args.threshold, num_gpus=1,
                           batch_size=args.batch)
    ann.setup()
    images = test_images(args.batch, args.width)
    batch = {"key": [f"bench-{i}" for i in range(len(images))], "kind": ["image"] * len(images),
             "image": [encode_png(im) for im in images], "caption_original": [""] * len(images),
             "meta": ["{}"] * len(images), "width": [im.shape[1] for im in images],
             "height": [im.shape[0] for im in images], "entities.entities": [NAMES] * len(images)}
    found = detect(ann.detector, ann._processor, ann._detector, images, [NAMES] * len(images),
                   ann.box_threshold, ann.text_threshold)
    boxes = [d.boxes[: ann.max_boxes_per_class * len(NAMES)] for d in found]
    if ann.detector == "owlv2":
        inputs = ann._processor(text=[NAMES] * len(images), images=images, return_tensors="pt").to(ann._device)
    else:
        inputs = ann._processor(images=images, text=[". ".join(NAMES) + "."] * len(images), padding=True,
                                return_tensors="pt").to(ann._device)
    statuses = ann(batch)["status"]
    results = {
        "annotator (end to end)": timed(lambda: ann(batch), args.repeats),
        "bare detector + SAM forwards": timed(lambda: bare(ann, images, inputs, boxes), args.repeats),
        "naive per-image loop": timed(lambda: naive(ann, images, "bench"), args.repeats),
    }
    device = torch.cuda.get_device_name() if ann._device == "cuda" else f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, torch threads {torch.get_num_threads()})"
    print(f"segment annotator bench | device: {device} | host: {platform.node()} | torch {torch.__version__}")
    print(f"detector {args.detector} {args.detector_id} | SAM {args.sam_type} | batch {len(images)} images, "
          f"sizes {sorted({im.shape[:2] for im in images})} | statuses {sorted(set(statuses))} | best of {args.repeats}")
    for name, seconds in results.items():
        print(f"  {name:32s} {seconds * 1000:9.1f} ms  {len(images) / seconds:8.2f} images/s")
    annotator, bare_s, naive_s = results.values()
    print(f"summary: segment {len(images) / annotator:.2f} img/s = {bare_s / annotator:.2f}x the bare forwards "
          f"({len(images) / bare_s:.2f}), {naive_s / annotator:.2f}x a naive loop (batch {len(images)})")


if __name__ == "__main__":
    main()
