"""Our rays against a numpy transcription of the released OneDiffusion ray computation, to 1e-5.

The transcription follows lehduong/OneDiffusion `onediffusion/dataset/multitask/multiview.py`
(`_cameras_from_opencv_projection`, `calculate_rays`, the dataset's OpenGL -> OpenCV step) and
`onediffusion/dataset/raydiff_utils.py` (`normalize_cameras`, `first_camera_transform`,
`compute_optical_axis_intersection`, `cameras_to_rays`, `compute_ndc_coordinates`), with pytorch3d's
conventions written out: row vectors, world-to-view X_view = X_world @ R + T, Transform3d.compose
multiplies matrices left to right, PerspectiveCameras' projection matrix (in NDC) and unproject_points
as the inverse of the full projection applied to (x, y, 1 / depth). Nothing here calls onegen's cameras
module, so a change of frame, origin, scale or grid there fails these tests.
"""

from __future__ import annotations

import io
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from onegen.annotators.cameras_annotator import CamerasAnnotator  # noqa: E402
from onegen.core.camera_geometry import (  # noqa: E402
    camera0_c2w,
    cameras_from_rays,
    latent_to_rays,
    normalize_cameras,
    opencv_to_opengl,
    opengl_to_opencv,
    plucker_rays,
)
from onegen.pipelines.demo.synthetic_scene import SceneConfig, write_scene  # noqa: E402
from onegen.pipelines.samples.multiview import square_view  # noqa: E402
from onegen.pipelines.sources.co3d import co3d_camera  # noqa: E402
from onegen.pipelines.sources.scene_cameras import read_transforms_json  # noqa: E402

TOL = 1e-5


