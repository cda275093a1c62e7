"""Cameras and Plücker rays for the multiview task (docs/design.md §5). Pure numpy, no Ray, no pytorch3d.

Conventions (one set, used everywhere in onegen):
- A camera is an OpenCV camera-to-world matrix `c2w` (4, 4): camera axes x right, y down, z forward
  (the optical axis), plus pinhole intrinsics `K` (3, 3) in pixels of its image (width, height).
  Pixel (u, v) = (column, row) with pixel centres at integer + 0.5 (pixel i covers [i, i + 1)).
- OpenGL / nerfstudio c2w has camera y up and z backward; `opengl_to_opencv` flips the camera's
  y and z axes (right-multiplies by diag(1, -1, -1, 1)); the map is its own inverse.
- The normalised world is the released OneDiffusion frame (`calculate_rays` in
  onediffusion/dataset/multitask/multiview.py: RayDiffusion's `normalize_cameras` with scale 1.7, then
  `first_camera_transform(rotation_only=False)`): world = camera 0's *pytorch3d view frame* (+x left,
  +y up, +z forward), camera 0 at the origin, so its OpenCV c2w is diag(-1, -1, 1, 1); the world is
  scaled so the optical axes' least-squares intersection lies `CAMERA0_DISTANCE` (1.7) from camera 0,
  near (0, 0, 1.7). Normalised cameras are still OpenCV c2w, expressed in that world.
- Rays are one per latent cell: a view of (height, width) pixels has (height // 8, width // 8)
  cells; cell (i, j) is cast through pixel (u, v) = ((j + 0.5) * 8, (i + 0.5) * 8). For a square view
  this is the released grid (`compute_ndc_coordinates` with half-pixel offsets: NDC x from
  1 - 1/n to -(1 - 1/n), left to right, y likewise top to bottom); for a non-square view the released
  code casts its n x n grid over the centred min(W, H) square, which is what the multiview shards
  crop to before computing rays (pipelines/samples/multiview.py). A ray is [d, m] with d the unit
  world direction and m = o x d its moment (o the camera centre), so camera 0's moments are 0.
- The 16-channel ray latent is [d, m, d, m, d, m_x] * RAY_SCALE (3+3+3+3+3+1 channels).
- For users, `camera0_c2w` re-expresses cameras in camera 0's own OpenCV or OpenGL frame (camera 0 =
  identity), the frame a viewer or nerfstudio expects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RAY_STRIDE = 8  # VAE downsampling: one ray per latent cell
RAY_SCALE = 1.658  # the released code's scale of the 16-channel ray latent
CAMERA0_DISTANCE = 1.7  # RayDiffusion: camera 0 sits this far from the optical axes' intersection
_FLIP_YZ = np.diag([1.0, -1.0, -1.0, 1.0])
# OpenCV camera axes (x right, y down) -> pytorch3d view axes (x left, y up): a 180 degree turn about z
PYTORCH3D_FROM_OPENCV = np.diag([-1.0, -1.0, 1.0])


# --- conventions ------------------------------------------------------------------------------
def opengl_to_opencv(c2w: np.ndarray) -> np.ndarray:
    """(..., 4, 4) OpenGL/nerfstudio c2w -> OpenCV c2w (and back: the map is an involution)."""
    return np.asarray(c2w, dtype=np.float64) @ _FLIP_YZ


opencv_to_opengl = opengl_to_opencv


def rotation_angle_deg(r_a: np.ndarray, r_b: np.ndarray) -> np.ndarray:
    """Geodesic angle in degrees between rotations (..., 3, 3)."""
    rel = np.swapaxes(r_a, -1, -2) @ r_b
    cos = (np.trace(rel, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


# --- normalisation ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Normalization:
    """The similarity applied to the world by `normalize_cameras`.

    A world point x maps to `scale * rotation @ x + translation`; a camera's c2w maps to
    [[rotation @ R, scale * rotation @ t + translation], [0, 0, 0, 1]]. `degenerate` names the
    fallback used ("" when the optical axes' intersection was well defined).
    """

    rotation: np.ndarray  # (3, 3)
    translation: np.ndarray  # (3,)
    scale: float
    degenerate: str = ""

    def matrix(self) -> np.ndarray:
        """(4, 4) similarity acting on homogeneous world points."""
        m = np.eye(4)
        m[:3, :3] = self.scale * self.rotation
        m[:3, 3] = self.translation
        return m

    def apply(self, c2w: np.ndarray) -> np.ndarray:
        """(N, 4, 4) c2w in the input world -> (N, 4, 4) c2w in the normalised world."""
        out = np.array(c2w, dtype=np.float64)
        out[:, :3, :3] = self.rotation @ out[:, :3, :3]
        out[:, :3, 3] = self.scale * out[:, :3, 3] @ self.rotation.T + self.translation
        return out

    def invert(self, c2w: np.ndarray) -> np.ndarray:
        """Undo `apply`: normalised c2w (N, 4, 4) -> input-world c2w."""
        out = np.array(c2w, dtype=np.float64)
        out[:, :3, :3] = self.rotation.T @ out[:, :3, :3]
        out[:, :3, 3] = (out[:, :3, 3] - self.translation) @ self.rotation / self.scale
        return out

    def to_json(self) -> dict:
        return {
            "rotation": self.rotation.tolist(),
            "translation": self.translation.tolist(),
            "scale": float(self.scale),
            "degenerate": self.degenerate,
            "convention": "x_new = scale * rotation @ x + translation",
        }


def closest_point_to_lines(points: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares point nearest to lines p_i + s d_i; points, dirs (N, 3).

    Returns (x (3,), conditioning) where conditioning is the smallest eigenvalue of
    sum_i (I - d_i d_i^T) divided by N: ~0 for parallel lines or one line (no unique point).
    """
    d = dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)
    proj = np.eye(3) - d[:, :, None] * d[:, None, :]  # (N, 3, 3) projectors orthogonal to d_i
    a = proj.sum(0)
    b = (proj @ points[:, :, None]).sum(0)[:, 0]
    x = np.linalg.lstsq(a, b, rcond=None)[0]
    return x, float(np.linalg.eigvalsh(a)[0] / len(points))


