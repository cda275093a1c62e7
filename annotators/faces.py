"""Faces (ID) annotator: which subject images are usable for the ID task (one face, passes the NSFW filter).

Output columns (one row per catalog row of kind "subject_image" or "image", docs/design.md §3):
- `faces_json` (string): JSON list, best first, of every face kept: {"box": [x0, y0, x1, y1] (source
  pixels, float), "score": float}.
- `n_faces` (int32): number of entries in faces_json (1 on every "ok" row).
- `face_box` (list<float32>): the chosen face, [x0, y0, x1, y1] in source pixels.
- `face_score` (float32): its score (units: see "Detectors").
- `nsfw_score` (float32): probability of `nsfw_label` from the NSFW classifier; null when the filter is off.
- `nsfw_checked` (bool): True when the NSFW classifier ran on the row, False on every row when it is off.
Row statuses besides "ok": "nsfw" (nsfw_score > nsfw_threshold; checked first, as a safety filter),
"no_face" (no face kept), "many_faces" (more than one: the ID task wants one person per picture).

Detectors (`detector` field):
- "lbp_cascade" (default, no download): the real LBP frontal-face cascade bundled with scikit-image
  (`skimage.data.lbp_frontal_face_cascade_filename()`, OpenCV's lbpcascade_frontalface.xml). It runs with
  `skimage.feature.Cascade` because OpenCV 5 (the installed cv2) dropped `cv2.CascadeClassifier` and
  `cv2.groupRectangles`; the raw windows are merged here the way OpenCV's detectMultiScale does
  (`group_windows`: same-cluster rule with eps 0.2, mean box, nested boxes dropped). The score is the
  number of raw windows merged into the box (OpenCV's "numDetections"); `min_neighbours` is the minimum.
  A path ending in ".xml" loads another LBP cascade file the same way.
- anything else: a transformers object-detection checkpoint (hub id in the local HF cache or a local
  folder; DETR/YOLOS-style, `AutoModelForObjectDetection` + `AutoImageProcessor`). Detections whose label
  name is in `face_labels` and whose score (class probability, [0, 1]) is >= `score_threshold` are faces.
Both detectors drop faces whose shorter box side is under `min_face_size` x the image's short side.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from onegen.annotators.base import Annotator, RowError
from onegen.core.weights import Checkpoint, pick_device, resolve_checkpoint

LBP_CASCADE = "lbp_cascade"

# one detection: (box [x0, y0, x1, y1] in source pixels, score)
Face = tuple[list[float], float]


def group_windows(windows: np.ndarray, min_neighbours: int, eps: float = 0.2) -> list[tuple[np.ndarray, int]]:
    """Merge raw cascade windows (n, 4) [x, y, w, h] into faces, as OpenCV's groupRectangles does.

    Two windows are in one cluster when all four edges are within eps * mean of their smaller sides.
    A cluster with fewer than `min_neighbours` windows is dropped; the others give their mean box.
    A box lying inside another, stronger box is dropped (a face part). Returns [(box [x, y, w, h]
    float, support)], strongest first.
    """
    n = len(windows)
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(n):
        for j in range(i + 1, n):
            a, b = windows[i], windows[j]
            delta = eps * (min(a[2], b[2]) + min(a[3], b[3])) * 0.5
            edges_a = np.array([a[0], a[1], a[0] + a[2], a[1] + a[3]])
            edges_b = np.array([b[0], b[1], b[0] + b[2], b[1] + b[3]])
            if np.all(np.abs(edges_a - edges_b) <= delta):
                parent[root(i)] = root(j)
    clusters: dict[int, list[int]] = {}
    for i in range(n):
        clusters.setdefault(root(i), []).append(i)
    groups = [(windows[m].astype(np.float64).mean(axis=0), len(m)) for m in clusters.values() if len(m) >= min_neighbours]
    groups.sort(key=lambda g: -g[1])
    return [g for g in groups if not any(_inside(g, other) for other in groups if other is not g)]


def _inside(inner: tuple[np.ndarray, int], outer: tuple[np.ndarray, int]) -> bool:
    """OpenCV's nested-box rule: `inner` lies within `outer` (20 % slack) and `outer` has more support."""
    (x, y, w, h), support = inner
    (ox, oy, ow, oh), outer_support = outer
    dx, dy = 0.2 * ow, 0.2 * oh
    within = x >= ox - dx and y >= oy - dy and x + w <= ox + ow + dx and y + h <= oy + oh + dy
    return bool(within and (outer_support > max(3, support) or support < 3))


