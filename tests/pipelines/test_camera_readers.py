"""Each camera reader, on fixtures written here from a synthetic scene's ground-truth cameras."""

from __future__ import annotations

import gzip
import json
import shutil
import struct

import numpy as np
import pyarrow as pa
import pytest

from onegen.manifests.schemas import CATALOG_SCHEMA
from onegen.pipelines.demo.synthetic_scene import SceneConfig, write_scene
from onegen.pipelines.sources.co3d import read_co3d
from onegen.pipelines.sources.scene_cameras import read_colmap, read_transforms_json, scene_sha256

WIDTH, HEIGHT = 64, 48


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic")
    truth = write_scene(folder, SceneConfig(n_views=4, width=WIDTH, height=HEIGHT, seed=3))
    return folder, truth


def cameras_of(row: dict) -> tuple[np.ndarray, np.ndarray]:
    meta = json.loads(row["meta"])
    assert meta["convention"] == "opencv_c2w"
    return np.array([c["c2w"] for c in meta["cameras"]]), np.array([c["K"] for c in meta["cameras"]])


def project(c2w: np.ndarray, k: np.ndarray, points: np.ndarray) -> np.ndarray:
    """OpenCV pinhole projection of world points (M, 3) -> pixels (M, 2)."""
    cam = (points - c2w[:3, 3]) @ c2w[:3, :3]
    uvw = cam @ k.T
    return uvw[:, :2] / uvw[:, 2:]


def rotation_to_quaternion(r: np.ndarray) -> np.ndarray:
    """(w, x, y, z) from a rotation matrix (Shepperd, w > 0 branch suffices for these cameras' checks)."""
    w = np.sqrt(max(1.0 + np.trace(r), 1e-12)) / 2
    if w > 1e-3:
        return np.array(
            [w, (r[2, 1] - r[1, 2]) / (4 * w), (r[0, 2] - r[2, 0]) / (4 * w), (r[1, 0] - r[0, 1]) / (4 * w)]
        )
    i = int(np.argmax(np.diag(r)))
    j, k = (i + 1) % 3, (i + 2) % 3
    s = np.sqrt(1.0 + r[i, i] - r[j, j] - r[k, k]) * 2
    q = np.zeros(4)
    q[0], q[1 + i] = (r[k, j] - r[j, k]) / s, s / 4
    q[1 + j], q[1 + k] = (r[j, i] + r[i, j]) / s, (r[k, i] + r[i, k]) / s
    return q