def normalize_cameras(
    c2w: np.ndarray, distance: float = CAMERA0_DISTANCE, min_conditioning: float = 1e-4
) -> tuple[np.ndarray, Normalization]:
    """The released normalisation of OpenCV c2w (N, 4, 4) -> (normalised OpenCV c2w, transform).

    As `calculate_rays(do_normalize_cameras=True, normalize_scale=distance)` of the released code
    (RayDiffusion's `normalize_cameras`, then `first_camera_transform(rotation_only=False)`):
    1. Centre = least-squares intersection of the optical axes (+z of every camera); d = the distance
       from camera 0's centre to it.
    2. The world becomes camera 0's pytorch3d view frame (+x left, +y up, +z forward): camera 0 sits
       at the origin with c2w rotation diag(-1, -1, 1), scaled by `distance` / d, so the centre lies
       `distance` in front of camera 0 (exactly (0, 0, distance) when it is on camera 0's axis).
    The result does not depend on the input world frame (any rotation, translation, positive scale).

    Fallback (recorded in `Normalization.degenerate`; the released code would return identity cameras
    or NaNs): with one view, (nearly) parallel axes (conditioning below `min_conditioning`), or an
    intersection that is not in front of camera 0 (e.g. a panorama rotating about one point), d is
    the largest distance between camera 0 and another camera centre, or 1 when all centres coincide
    (one view: the scene scale is unknown).
    """
    c2w = np.asarray(c2w, dtype=np.float64)
    r0, t0 = c2w[0, :3, :3], c2w[0, :3, 3]
    to_cam0 = Normalization(r0.T, -r0.T @ t0, 1.0)
    local = to_cam0.apply(c2w)  # camera 0's OpenCV frame = world frame
    centres, axes = local[:, :3, 3], local[:, :3, 2]  # (N, 3) each
    degenerate = ""
    if len(c2w) < 2:
        degenerate = "single_view"
    else:
        centre, conditioning = closest_point_to_lines(centres, axes)
        if conditioning < min_conditioning:
            degenerate = "parallel_axes"
        elif centre[2] <= 1e-6 * max(1.0, np.abs(centres).max()):  # not in front of camera 0
            degenerate = "centre_behind_camera0"
    if degenerate:
        spread = float(np.linalg.norm(centres, axis=-1).max())
        centre = np.array([0.0, 0.0, spread if spread > 1e-9 else 1.0])
    scale = distance / float(np.linalg.norm(centre))
    transform = Normalization(
        rotation=PYTORCH3D_FROM_OPENCV @ to_cam0.rotation,
        translation=scale * PYTORCH3D_FROM_OPENCV @ to_cam0.translation,
        scale=scale,
        degenerate=degenerate,
    )
    return transform.apply(c2w), transform