@dataclass
class FacesAnnotator(Annotator):
    """Face detection + optional NSFW filter for the ID (faceid / subject) set. Fields are the whole config.

    Cascade parameters: `scale_factor` (window growth per scale, > 1), `min_neighbours` (raw windows a
    face needs), `step_ratio` (scikit-image's search step; 1 = exhaustive), `equalize` (histogram-equalise
    the gray image first, as OpenCV's face-detection samples do), `max_side` (images are downscaled so
    the long side is at most this before the cascade runs; boxes come back in source pixels).
    """

    name: ClassVar[str] = "faces"
    version: ClassVar[str] = "1"
    kinds: ClassVar[tuple[str, ...]] = ("subject_image", "image")
    output_schema: ClassVar[pa.Schema] = pa.schema(
        [
            pa.field("faces_json", pa.string()),
            pa.field("n_faces", pa.int32()),
            pa.field("face_box", pa.list_(pa.float32())),
            pa.field("face_score", pa.float32()),
            pa.field("nsfw_score", pa.float32()),
            pa.field("nsfw_checked", pa.bool_()),
        ]
    )

    detector: str = LBP_CASCADE
    scale_factor: float = 1.2
    min_neighbours: int = 6  # scikit-image's photos: faces gather 8-12 windows, false positives up to 5
    step_ratio: float = 1.0
    equalize: bool = True
    max_side: int = 1024
    min_face_size: float = 0.1  # fraction of the image's short side
    score_threshold: float = 0.5  # detector models: class probability; the cascade: windows merged
    face_labels: tuple[str, ...] = ("face",)  # detector-model label names that count as a face
    nsfw_model: str = ""  # image-classification checkpoint (e.g. Falconsai/nsfw_image_detection); "" = off
    nsfw_label: str = "nsfw"
    nsfw_threshold: float = 0.5  # nsfw_score above this -> status "nsfw"
    num_gpus: float = 0.0  # the cascade is CPU-only; give detector/NSFW models a GPU with 1.0
    batch_size: int = 16

    _cascade: Any = field(default=None, init=False, repr=False)
    _cascade_path: str = field(default="", init=False, repr=False)
    _detector: tuple[Checkpoint, Any, Any] | None = field(default=None, init=False, repr=False)
    _face_ids: frozenset[int] = field(default=frozenset(), init=False, repr=False)
    _nsfw: tuple[Checkpoint, Any, Any] | None = field(default=None, init=False, repr=False)
    _nsfw_index: int = field(default=-1, init=False, repr=False)
    _device: str = field(default="cpu", init=False, repr=False)
    _ready: bool = field(default=False, init=False, repr=False)

    # --- setup ---------------------------------------------------------------------------------------
    def checkpoints(self) -> list[tuple[str, str]]:
        found = [] if self.detector == LBP_CASCADE else [("face detector", self.detector)]
        return found + ([("NSFW classifier", self.nsfw_model)] if self.nsfw_model else [])

    def setup(self) -> None:
        """Load the detector (and NSFW classifier when configured); a missing checkpoint raises at once."""
        self._device = pick_device(self.num_gpus)
        if self.detector == LBP_CASCADE or self.detector.endswith(".xml"):
            self._setup_cascade()
        else:
            self._setup_detector_model()
        if self.nsfw_model:
            self._setup_nsfw()
        self._ready = True

    def _setup_cascade(self) -> None:
        from skimage.data import lbp_frontal_face_cascade_filename
        from skimage.feature import Cascade

        if self.detector == LBP_CASCADE:
            self._cascade_path = lbp_frontal_face_cascade_filename()
        else:
            self._cascade_path = resolve_checkpoint(self.detector, "face cascade").path
        self._cascade = Cascade(self._cascade_path)

    def _setup_detector_model(self) -> None:
        from transformers import AutoImageProcessor, AutoModelForObjectDetection

        checkpoint = resolve_checkpoint(self.detector, "face detector")
        processor = AutoImageProcessor.from_pretrained(checkpoint.path)
        model = AutoModelForObjectDetection.from_pretrained(checkpoint.path).to(self._device).eval()
        wanted = {label.lower() for label in self.face_labels}
        self._face_ids = frozenset(i for i, label in model.config.id2label.items() if str(label).lower() in wanted)
        if not self._face_ids:
            raise ValueError(
                f"face detector {self.detector!r} has no label in {list(self.face_labels)} "
                f"(its labels: {sorted(model.config.id2label.values())}); set face_labels"
            )
        self._detector = (checkpoint, processor, model)

    def _setup_nsfw(self) -> None:
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        checkpoint = resolve_checkpoint(self.nsfw_model, "NSFW classifier")
        processor = AutoImageProcessor.from_pretrained(checkpoint.path)
        model = AutoModelForImageClassification.from_pretrained(checkpoint.path).to(self._device).eval()
        matches = [i for i, label in model.config.id2label.items() if str(label).lower() == self.nsfw_label.lower()]
        if len(matches) != 1:
            raise ValueError(
                f"NSFW classifier {self.nsfw_model!r} has no single label {self.nsfw_label!r} "
                f"(its labels: {sorted(model.config.id2label.values())}); set nsfw_label"
            )
        self._nsfw_index = int(matches[0])
        self._nsfw = (checkpoint, processor, model)

    def model_id(self) -> str:
        detector = self._detector[0].model_id if self._detector else self.detector
        return f"{detector}+{self.nsfw_model}" if self.nsfw_model else detector

    def model_revision(self) -> str:
        detector = self._detector[0].revision if self._detector else ""
        nsfw = self._nsfw[0].revision if self._nsfw else ""
        return f"{detector}+{nsfw}" if self.nsfw_model else detector

    # --- detection -----------------------------------------------------------------------------------
    def detect(self, images: list[np.ndarray]) -> list[list[Face]]:
        """Faces per (H, W, 3) uint8 image, best first, after the score and min-size filters."""
        if not self._ready:
            self.setup()
        found = self._detect_model(images) if self._detector else [self._detect_cascade(im) for im in images]
        out = []
        for image, faces in zip(images, found, strict=True):
            min_side = self.min_face_size * min(image.shape[:2])
            kept = [
                (box, score)
                for box, score in faces
                if score >= self.score_threshold and min(box[2] - box[0], box[3] - box[1]) >= min_side
            ]
            out.append(sorted(kept, key=lambda face: -face[1]))
        return out

    def _detect_cascade(self, image: np.ndarray) -> list[Face]:
        import cv2

        height, width = image.shape[:2]
        scale = min(1.0, self.max_side / max(height, width))
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)  # (H, W) uint8
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)  # (h, w) uint8
        if self.equalize:
            gray = cv2.equalizeHist(gray)
        # the smallest window must be able to hold a face of min_face_size; 24 px is the cascade's own size
        min_window = max(24, int(self.min_face_size * min(gray.shape)))
        raw = self._cascade.detect_multi_scale(
            gray,
            scale_factor=self.scale_factor,
            step_ratio=self.step_ratio,
            min_size=(min_window, min_window),
            max_size=(gray.shape[1], gray.shape[0]),
            min_neighbor_number=1,
            intersection_score_threshold=1.01,  # > 1: scikit-image merges nothing; group_windows does
        )
        windows = np.array([[d["c"], d["r"], d["width"], d["height"]] for d in raw], dtype=np.float64).reshape(-1, 4)
        faces = []
        for (x, y, w, h), support in group_windows(windows, self.min_neighbours):
            box = [x / scale, y / scale, (x + w) / scale, (y + h) / scale]
            faces.append((_clip(box, width, height), float(support)))
        return faces

    def _detect_model(self, images: list[np.ndarray]) -> list[list[Face]]:
        import torch

        _, processor, model = self._detector
        out: list[list[Face]] = [[] for _ in images]
        # one forward per source shape: padding a mixed batch would shift the normalised boxes
        for shape, rows in _group_by_shape(images).items():
            inputs = processor(images=[images[i] for i in rows], return_tensors="pt").to(self._device)
            with torch.inference_mode():
                outputs = model(**inputs)
            results = processor.post_process_object_detection(
                outputs, threshold=0.0, target_sizes=[shape] * len(rows)
            )  # per image: scores (k,), labels (k,), boxes (k, 4) xyxy source pixels
            for i, result in zip(rows, results, strict=True):
                for score, label, box in zip(result["scores"], result["labels"], result["boxes"], strict=True):
                    if int(label) in self._face_ids:
                        out[i].append((_clip(box.tolist(), shape[1], shape[0]), float(score)))
        return out

    def nsfw_scores(self, images: list[np.ndarray]) -> list[float]:
        """Probability of `nsfw_label` per (H, W, 3) uint8 image (softmax over the classifier's labels)."""
        import torch

        if not self._ready:
            self.setup()
        _, processor, model = self._nsfw
        inputs = processor(images=list(images), return_tensors="pt").to(self._device)
        with torch.inference_mode():
            logits = model(**inputs).logits  # (n, num_labels)
        return logits.float().softmax(dim=-1)[:, self._nsfw_index].cpu().tolist()

    # --- the contract --------------------------------------------------------------------------------
    def annotate(self, rows: list[dict[str, Any]]) -> list[dict[str, Any] | RowError]:
        images = [row["image"] for row in rows]
        if not self._ready:
            self.setup()
        nsfw = self.nsfw_scores(images) if self._nsfw else [None] * len(images)
        out: list[dict[str, Any] | RowError] = []
        for faces, nsfw_score in zip(self.detect(images), nsfw, strict=True):
            out.append(self._row_result(faces, nsfw_score))
        return out

    def _row_result(self, faces: list[Face], nsfw_score: float | None) -> dict[str, Any] | RowError:
        if nsfw_score is not None and nsfw_score > self.nsfw_threshold:
            return RowError(f"nsfw score {nsfw_score:.3f} > {self.nsfw_threshold}", "nsfw")
        if not faces:
            return RowError("no face found", "no_face")
        if len(faces) > 1:
            return RowError(f"{len(faces)} faces found; the ID set wants one person per image", "many_faces")
        box, score = faces[0]
        return {
            "faces_json": json.dumps([{"box": [round(v, 2) for v in b], "score": round(s, 4)} for b, s in faces]),
            "n_faces": len(faces),
            "face_box": [float(np.float32(v)) for v in box],
            "face_score": float(np.float32(score)),
            "nsfw_score": None if nsfw_score is None else float(np.float32(nsfw_score)),
            "nsfw_checked": nsfw_score is not None,
        }


def _clip(box: list[float], width: int, height: int) -> list[float]:
    """[x0, y0, x1, y1] clipped to the image (DETR-style post-processing does not clip)."""
    return [float(min(max(v, 0.0), limit)) for v, limit in zip(box, (width, height, width, height), strict=True)]


def _group_by_shape(images: list[np.ndarray]) -> dict[tuple[int, int], list[int]]:
    """Row indices grouped by (H, W), in first-seen order."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(tuple(image.shape[:2]), []).append(i)
    return groups
