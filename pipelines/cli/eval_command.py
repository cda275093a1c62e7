"""`onegen eval depth|camera|nvs`: the parsers, without importing the evaluation code (numpy, PIL).

Each command's `run` imports its onegen.evaluation module only when it runs, so `--help` stays fast.
A run pairs a predictions folder with a ground-truth layout, prints one line per skipped item (bad
input: missing / extra prediction, wrong size, no valid pixels, NaNs), writes one JSON result (--out;
evaluation/results.py) and ends with a one-line summary. Exit status 0, or 1 when no item could be
scored; a missing folder or layout is `onegen: error: ...`, exit 2 (PathError).
"""

from __future__ import annotations

import argparse


def parse_views(text: str) -> tuple[int, ...]:
    """"10-24" or "0,1,2" or "0-2,5" -> the view numbers in that order."""
    views = []
    try:
        for part in (p for p in text.split(",") if p.strip()):
            low, dash, high = part.partition("-")
            views += range(int(low), int(high) + 1) if dash else [int(low)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"views must be numbers or ranges like 0-5,8, got {text!r}") from None
    return tuple(views)


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _finish(result, out: str) -> int:
    from onegen.evaluation.results import write_result

    for skipped in result.skipped:
        print(f"skipped {skipped['item']}: {skipped['reason']}")
    write_result(result, out)
    print(result.summary_line(out))
    return 0 if result.items else 1


def cmd_depth(args: argparse.Namespace) -> int:
    from onegen.evaluation.depth_eval import DepthEvalConfig, evaluate_depth

    config = DepthEvalConfig(args.gt, args.predictions, args.dataset, args.prediction, args.min_depth,
                             args.max_depth, args.checkpoint)
    return _finish(evaluate_depth(config), args.out)


def cmd_camera(args: argparse.Namespace) -> int:
    from onegen.evaluation.camera_eval import CameraEvalConfig, evaluate_camera

    config = CameraEvalConfig(args.gt, args.predictions, args.dataset, args.views or (), args.thresholds,
                              args.checkpoint)
    return _finish(evaluate_camera(config), args.out)


def cmd_nvs(args: argparse.Namespace) -> int:
    from onegen.evaluation.nvs_eval import ESCHERNET_TEST_VIEWS, NvsEvalConfig, evaluate_nvs

    config = NvsEvalConfig(args.gt, args.predictions, args.dataset, args.views or ESCHERNET_TEST_VIEWS, args.size,
                           args.checkpoint)
    return _finish(evaluate_nvs(config), args.out)


def _common(parser: argparse.ArgumentParser, predictions: str) -> None:
    parser.add_argument("predictions", help=predictions)
    parser.add_argument("--gt", required=True, help="ground-truth folder (its layout: --dataset)")
    parser.add_argument("--out", required=True, help="the JSON result file to write")
    parser.add_argument("--checkpoint", help="what made the predictions (recorded in the result as given)")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add `onegen eval depth|camera|nvs` (the paper's protocols: docs/decisions.md, Evaluation)."""
    parser = subparsers.add_parser("eval", help="score predictions against ground truth: depth, camera, nvs")
    protocols = parser.add_subparsers(dest="eval_command", required=True, help="the protocol")

    depth = protocols.add_parser("depth", help="AbsRel / delta1 after Marigold's per-image scale+shift fit")
    _common(depth, "folder of depth maps: PRED.npy / PRED.png / PRED/view_1_generated.png (an `onegen sample "
                   "--task image2depth --out PRED` folder), named as Marigold names them (test/<scene>/pred_NNNN)")
    depth.add_argument("--dataset", choices=["nyuv2", "diode", "folder"], default="nyuv2",
                       help="nyuv2: Marigold's extracted test split (test/<scene>/depth_NNNN.png); diode: the val "
                            "layout (indoors|outdoor/scene_*/scan_*/*_depth.npy + _depth_mask.npy); folder: "
                            "<name>.npy depth in metres (+ <name>_mask.npy) (default: nyuv2)")
    depth.add_argument("--prediction", choices=["inverse", "depth"], default="inverse",
                       help="inverse: grey inverse depth, as `onegen sample` writes it (fit in disparity, "
                            "Marigold's least_square_disparity); depth: fit in depth (least_square) (default: inverse)")
    depth.add_argument("--min-depth", type=float, help="folder: valid depth above this, also the clip (default: 0)")
    depth.add_argument("--max-depth", type=float, help="folder: valid depth below this, also the clip (default: none)")
    depth.set_defaults(run=cmd_depth)

    camera = protocols.add_parser("camera", help="camera-centre accuracy at 0.1 / 0.3 of the scene scale (RayDiffusion)")
    _common(camera, "one folder per scene with cameras.json (`onegen sample --task camera_pose --out`) or rays.npy")
    camera.add_argument("--dataset", choices=["folder", "gso"], default="folder",
                        help="folder: <scene>/cameras.json with c2w (+ scene_c2w); gso: "
                             "<object>/render_mvs_25/model/NNN.npy world-to-camera (default: folder)")
    camera.add_argument("--views", type=parse_views,
                        help="gso: the view numbers given to the sampler, in order (e.g. 0-5)")
    camera.add_argument("--thresholds", type=_floats, default=(0.1, 0.3),
                        help="accuracy thresholds, fractions of the scene scale (default: 0.1,0.3)")
    camera.set_defaults(run=cmd_camera)

    nvs = protocols.add_parser("nvs", help="PSNR (uint8, white background) and SSIM per object (EscherNet GSO)")
    _common(nvs, "one folder per object: <view>.png, or an `onegen sample --task multiview --out` folder")
    nvs.add_argument("--dataset", choices=["gso", "folder"], default="gso",
                     help="gso: <object>/render_mvs_25/model/NNN.png; folder: <object>/<view>.png (default: gso)")
    nvs.add_argument("--views", type=parse_views, help="gso: held-out view numbers (default: 10-24, EscherNet's)")
    nvs.add_argument("--size", type=int, default=256, help="side the views are compared at (default: 256)")
    nvs.set_defaults(run=cmd_nvs)