def first_camera_frame(c2w: np.ndarray) -> tuple[np.ndarray, Normalization]:
    """The released `first_camera_transform(rotation_only=False)` alone: OpenCV c2w (N, 4, 4) -> the
    same cameras in camera 0's pytorch3d view frame (camera 0 at the origin), scale unchanged.

    This is what the released `img2img(is_multiview=True)` does to the user's cameras (it calls
    `calculate_rays` without normalisation), so their scale is the caller's.
    """
    c2w = np.asarray(c2w, dtype=np.float64)
    r0, t0 = c2w[0, :3, :3], c2w[0, :3, 3]
    rotation = PYTORCH3D_FROM_OPENCV @ r0.T
    transform = Normalization(rotation, -rotation @ t0, 1.0)
    return transform.apply(c2w), transform


def camera0_c2w(c2w: np.ndarray, convention: str = "opencv") -> np.ndarray:
    """OpenCV c2w (N, 4, 4) in any world -> c2w relative to camera 0 (camera 0 becomes the identity).

    `convention` "opencv": OpenCV c2w in camera 0's OpenCV frame (x right, y down, z forward);
    "opengl": OpenGL/nerfstudio c2w in camera 0's OpenGL frame (x right, y up, z backward). For
    cameras in the released frame (camera 0 exactly at the origin with rotation diag(-1, -1, 1)) the
    OpenCV result is diag(-1, -1, 1, 1) @ c2w; for estimated cameras it re-anchors on estimated camera 0.
    """
    c2w = np.asarray(c2w, dtype=np.float64)
    relative = np.linalg.inv(c2w[0]) @ c2w  # (N, 4, 4)
    if convention == "opencv":
        return relative
    if convention == "opengl":
        return _FLIP_YZ @ relative @ _FLIP_YZ
    raise ValueError(f"convention must be 'opencv' or 'opengl', got {convention!r}")


def orbit_c2w(azimuth_deg: float, elevation_deg: float, distance: float) -> np.ndarray:
    """OpenGL c2w (4, 4) of a camera on a sphere about the origin looking at it, world z up.

    The released pipeline's `create_c2w_matrix` (its multiview defaults: azimuths 0, 30, 60, 90,
    elevation 0, distance 1.7): position (cos e cos a, cos e sin a, sin e) * distance; camera z points
    away from the origin, x = world up x z (world y up when looking straight down), y = z x x.
    """
    a, e = np.radians(azimuth_deg), np.radians(elevation_deg)
    position = distance * np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])
    back = position / np.linalg.norm(position)
    right = np.cross([0.0, 0.0, 1.0], back)
    if np.linalg.norm(right) < 1e-6:
        right = np.cross([0.0, 1.0, 0.0], back)
    right /= np.linalg.norm(right)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([right, np.cross(back, right), back], axis=1)
    c2w[:3, 3] = position
    return c2w


RELEASED_FOCAL = 1.3887  # the released pipeline's multiview focal length, in units of the image side


