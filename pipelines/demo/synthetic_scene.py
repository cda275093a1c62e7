"""A small procedural multiview scene: numpy ray casting of coloured spheres and boxes on a ground plane.

Used as a ground-truth fixture for the camera readers, the rays and the cameras annotator: every
camera, surface and depth value is known exactly.

World: z up, ground plane z = 0 (checkered), objects standing on it inside a disc of radius 1.
Cameras: an orbit of `n_views` cameras at `orbit_radius` from the z axis and `orbit_height` above the
ground, all looking at (0, 0, look_at_z); pinhole, square pixels, principal point at the image centre.

`write_scene(folder, config)` writes
  images/frame_NNNNN.png   RGB uint8 (Lambert shading + ambient, sky colour where nothing is hit)
  depth/frame_NNNNN.npy    float32 (H, W) z-depth along the optical axis (OpenCV camera +z) of the
                           surface seen through the pixel centre; 0 where nothing is hit (sky)
  masks/frame_NNNNN.png    uint8 (H, W) instance ids: 0 sky, 1 ground, 2 + k for object k of scene.json
  transforms.json          nerfstudio layout: fl_x, fl_y, cx, cy, w, h at top level, per frame an
                           OpenGL c2w `transform_matrix`, `file_path`, `depth_file_path`, `instance_mask_path`
  scene.json               the geometry (spheres, boxes, ground) and the config
Deterministic given the config (seed included). 8 views of 128 x 128 render in ~0.1-0.3 s.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from onegen.core.camera_geometry import opencv_to_opengl
from onegen.core.image_codec import encode_png

SKY = np.array([0.62, 0.75, 0.92])
LIGHT = np.array([0.4, -0.3, 0.87]) / np.linalg.norm([0.4, -0.3, 0.87])
_EPS = 1e-6
UP = np.array([0.0, 0.0, 1.0])  # world z up


@dataclass(frozen=True)
class SceneConfig:
    """Everything that decides the scene; the same config renders the same bytes."""

    seed: int = 0
    n_views: int = 8
    width: int = 128
    height: int = 128
    fov_x_deg: float = 50.0
    n_spheres: int = 2
    n_boxes: int = 2
    orbit_radius: float = 3.0
    orbit_height: float = 1.6
    look_at_z: float = 0.3


@dataclass
class Scene:
    """Ground truth: geometry plus OpenCV cameras (c2w (N, 4, 4), K (3, 3) shared by all views)."""

    spheres: list[dict] = field(default_factory=list)  # {"centre": [3], "radius", "colour": [3]}
    boxes: list[dict] = field(default_factory=list)  # {"min": [3], "max": [3], "colour": [3]}
    c2w: np.ndarray = field(default_factory=lambda: np.zeros((0, 4, 4)))
    intrinsics: np.ndarray = field(default_factory=lambda: np.eye(3))


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = UP) -> np.ndarray:
    """OpenCV c2w (4, 4) of a camera at `eye` whose optical axis (+z) points at `target` (y down)."""
    z = (target - eye) / np.linalg.norm(target - eye)
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([x, np.cross(z, x), z], axis=1)
    c2w[:3, 3] = eye
    return c2w


def make_scene(config: SceneConfig) -> Scene:
    """Place the objects and the orbit of cameras from `config.seed`."""
    rng = np.random.default_rng(config.seed)
    n_objects = config.n_spheres + config.n_boxes
    spots: list[np.ndarray] = []
    while len(spots) < n_objects:  # rejection sampling: objects do not overlap
        p = rng.uniform(-0.9, 0.9, size=2)
        if np.linalg.norm(p) < 1.0 and all(np.linalg.norm(p - q) > 0.55 for q in spots):
            spots.append(p)
    scene = Scene()
    for k, spot in enumerate(spots):
        colour = rng.uniform(0.2, 1.0, size=3).round(3).tolist()
        size = float(rng.uniform(0.15, 0.25))
        if k < config.n_spheres:
            scene.spheres.append({"centre": [*spot.tolist(), size], "radius": size, "colour": colour})
        else:
            height = float(rng.uniform(0.2, 0.6))
            scene.boxes.append(
                {
                    "min": [*(spot - size).tolist(), 0.0],
                    "max": [*(spot + size).tolist(), height],
                    "colour": colour,
                }
            )
    start = rng.uniform(0, 2 * np.pi)
    angles = start + 2 * np.pi * np.arange(config.n_views) / config.n_views
    target = np.array([0.0, 0.0, config.look_at_z])
    eyes = np.stack(
        [
            config.orbit_radius * np.cos(angles),
            config.orbit_radius * np.sin(angles),
            np.full_like(angles, config.orbit_height),
        ],
        axis=1,
    )
    scene.c2w = np.stack([look_at(eye, target) for eye in eyes])
    focal = 0.5 * config.width / np.tan(np.radians(config.fov_x_deg) / 2)
    scene.intrinsics = np.array([[focal, 0, config.width / 2], [0, focal, config.height / 2], [0, 0, 1.0]])
    return scene


def _hit_sphere(
    o: np.ndarray, d: np.ndarray, centre: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """Ray distances t (M,) (inf on a miss) and unit normals (M, 3); o, d (M, 3), d unit."""
    oc = o - centre
    b = (oc * d).sum(-1)
    disc = b * b - ((oc * oc).sum(-1) - radius * radius)
    root = np.sqrt(np.maximum(disc, 0.0))
    t = np.where(-b - root > _EPS, -b - root, -b + root)
    t = np.where((disc >= 0) & (t > _EPS), t, np.inf)
    normals = (o + np.where(np.isfinite(t), t, 0.0)[:, None] * d - centre) / radius
    return t, normals


def _hit_box(o: np.ndarray, d: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slab test for an axis-aligned box: distances t (M,) (inf on a miss) and normals (M, 3)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (lo - o) / d, (hi - o) / d  # (M, 3)
    near = np.nan_to_num(np.minimum(t1, t2), nan=-np.inf)
    far = np.nan_to_num(np.maximum(t1, t2), nan=np.inf)
    t_near, t_far = near.max(-1), far.min(-1)
    t = np.where((t_near <= t_far) & (t_near > _EPS), t_near, np.inf)
    axis = near.argmax(-1)
    normals = np.zeros_like(d)
    normals[np.arange(len(d)), axis] = -np.sign(d[np.arange(len(d)), axis])
    return t, normals


def _cast(scene: Scene, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest hit of rays o, d (M, 3): (t (M,), instance id (M,) uint8, colour (M, 3))."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ground = np.where(d[:, 2] < -_EPS, -o[:, 2] / d[:, 2], np.inf)
    best_t, ids = t_ground, np.where(np.isfinite(t_ground), 1, 0).astype(np.uint8)
    ground_point = o + np.where(np.isfinite(t_ground), t_ground, 0.0)[:, None] * d
    checker = (np.floor(ground_point[:, 0] * 2) + np.floor(ground_point[:, 1] * 2)) % 2
    base = np.where(checker[:, None] > 0, 0.55, 0.4) * np.ones(3)
    colour = base * (0.35 + 0.65 * LIGHT[2])
    objects = [(_hit_sphere(o, d, np.array(s["centre"]), s["radius"]), s["colour"]) for s in scene.spheres]
    objects += [(_hit_box(o, d, np.array(b["min"]), np.array(b["max"])), b["colour"]) for b in scene.boxes]
    for k, ((t, normals), obj_colour) in enumerate(objects):
        closer = t < best_t
        shade = 0.35 + 0.65 * np.clip(normals @ LIGHT, 0.0, 1.0)
        colour = np.where(closer[:, None], shade[:, None] * np.array(obj_colour), colour)
        best_t = np.where(closer, t, best_t)
        ids = np.where(closer, 2 + k, ids).astype(np.uint8)
    colour = np.where(ids[:, None] == 0, SKY, colour)
    return best_t, ids, colour


def render(scene: Scene, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render all views: (images (N, H, W, 3) uint8, z-depth (N, H, W) float32, instances (N, H, W) uint8)."""
    n = len(scene.c2w)
    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)  # pixel centres, (H, W)
    pix = np.stack([u, v, np.ones_like(u)], axis=-1)  # (H, W, 3)
    cam = pix @ np.linalg.inv(scene.intrinsics).T  # (H, W, 3), z = 1: direction with unit z-depth
    dirs = np.einsum("nij,hwj->nhwi", scene.c2w[:, :3, :3], cam).reshape(-1, 3)  # (N*H*W, 3)
    norms = np.linalg.norm(dirs, axis=-1)
    origins = np.repeat(scene.c2w[:, :3, 3], height * width, axis=0)  # (N*H*W, 3)
    t, ids, colour = _cast(scene, origins, dirs / norms[:, None])
    depth = np.where(np.isfinite(t), t / norms, 0.0)  # ray distance / |K^-1 p| = z-depth
    images = np.round(np.clip(colour, 0, 1) * 255).astype(np.uint8).reshape(n, height, width, 3)
    return images, depth.astype(np.float32).reshape(n, height, width), ids.reshape(n, height, width)