# --- pytorch3d, written out -------------------------------------------------------------------
def rotate(r: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = r
    return m


def translate(t: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[3, :3] = t
    return m


def world_to_view(r: np.ndarray, t: np.ndarray) -> np.ndarray:
    """get_world_to_view_transform: Rotate(R).compose(Translate(T)) as a (4, 4) row-vector matrix."""
    return rotate(r) @ translate(t)


def projection(focal: np.ndarray, principal: np.ndarray) -> np.ndarray:
    """PerspectiveCameras (NDC) projection, row-vector form: [X, Y, Z, 1] -> [fx X + px Z, fy Y + py Z, 1, Z]."""
    k = np.zeros((4, 4))
    k[0, 0], k[1, 1] = focal
    k[2, 0], k[2, 1] = principal
    k[2, 3] = k[3, 2] = 1.0
    return k


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    homogeneous = np.concatenate([points, np.ones((len(points), 1))], axis=1) @ matrix  # (P, 4)
    return homogeneous[:, :3] / homogeneous[:, 3:]


def camera_center(r: np.ndarray, t: np.ndarray) -> np.ndarray:
    return np.linalg.inv(world_to_view(r, t))[3, :3]


def unproject(xy_depth: np.ndarray, r, t, focal, principal) -> np.ndarray:
    """unproject_points(world_coordinates=True, from_ndc=True) of an in-NDC PerspectiveCameras."""
    full = world_to_view(r, t) @ projection(focal, principal)
    xy_inv_depth = np.concatenate([xy_depth[:, :2], 1.0 / xy_depth[:, 2:3]], axis=1)
    return transform_points(xy_inv_depth, np.linalg.inv(full))


# --- the released code, transcribed -----------------------------------------------------------
def cameras_from_opencv_projection(rs, tvecs, ks, sizes_hw):
    """_cameras_from_opencv_projection before normalisation -> lists of (R, T, focal, principal)."""
    cams = []
    for r, tvec, k, (h, w) in zip(rs, tvecs, ks, sizes_hw, strict=True):
        wh = np.array([w, h], dtype=np.float64)
        scale = wh.min() / 2.0
        focal = np.array([k[0, 0], k[1, 1]]) / scale
        principal = -(k[:2, 2] - wh / 2.0) / scale
        r_p3d, t_p3d = r.T.copy(), tvec.copy()
        r_p3d[:, :2] *= -1
        t_p3d[:2] *= -1
        cams.append([r_p3d, t_p3d, focal, principal])
    return cams


def released_normalize_cameras(cams, scale):
    centres = np.stack([camera_center(r, t) for r, t, _, _ in cams])  # (N, 3)
    pp = np.stack([unproject(np.array([[*p, 1.0]]), r, t, f, p)[0] for r, t, f, p in cams])  # (N, 3)
    dirs = pp - centres
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    proj = np.eye(3)[None] - dirs[:, :, None] * dirs[:, None, :]  # (N, 3, 3)
    p_intersect = np.linalg.lstsq(proj.sum(0), (proj @ centres[:, :, None]).sum(0), rcond=None)[0][:, 0]
    d = np.linalg.norm(p_intersect - centres[0])
    t = np.linalg.inv(rotate(cams[0][0])) @ translate(p_intersect)  # tR.compose(tT), tR = Rotate(R0).inverse()
    out = []
    for r, tr, f, p in cams:
        new = t @ world_to_view(r, tr)
        out.append([new[:3, :3], new[3, :3] / d * scale, f, p])
    return out


def released_first_camera_transform(cams):
    t = np.linalg.inv(rotate(cams[0][0]) @ translate(cams[0][1]))  # tR.compose(tT).inverse()
    out = []
    for r, tr, f, p in cams:
        new = t @ world_to_view(r, tr)
        out.append([new[:3, :3], new[3, :3], f, p])
    return out


def ndc_grid(n: int) -> np.ndarray:
    """compute_ndc_coordinates(crop_parameters=None, use_half_pix=True): (n, n, 3) of (x, y, 1)."""
    line = np.linspace(1 - 1 / n, -(1 - 1 / n), n)
    y, x = np.meshgrid(line, line, indexing="ij")
    return np.stack([x, y, np.ones_like(x)], axis=-1)


def released_calculate_rays(rs, tvecs, ks, sizes_hw, n, do_normalize, scale=1.7):
    """calculate_rays(K, sizes, Rs, Ts, n, use_plucker=True, ...) -> (N, n, n, 6) [d, o x d]."""
    cams = cameras_from_opencv_projection(rs, tvecs, ks, sizes_hw)
    if do_normalize:
        cams = released_normalize_cameras(cams, scale)
    cams = released_first_camera_transform(cams)
    grid = ndc_grid(n).reshape(-1, 3)
    rays = []
    for r, t, f, p in cams:
        origin = camera_center(r, t)
        dirs = unproject(grid, r, t, f, p) - origin
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        rays.append(np.concatenate([dirs, np.cross(np.broadcast_to(origin, dirs.shape), dirs)], axis=1))
    return np.stack(rays).reshape(len(cams), n, n, 6)


def released_dataset_w2c(transform_matrices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MultiviewDataset.__getitem__: nerfstudio c2w -> its 'OpenCV' c2w -> (Rs, Ts) of the inverse."""
    c2ws = np.array(transform_matrices, dtype=np.float64)
    c2ws[:, 0:3, 1:3] *= -1
    c2ws = c2ws[:, [1, 0, 2, 3], :]
    c2ws[:, 2, :] *= -1
    w2cs = np.linalg.inv(c2ws)
    return w2cs[:, :3, :3], w2cs[:, :3, 3]


def opencv_w2c(c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w2c = np.linalg.inv(c2w)
    return w2c[:, :3, :3], w2c[:, :3, 3]


# --- the synthetic scene ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    folder = tmp_path_factory.mktemp("released_scene")
    write_scene(folder, SceneConfig(n_views=5, width=64, height=64, seed=11))
    return folder, read_transforms_json(folder)


def test_synthetic_scene_rays_match_the_released_dataset_path(synthetic):
    folder, row = synthetic
    document = json.loads((folder / "transforms.json").read_text())
    frames = document["frames"]
    rs, ts = released_dataset_w2c([frame["transform_matrix"] for frame in frames])
    k = np.array([[document["fl_x"], 0, document["w"] // 2], [0, document["fl_y"], document["h"] // 2], [0, 0, 1.0]])
    sizes = [(document["h"], document["w"])] * len(frames)
    expected = released_calculate_rays(rs, ts, [k] * len(frames), sizes, 8, do_normalize=True)  # (5, 8, 8, 6)

    out = CamerasAnnotator()({column: [value] for column, value in row.items()})
    assert out["status"] == ["ok"], out["error"]
    cameras = json.loads(out["cameras_json"][0])["cameras"]
    c2w = np.array([camera["c2w"] for camera in cameras])
    intrinsics = np.array([camera["K"] for camera in cameras])
    ours = plucker_rays(c2w, intrinsics, 64, 64)  # (5, 8, 8, 6) from the annotator's normalised cameras
    np.testing.assert_allclose(ours, expected, atol=TOL)
    for i, blob in enumerate(out["rays"][0]):  # the stored float16 latents carry the same rays
        np.testing.assert_allclose(latent_to_rays(np.load(io.BytesIO(blob))), expected[i], atol=2e-3)
    # the frame in words: view 0's moments vanish, its top-left ray points left (+x) and up (+y)
    assert np.abs(ours[0, ..., 3:]).max() < TOL
    assert ours[0, 0, 0, 0] > 0 and ours[0, 0, 0, 1] > 0
    np.testing.assert_allclose(c2w[0], np.diag([-1.0, -1.0, 1.0, 1.0]), atol=1e-12)


# --- a CO3D-style set: pytorch3d cameras, non-square frames, off-centre principal points ---------
def co3d_viewpoints(rng: np.random.Generator, n: int) -> list[dict]:
    """Pytorch3D cameras (ndc_isotropic) around an object ~7 units away, axes nearly meeting."""
    target = np.array([0.4, -1.2, 3.0])
    views = []
    for i in range(n):
        angle = 0.5 * i + rng.uniform(-0.1, 0.1)
        eye = target + 7.0 * np.array([np.cos(angle), rng.uniform(-0.3, 0.3), np.sin(angle)])
        look = target + rng.normal(scale=0.2, size=3) - eye
        z = look / np.linalg.norm(look)  # pytorch3d +z forward
        x = np.cross([0.0, 1.0, 0.0], z)  # pytorch3d +x left, +y up
        x /= np.linalg.norm(x)
        r_view_to_world = np.stack([x, np.cross(z, x), z], axis=1)
        r = r_view_to_world  # row-vector convention: X_view = X_world @ R + T with R = view->world columns
        t = -eye @ r
        views.append({
            "R": r.tolist(), "T": t.tolist(), "intrinsics_format": "ndc_isotropic",
            "focal_length": [rng.uniform(1.6, 2.4)] * 2, "principal_point": rng.uniform(-0.05, 0.05, 2).tolist(),
        })  # fmt: skip
    return views


def test_co3d_style_rays_match_the_released_computation():
    rng = np.random.default_rng(7)
    height, width, resolution = 120, 160, 64  # crop offset 20 px: the released NDC square, exactly
    viewpoints = co3d_viewpoints(rng, 6)
    poses = [co3d_camera(v, [height, width]) for v in viewpoints]
    c2w, ks = np.stack([p[0] for p in poses]), np.stack([p[1] for p in poses])
    rs, ts = opencv_w2c(c2w)
    cams = cameras_from_opencv_projection(rs, ts, ks, [(height, width)] * 6)
    for (r, t, f, p), view in zip(cams, viewpoints, strict=True):  # the reader's inverse of CO3D's cameras
        np.testing.assert_allclose(r, view["R"], atol=1e-12)
        np.testing.assert_allclose(t, view["T"], atol=1e-9)
        np.testing.assert_allclose(f, view["focal_length"], atol=1e-12)
        np.testing.assert_allclose(p, view["principal_point"], atol=1e-12)
    expected = released_calculate_rays(rs, ts, ks, [(height, width)] * 6, resolution // 8, do_normalize=True)

    buffer = io.BytesIO()
    Image.new("RGB", (width, height)).save(buffer, format="PNG")
    views = [square_view(buffer.getvalue(), k, resolution) for k in ks]  # the shard path's crop + resize K
    normalised, _ = normalize_cameras(c2w)
    ours = plucker_rays(normalised, np.stack([v.intrinsics for v in views]), resolution, resolution)
    np.testing.assert_allclose(ours, expected, atol=TOL)
    assert np.abs(ours[0, ..., 3:]).max() < TOL


def test_cameras_come_back_from_rays_in_the_released_frame_and_convert_for_users():
    rng = np.random.default_rng(8)
    poses = [co3d_camera(v, [96, 96]) for v in co3d_viewpoints(rng, 4)]
    c2w, ks = np.stack([p[0] for p in poses]), np.stack([p[1] for p in poses])
    normalised, _ = normalize_cameras(c2w)
    got = cameras_from_rays(plucker_rays(normalised, ks, 96, 96), ks, 96, 96)
    estimated = np.stack([camera.c2w for camera in got])
    np.testing.assert_allclose(estimated, normalised, atol=1e-8)
    # for users: relative to camera 0 in its own OpenCV / OpenGL frame, the same rigid motion as the input
    relative = np.linalg.inv(c2w[0]) @ c2w
    relative[:, :3, 3] *= np.linalg.norm(normalised[1, :3, 3]) / np.linalg.norm(relative[1, :3, 3])  # the scale
    np.testing.assert_allclose(camera0_c2w(estimated, "opencv"), relative, atol=1e-8)
    gl = camera0_c2w(estimated, "opengl")
    np.testing.assert_allclose(gl[0], np.eye(4), atol=1e-8)
    np.testing.assert_allclose(gl, np.linalg.inv(opencv_to_opengl(relative[0])) @ opencv_to_opengl(relative), atol=1e-8)


# --- the sampler: img2img(is_multiview=True) ----------------------------------------------------
def released_orbit_c2w(azimuth, elevation, distance):
    """create_c2w_matrix of the released pipeline, transcribed."""
    a, e = np.deg2rad(azimuth), np.deg2rad(elevation)
    position = distance * np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])
    forward = position - np.zeros(3)  # target = 2 * position - target; forward = target - position
    forward /= np.linalg.norm(forward)
    right = np.cross([0, 0, 1.0], forward)
    right /= np.linalg.norm(right)
    c2w = np.eye(4)
    c2w[:3, :3] = np.vstack([right, np.cross(forward, right), forward]).T
    c2w[:3, 3] = position
    return c2w


def test_sampler_condition_rays_match_released_img2img(tmp_path):
    torch = pytest.importorskip("torch")
    from onegen.training.sample import SampleRequest, _ray_latents

    azimuths, elevations, focal, size = [0, 30, 60, 90], [0, 10, 0, -20], 1.3887, 64
    c2ws = np.stack([released_orbit_c2w(a, e, 1.7) for a, e in zip(azimuths, elevations, strict=True)])
    rs, ts = released_dataset_w2c(c2ws)  # img2img applies the same conversion
    k = np.array([[focal, 0, 0.5], [0, focal, 0.5], [0, 0, 1.0]])
    rays = released_calculate_rays(rs, ts, [k] * 4, [(1, 1)] * 4, size // 8, do_normalize=False)  # (4, 8, 8, 6)
    expected = np.concatenate([rays, rays, rays[..., :4]], axis=-1) * 1.658  # (4, 8, 8, 16)
    expected = np.moveaxis(expected, -1, 1)  # (4, 16, 8, 8)

    (tmp_path / "orbit.json").write_text(json.dumps({"azimuths": azimuths, "elevations": elevations}))
    orbit = _ray_latents(SampleRequest("multiview", cameras=str(tmp_path / "orbit.json"), size=(size, size)), 4)
    np.testing.assert_allclose(orbit.numpy(), expected, atol=TOL)
    # the same cameras given as OpenCV c2w + pixel K give the same rays
    pixel_k = np.diag([size, size, 1.0]) @ k
    explicit = {"c2w": opengl_to_opencv(c2ws).tolist(), "intrinsics": [pixel_k.tolist()] * 4}
    (tmp_path / "explicit.json").write_text(json.dumps(explicit))
    given = _ray_latents(SampleRequest("multiview", cameras=str(tmp_path / "explicit.json"), size=(size, size)), 4)
    assert isinstance(given, torch.Tensor)
    np.testing.assert_allclose(given.numpy(), expected, atol=TOL)