def sampling_cameras(document: dict, n: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """The first n cameras a sampling request describes -> (OpenCV c2w (n, 4, 4), K (n, 3, 3) pixels).

    `document` (a parsed JSON file) holds either explicit cameras, {"c2w": OpenCV (N, 4, 4)} or
    {"c2w_opengl": OpenGL (N, 4, 4)}, with "intrinsics" (N, 3, 3) in pixels of the sampled size, or the
    released pipeline's orbit: {"azimuths": [deg], "elevations": [deg] (default 0), "distances": one
    value or a list (default 1.7)}. Without "intrinsics", K is the released default: focal
    `focal_length` (default 1.3887) times the image side, principal point at the centre.
    """
    if "c2w" in document:
        c2w = np.asarray(document["c2w"], dtype=np.float64)[:n]
    elif "c2w_opengl" in document:
        c2w = opengl_to_opencv(np.asarray(document["c2w_opengl"], dtype=np.float64)[:n])
    elif "azimuths" in document:
        azimuths = list(document["azimuths"])[:n]
        elevations = list(document.get("elevations") or [0.0] * len(azimuths))[: len(azimuths)]
        distances = document.get("distances", CAMERA0_DISTANCE)
        distances = list(distances)[: len(azimuths)] if isinstance(distances, list) else [distances] * len(azimuths)
        views = zip(azimuths, elevations, distances, strict=True)  # a shorter list is an error
        c2w = opengl_to_opencv(np.stack([orbit_c2w(*view) for view in views]))
    else:
        raise ValueError("cameras JSON needs 'c2w', 'c2w_opengl' or 'azimuths'")
    if len(c2w) < n:
        raise ValueError(f"cameras JSON describes {len(c2w)} cameras, the request needs {n}")
    if "intrinsics" in document:
        intrinsics = np.asarray(document["intrinsics"], dtype=np.float64)[:n]
    else:
        focal = float(document.get("focal_length", RELEASED_FOCAL))
        k = np.array([[focal * width, 0.0, width / 2], [0.0, focal * height, height / 2], [0.0, 0.0, 1.0]])
        intrinsics = np.repeat(k[None], n, axis=0)
    return c2w, intrinsics


# --- rays -------------------------------------------------------------------------------------
def ray_grid(width: int, height: int, stride: int = RAY_STRIDE) -> np.ndarray:
    """(h, w, 3) homogeneous pixel coordinates [u, v, 1] of the latent-cell centres."""
    h, w = height // stride, width // stride
    u = (np.arange(w) + 0.5) * stride
    v = (np.arange(h) + 0.5) * stride
    uu, vv = np.meshgrid(u, v)  # (h, w) each, row-major: vv varies along rows
    return np.stack([uu, vv, np.ones_like(uu)], axis=-1)


def plucker_rays(
    c2w: np.ndarray, intrinsics: np.ndarray, width: int, height: int, stride: int = RAY_STRIDE
) -> np.ndarray:
    """Plücker rays of N views sharing one image size: c2w (N, 4, 4), K (N, 3, 3) -> (N, h, w, 6).

    h = height // stride, w = width // stride; channels [d (unit, world), m = o x d].
    """
    c2w = np.asarray(c2w, dtype=np.float64)
    pix = ray_grid(width, height, stride)  # (h, w, 3)
    k_inv = np.linalg.inv(np.asarray(intrinsics, dtype=np.float64))  # (N, 3, 3)
    cam_to_world = c2w[:, :3, :3] @ k_inv  # (N, 3, 3): pixel -> world direction
    dirs = np.einsum("nij,hwj->nhwi", cam_to_world, pix)  # (N, h, w, 3)
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    origins = np.broadcast_to(c2w[:, None, None, :3, 3], dirs.shape)  # (N, h, w, 3)
    return np.concatenate([dirs, np.cross(origins, dirs)], axis=-1)  # (N, h, w, 6)


def rays_to_latent(rays: np.ndarray, scale: float = RAY_SCALE) -> np.ndarray:
    """(..., h, w, 6) rays -> (..., 16, h, w) latent [d, m, d, m, d, m_x] * scale."""
    d, m = rays[..., :3], rays[..., 3:]
    stacked = np.concatenate([d, m, d, m, d, m[..., :1]], axis=-1) * scale  # (..., h, w, 16)
    return np.moveaxis(stacked, -1, -3)


def latent_to_rays(latent: np.ndarray, scale: float = RAY_SCALE) -> np.ndarray:
    """(..., 16, h, w) ray latent -> (..., h, w, 6) rays (the first d and m copies, unscaled)."""
    x = np.moveaxis(np.asarray(latent, dtype=np.float64), -3, -1) / scale  # (..., h, w, 16)
    return x[..., :6]


# --- cameras from rays ------------------------------------------------------------------------
@dataclass(frozen=True)
class RayCamera:
    """A camera recovered from one view's rays: OpenCV c2w (4, 4) and the K used or estimated."""

    c2w: np.ndarray
    intrinsics: np.ndarray


def _procrustes(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Rotation R (3, 3) minimising sum ||R src_i - dst_i||^2; src, dst (M, 3) (Kabsch, via SVD)."""
    u, _, vt = np.linalg.svd(dst.T @ src)
    fix = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    return u @ fix @ vt


def _dlt_rotation_intrinsics(pix: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Solve dirs_i ~ P pix_i (P = R K^-1, up to scale) by DLT, then split P by RQ. pix, dirs (M, 3)."""
    rows = []
    for a, b in ((1, 2), (2, 0), (0, 1)):  # the components of d x (P p) = 0
        row = np.zeros((len(pix), 3, 3))
        row[:, b, :] = dirs[:, a, None] * pix
        row[:, a, :] -= dirs[:, b, None] * pix
        rows.append(row.reshape(len(pix), 9))
    _, _, vt = np.linalg.svd(np.concatenate(rows))
    p = vt[-1].reshape(3, 3)
    m = np.linalg.inv(p)  # = K R^T up to scale: upper-triangular times rotation (RQ)
    q, r = np.linalg.qr(np.flipud(m).T)  # RQ decomposition through QR of the flipped transpose
    k = np.flipud(np.fliplr(r.T))
    rt = np.flipud(q.T)
    signs = np.diag(np.sign(np.diag(k)))  # positive focal lengths
    k, rt = k @ signs, signs @ rt
    if np.linalg.det(rt) < 0:  # the overall sign of P is free: pick the proper rotation
        rt = -rt
    return rt.T, k / k[2, 2]


def camera_from_rays(
    rays: np.ndarray,
    intrinsics: np.ndarray | None = None,
    width: int | None = None,
    height: int | None = None,
    stride: int = RAY_STRIDE,
) -> RayCamera:
    """One view's rays (h, w, 6) -> camera: least-squares centre + Procrustes rotation.

    The centre is the point closest to all rays (each ray's line passes through d x m). With
    `intrinsics` given, the rotation aligns the camera-frame directions K^-1 [u, v, 1] of the cell
    centres to the ray directions (Kabsch). With `intrinsics=None` the rotation and K (focal,
    principal point, skew) are estimated together by DLT + RQ decomposition. `width`/`height`
    default to the grid size times `stride`.
    """
    h, w = rays.shape[:2]
    width, height = width or w * stride, height or h * stride
    d = rays[..., :3].reshape(-1, 3)
    d = d / np.linalg.norm(d, axis=-1, keepdims=True)
    m = rays[..., 3:].reshape(-1, 3)
    centre, _ = closest_point_to_lines(np.cross(d, m), d)
    pix = ray_grid(width, height, stride).reshape(-1, 3)
    if intrinsics is None:
        rotation, intrinsics = _dlt_rotation_intrinsics(pix, d)
    else:
        intrinsics = np.asarray(intrinsics, dtype=np.float64)
        cam = pix @ np.linalg.inv(intrinsics).T
        rotation = _procrustes(cam / np.linalg.norm(cam, axis=-1, keepdims=True), d)
    c2w = np.eye(4)
    c2w[:3, :3], c2w[:3, 3] = rotation, centre
    return RayCamera(c2w=c2w, intrinsics=intrinsics)


def cameras_from_rays(
    rays: np.ndarray,
    intrinsics: np.ndarray | None = None,
    width: int | None = None,
    height: int | None = None,
    stride: int = RAY_STRIDE,
) -> list[RayCamera]:
    """All views' rays (N, h, w, 6) -> N cameras (`camera_from_rays` per view; K (N, 3, 3) or None).

    The c2w come back in the frame of the rays, i.e. the released frame for rays made by this module
    or estimated by the model; `camera0_c2w` turns them into camera 0's OpenCV / OpenGL frame.
    """
    ks = [None] * len(rays) if intrinsics is None else list(np.asarray(intrinsics, dtype=np.float64))
    return [camera_from_rays(r, k, width, height, stride) for r, k in zip(rays, ks, strict=True)]


# --- alignment (the camera-centre metric is evaluation/camera_metrics.py's) ---------------------------
def align_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Umeyama: the similarity (s, R, t) minimising sum ||s R src_i + t - dst_i||^2; returns aligned src."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(xd.T @ xs / len(src))
    fix = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rotation = u @ fix @ vt
    var = (xs**2).sum() / len(src)
    scale = float((sig * np.diag(fix)).sum() / var) if var > 0 else 1.0
    return scale * xs @ rotation.T + mu_d