def write_scene(folder: str | Path, config: SceneConfig = SceneConfig()) -> Scene:
    """Render `config` into `folder` (layout in the module docstring); returns the ground truth."""
    folder = Path(folder)
    for sub in ("images", "depth", "masks"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    scene = make_scene(config)
    images, depth, ids = render(scene, config.width, config.height)
    k = scene.intrinsics
    frames = []
    for i in range(len(images)):
        stem = f"frame_{i:05d}"
        (folder / "images" / f"{stem}.png").write_bytes(encode_png(images[i]))
        np.save(folder / "depth" / f"{stem}.npy", depth[i])
        (folder / "masks" / f"{stem}.png").write_bytes(encode_png(ids[i]))
        frames.append(
            {
                "file_path": f"images/{stem}.png",
                "depth_file_path": f"depth/{stem}.npy",
                "instance_mask_path": f"masks/{stem}.png",
                "transform_matrix": opencv_to_opengl(scene.c2w[i]).tolist(),
            }
        )
    transforms = {
        "camera_model": "OPENCV",
        "fl_x": k[0, 0], "fl_y": k[1, 1], "cx": k[0, 2], "cy": k[1, 2],
        "w": config.width, "h": config.height,
        "frames": frames,
    }  # fmt: skip
    (folder / "transforms.json").write_text(json.dumps(transforms, indent=1))
    geometry = {
        "ground_z": 0.0,
        "spheres": scene.spheres,
        "boxes": scene.boxes,
        "instance_ids": "0 sky, 1 ground, 2 + k: object k of spheres + boxes (spheres first)",
        "depth": "z-depth along the optical axis, world units; 0 = no surface",
        "config": asdict(config),
    }
    (folder / "scene.json").write_text(json.dumps(geometry, indent=1))
    return scene