def w2c(c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rotation = c2w[:3, :3].T
    return rotation_to_quaternion(rotation), -rotation @ c2w[:3, 3]


def test_transforms_json_matches_ground_truth(scene):
    folder, truth = scene
    row = read_transforms_json(folder)
    c2w, k = cameras_of(row)
    np.testing.assert_allclose(c2w, truth.c2w, atol=1e-9)
    np.testing.assert_allclose(k, np.stack([truth.intrinsics] * 4), atol=1e-9)
    views = [(folder / "images" / f"frame_{i:05d}.png").read_bytes() for i in range(4)]
    assert row["view_images"] == views and row["sha256"] == scene_sha256(views)
    assert (row["kind"], row["width"], row["height"], row["image_format"]) == ("scene", WIDTH, HEIGHT, "png")
    pa.Table.from_pylist([row], schema=CATALOG_SCHEMA)  # the row fits the catalog schema


def test_instant_ngp_style_camera_angle_x_and_extensionless_paths(scene, tmp_path):
    folder, truth = scene
    shutil.copytree(folder / "images", tmp_path / "images")
    focal = truth.intrinsics[0, 0]
    frames = [
        {
            "file_path": f"./images/frame_{i:05d}",
            "transform_matrix": json.loads((folder / "transforms.json").read_text())["frames"][i][
                "transform_matrix"
            ],
        }
        for i in range(4)
    ]
    angle_x = 2 * np.arctan(WIDTH / (2 * focal))
    (tmp_path / "transforms.json").write_text(json.dumps({"camera_angle_x": angle_x, "frames": frames}))
    c2w, k = cameras_of(read_transforms_json(tmp_path))
    np.testing.assert_allclose(c2w, truth.c2w, atol=1e-9)
    np.testing.assert_allclose(k[0], truth.intrinsics, atol=1e-6)  # fl_y = fl_x, centre principal point


def write_colmap_text(sparse, truth, names):
    sparse.mkdir(parents=True)
    k = truth.intrinsics
    (sparse / "cameras.txt").write_text(
        f"# Camera list\n1 PINHOLE {WIDTH} {HEIGHT} {' '.join(repr(float(x)) for x in (k[0, 0], k[1, 1], k[0, 2], k[1, 2]))}\n"
    )
    lines = ["# Image list with two lines of data per image:"]
    for i in reversed(range(len(names))):  # file order differs from name order on purpose
        q, t = w2c(truth.c2w[i])
        lines.append(f"{i + 1} {' '.join(repr(float(x)) for x in (*q, *t))} 1 {names[i]}")
        lines.append("" if i % 2 else "10.5 20.5 -1 30.0 5.0 7")  # POINTS2D: empty or not
    (sparse / "images.txt").write_text("\n".join(lines) + "\n")


def write_colmap_binary(sparse, truth, names):
    sparse.mkdir(parents=True)
    k = truth.intrinsics
    with open(sparse / "cameras.bin", "wb") as f:  # one SIMPLE_RADIAL camera (model id 2)
        f.write(struct.pack("<Q", 1) + struct.pack("<iiQQ", 7, 2, WIDTH, HEIGHT))
        f.write(struct.pack("<4d", k[0, 0], k[0, 2], k[1, 2], 0.01))
    with open(sparse / "images.bin", "wb") as f:
        f.write(struct.pack("<Q", len(names)))
        for i, name in enumerate(names):
            q, t = w2c(truth.c2w[i])
            f.write(struct.pack("<idddddddi", i + 1, *q, *t, 7) + name.encode() + b"\x00")
            f.write(
                struct.pack("<Q", 2) + struct.pack("<ddq", 1.0, 2.0, -1) + struct.pack("<ddq", 3.0, 4.0, 9)
            )


@pytest.mark.parametrize("writer", [write_colmap_text, write_colmap_binary])
def test_colmap_models_match_ground_truth(scene, tmp_path, writer):
    folder, truth = scene
    names = [f"frame_{i:05d}.png" for i in range(4)]
    shutil.copytree(folder / "images", tmp_path / "images")
    writer(tmp_path / "sparse" / "0", truth, names)
    row = read_colmap(tmp_path)
    c2w, k = cameras_of(row)
    np.testing.assert_allclose(c2w, truth.c2w, atol=1e-9)
    np.testing.assert_allclose(k[0], truth.intrinsics, atol=1e-9)
    assert row["view_uris"][0].endswith(names[0])
    assert json.loads(row["meta"])["distortion_dropped"] == (writer is write_colmap_binary)


def co3d_viewpoint(c2w: np.ndarray, k: np.ndarray, isotropic: bool) -> dict:
    """PyTorch3D camera of an OpenCV one: X_view = X_world @ R + T, x left, y up; NDC intrinsics."""
    flip = np.diag([-1.0, -1.0, 1.0])
    r_cv, t_cv = c2w[:3, :3].T, -c2w[:3, :3].T @ c2w[:3, 3]
    half = np.full(2, min(WIDTH, HEIGHT) / 2) if isotropic else np.array([WIDTH / 2, HEIGHT / 2])
    return {
        "R": (flip @ r_cv).T.tolist(),
        "T": (flip @ t_cv).tolist(),
        "focal_length": (np.array([k[0, 0], k[1, 1]]) / half).tolist(),
        "principal_point": ((np.array([WIDTH / 2, HEIGHT / 2]) - k[:2, 2]) / half).tolist(),
        "intrinsics_format": "ndc_isotropic" if isotropic else "ndc_norm_image_bounds",
    }


@pytest.mark.parametrize("isotropic", [False, True])
def test_co3d_frame_annotations_match_ground_truth(scene, tmp_path, isotropic):
    folder, truth = scene
    k = truth.intrinsics.copy()
    k[0, 2] += 3.0  # an off-centre principal point makes the NDC sign conventions matter
    frames = [
        {
            "sequence_name": name,
            "frame_number": i,
            "image": {"path": f"images/frame_{i:05d}.png", "size": [HEIGHT, WIDTH]},
            "viewpoint": co3d_viewpoint(truth.c2w[i], k, isotropic),
        }
        for name in ("seq_a", "seq_b")
        for i in (2, 0, 3, 1)
    ]
    annotations = tmp_path / "frame_annotations.jgz"
    annotations.write_bytes(gzip.compress(json.dumps(frames).encode()))
    with pytest.raises(ValueError, match="sequence_name"):
        read_co3d(annotations, folder)
    row = read_co3d(annotations, folder, sequence_name="seq_b")
    c2w, ks = cameras_of(row)
    np.testing.assert_allclose(c2w, truth.c2w, atol=1e-9)
    np.testing.assert_allclose(ks[0], k, atol=1e-9)
    # independent check against PyTorch3D's own projection: screen = half - ndc * half (x left, y up)
    points = np.array([[0.1, 0.2, 0.3], [-0.4, 0.1, 0.0], [0.3, -0.3, 0.5]])
    vp = frames[4 + 1]["viewpoint"]  # seq_b, frame_number 0 (listed second)
    view = points @ np.array(vp["R"]) + np.array(vp["T"])
    ndc = np.array(vp["focal_length"]) * view[:, :2] / view[:, 2:] + np.array(vp["principal_point"])
    half = np.full(2, min(WIDTH, HEIGHT) / 2) if isotropic else np.array([WIDTH / 2, HEIGHT / 2])
    screen = np.array([WIDTH / 2, HEIGHT / 2]) - ndc * half
    np.testing.assert_allclose(project(c2w[0], ks[0], points), screen, atol=1e-9)
