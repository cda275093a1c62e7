"""Throughput of the depth, pose and HED annotators against the bare model and a naive per-image loop.

For each annotator, on the same batch of images in the same run:
- annotator: images/s of `annotator(batch)`: PNG decode -> batched preprocessing -> model -> encode;
- bare model: images/s of the model forward alone on the already-preprocessed batch tensor;
- naive loop: images/s of the library path one image at a time (transformers processor + model +
  post-processing; controlnet_aux HEDdetector for HED).
Pose measures the keypoint stage (ViTPose on one given box per image) like the others, and reports the
YOLO detector's images/s on its own. Each annotator's `summary:` line is printed as soon as it is measured.

    python bench/annotators_vision.py --tiny                       # tiny random checkpoints, CPU
    python bench/annotators_vision.py --real --device cuda         # real architectures, random weights
    python bench/annotators_vision.py --device cuda --n 64 \\
        --depth-model depth-anything/Depth-Anything-V2-Small-hf \\
        --pose-model usyd-community/vitpose-base-simple --detector /weights/yolo11n.pt \\
        --hed-model lllyasviel/Annotators
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from skimage import data as skdata  # noqa: E402

from onegen.core.image_codec import encode_png  # noqa: E402


def images_for(n: int, side: int) -> list[np.ndarray]:
    """n photos in two sizes (side x side and side x 1.5 side): two shape groups per batch."""
    photos = [skdata.astronaut(), skdata.coffee(), skdata.chelsea(), skdata.rocket()]
    out = []
    for i in range(n):
        size = (side, side) if i % 2 == 0 else (side * 3 // 2, side)
        out.append(np.asarray(Image.fromarray(photos[i % len(photos)]).resize(size)))
    return out


def batch_of(images: list[np.ndarray]) -> dict[str, list]:
    n = len(images)
    return {
        "key": [f"bench{i}" for i in range(n)], "kind": ["image"] * n, "image": [encode_png(im) for im in images],
        "caption_original": [""] * n, "meta": ["{}"] * n,
        "width": [im.shape[1] for im in images], "height": [im.shape[0] for im in images],
    }  # fmt: skip


def rate(fn, n_images: int, device: str, repeats: int) -> float:
    """Images/s of fn() (best of `repeats` after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return n_images / best


def report(name: str, ann_rate: float, bare_rate: float, naive_rate: float, extra: str = "") -> None:
    print(
        f"{name:6s} annotator {ann_rate:8.1f} img/s | bare model {bare_rate:8.1f} img/s | naive loop "
        f"{naive_rate:8.1f} img/s | annotator/bare {ann_rate / bare_rate:5.2f} | annotator/naive "
        f"{ann_rate / naive_rate:5.2f}{extra}"
    )
    print(f"summary: {name} {ann_rate:.1f} img/s = {ann_rate / bare_rate:.2f}x its bare forward "
          f"({bare_rate:.1f}), {ann_rate / naive_rate:.2f}x a naive loop{extra.replace(' | ', ', ')}")


def bench_depth(model: str, images: list[np.ndarray], args) -> None:
    from transformers import AutoImageProcessor

    from onegen.annotators.depth import DepthAnnotator, preprocess

    ann = DepthAnnotator(model=model, num_gpus=1 if args.device == "cuda" else 0, half=args.half)
    ann.setup()
    batch = batch_of(images)
    dtype = next(ann._model.parameters()).dtype
    groups = preprocess(images, ann._spec, ann._device, dtype)
    processor = AutoImageProcessor.from_pretrained(ann._checkpoint.path)

    def bare():
        with torch.inference_mode():
            for _, pixel_values in groups:
                ann._model(pixel_values=pixel_values)

    def naive():
        with torch.inference_mode():
            for image in images:
                inputs = processor(images=[image], return_tensors="pt").to(ann._device, dtype)
                outputs = ann._model(**inputs)
                depth = processor.post_process_depth_estimation(outputs, target_sizes=[image.shape[:2]])[0]
                depth["predicted_depth"].float().cpu().numpy()

    n = len(images)
    report("depth", rate(lambda: ann(batch), n, args.device, args.repeats),
           rate(bare, n, args.device, args.repeats), rate(naive, n, args.device, args.repeats))  # fmt: skip


def bench_pose(detector: str, model: str, images: list[np.ndarray], args) -> None:
    from transformers import AutoImageProcessor

    from onegen.annotators.pose import PoseAnnotator

    ann = PoseAnnotator(detector=detector, model=model, num_gpus=1 if args.device == "cuda" else 0,
                        half=args.half, imgsz=args.imgsz)  # fmt: skip
    ann.setup()
    boxes = [np.array([[w * 0.25, h * 0.1, w * 0.75, h * 0.95]], np.float32) for h, w in (im.shape[:2] for im in images)]
    coco = [[[float(b[0, 0]), float(b[0, 1]), float(b[0, 2] - b[0, 0]), float(b[0, 3] - b[0, 1])]] for b in boxes]
    processor = AutoImageProcessor.from_pretrained(ann._checkpoint.path)
    dtype = next(ann._model.parameters()).dtype
    crops = processor(images=images, boxes=coco, return_tensors="pt")["pixel_values"].to(ann._device, dtype)

    def bare():
        with torch.inference_mode():
            ann._forward(crops)

    def naive():
        with torch.inference_mode():
            for image, box in zip(images, coco, strict=True):
                inputs = processor(images=[image], boxes=[box], return_tensors="pt").to(ann._device, dtype)
                outputs = ann._model(**inputs)
                processor.post_process_pose_estimation(outputs, boxes=[box])

    n = len(images)
    detect_rate = rate(lambda: ann.detect(images), n, args.device, args.repeats)
    report("pose", rate(lambda: ann.keypoints(images, boxes), n, args.device, args.repeats),
           rate(bare, n, args.device, args.repeats), rate(naive, n, args.device, args.repeats),
           f" | YOLO detect {detect_rate:.1f} img/s")  # fmt: skip


def bench_hed(model: str, images: list[np.ndarray], args) -> None:
    from controlnet_aux.hed import HEDdetector

    from onegen.annotators.hed import HedAnnotator, detect_size

    ann = HedAnnotator(model=model, num_gpus=1 if args.device == "cuda" else 0, half=args.half,
                       detect_resolution=args.hed_resolution)  # fmt: skip
    ann.setup()
    batch = batch_of(images)
    dtype = next(ann._net.parameters()).dtype
    groups: dict[tuple[int, int], int] = {}
    for image in images:
        size = detect_size(*image.shape[:2], args.hed_resolution)
        groups[size] = groups.get(size, 0) + 1
    inputs = [torch.rand(k, 3, *size, device=ann._device, dtype=dtype) * 255 for size, k in groups.items()]
    detector = HEDdetector(ann._net.float() if args.device == "cpu" else ann._net)

    def bare():
        with torch.inference_mode():
            for x in inputs:
                ann._net(x)

    def naive():
        for image in images:
            detector(image, detect_resolution=args.hed_resolution, image_resolution=min(image.shape[:2]),
                     output_type="np")  # fmt: skip

    n = len(images)
    report("hed", rate(lambda: ann(batch), n, args.device, args.repeats),
           rate(bare, n, args.device, args.repeats), rate(naive, n, args.device, args.repeats))  # fmt: skip


def build_tiny(root: str) -> dict[str, str]:
    """Tiny random checkpoints (the ones the tests use, from onegen.pipelines.demo.tiny_models) under root."""
    from onegen.pipelines.demo.tiny_models import tiny_depth, tiny_hed, tiny_vitpose, tiny_yolo

    return {"depth": tiny_depth(f"{root}/depth"), "pose": tiny_vitpose(f"{root}/vitpose"),
            "detector": tiny_yolo(f"{root}/yolo"), "hed": tiny_hed(f"{root}/hed")}


def build_real(root: str, device: str) -> dict[str, str]:
    """Random-weight checkpoints at the real architectures (bench/real_configs.py) under root."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from real_configs import build

    return build(root, {"depth", "pose", "hed"}, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="build tiny random checkpoints, run on CPU")
    parser.add_argument("--real", action="store_true", help="real architectures, random weights (real_configs.py)")
    parser.add_argument("--tasks", default="depth,pose,hed")
    parser.add_argument("--depth-model", default="depth-anything/Depth-Anything-V2-Small-hf")
    parser.add_argument("--pose-model", default="usyd-community/vitpose-base-simple")
    parser.add_argument("--detector", default="yolo11n.pt")
    parser.add_argument("--hed-model", default="lllyasviel/Annotators")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--half", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--n", type=int, default=32, help="images per batch")
    parser.add_argument("--side", type=int, default=512, help="short side of the test images")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--hed-resolution", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    tasks = args.tasks.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        if args.tiny or args.real:
            os.environ.setdefault("YOLO_CONFIG_DIR", tmp)
            if args.tiny:
                args.device, args.half = "cpu", False
            paths = build_tiny(tmp) if args.tiny else build_real(tmp, args.device)
            args.depth_model, args.pose_model, args.detector, args.hed_model = (
                paths["depth"], paths["pose"], paths["detector"], paths["hed"]
            )
        cpu = platform.processor() or platform.machine()
        gpu = torch.cuda.get_device_name() if args.device == "cuda" else "none"
        print(f"machine: {platform.node()} cpu={cpu} cores={os.cpu_count()} torch_threads={torch.get_num_threads()}"
              f" gpu={gpu} torch={torch.__version__} tiny={args.tiny} n={args.n} side={args.side}")  # fmt: skip
        images = images_for(args.n, args.side)
        if "depth" in tasks:
            bench_depth(args.depth_model, images, args)
        if "pose" in tasks:
            bench_pose(args.detector, args.pose_model, images, args)
        if "hed" in tasks:
            bench_hed(args.hed_model, images, args)


if __name__ == "__main__":
    main()
