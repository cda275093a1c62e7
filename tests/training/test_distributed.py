"""The trainer under torchrun on CPU (gloo, 2 processes): DDP split by node and in sync, one sharded DCP
checkpoint written by both ranks, exact resume under DDP and FSDP2, FSDP2 `fully_shard` training the same
model, and `onegen export` of a 2-rank checkpoint sampling the same as the in-memory EMA.

Every run goes through the real entry point (`python -m torch.distributed.run ... -m onegen.pipelines.cli.main
train`) with `--data-log true`, which makes each rank write OUT/data_log/rank{N}.jsonl: per step the keys
it trained on, a sha256 of the full parameters and of the EMA, the wrapper's class name and the step's gradient
norm; every run also validates (`VAL`), so OUT/val.jsonl holds the all-reduced validation losses.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import io  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from onegen.manifests.query import read_manifests  # noqa: E402
from onegen.manifests.shard_writer import Sample, ShardWriter  # noqa: E402

pytestmark = pytest.mark.timeout(300)
TASKS = ("text2image", "canny2image")
# validation at step 0 and 3 on 5 samples (families interleave in name order: 3 canny2image, 2 text2image):
# rank 0 takes 3 samples in 2 batches, rank 1 two in one, so rank 1 runs a filler batch (FSDP2 needs every
# rank in every forward)
VAL = {"val-every": "3", "val-samples": "5", "val-timesteps": "2"}


def _png(i: int) -> bytes:
    pixels = np.full((64, 64, 3), 30 * i, dtype=np.uint8)
    pixels[4 + 4 * i:40, 8:40] = (200, 30 * i, 90)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def shards(tmp_path_factory, checkpoints) -> str:
    """Precomputed 64 px shards, two per task (2 samples each), so two ranks can be split by node."""
    from onegen.training.precompute import PrecomputeConfig, run_precompute

    raw, out = tmp_path_factory.mktemp("dist_raw"), tmp_path_factory.mktemp("dist_latents")
    for task in TASKS:
        writer = ShardWriter(str(raw), "onegen", task, samples_per_shard=2, max_shard_bytes=1 << 30)
        for i in range(4):
            prompt = f"[[{task}]] picture {i}"
            members = [("img0.png", _png(i))] + ([("img1.png", _png(i + 4))] if task == "canny2image" else [])
            meta = {"task": task, "n_views": len(members), "prompt": prompt}
            members += [("txt", prompt.encode()), ("json", json.dumps(meta).encode())]
            writer.add(Sample(key=f"s{i}-{task}", task=task, prompt=prompt, source="test", members=members,
                              n_views=meta["n_views"], source_keys=[f"k{i}"], annotators=[], width=64, height=64,
                              ordinal=i))
        writer.finish()
    run_precompute(PrecomputeConfig(str(raw), str(out), checkpoints["t5"], checkpoints["vae"], ((64, 64),)))
    return str(out)


def torchrun_train(shards: str, out: Path, steps: int, fsdp: bool) -> subprocess.CompletedProcess:
    """`onegen train` on 2 CPU processes; fails the test (with the output) unless it exits 0."""
    flags = {"shards": shards, "val-shards": shards, "out": str(out), "preset": "tiny", "batch-size": "2", "steps": str(steps),
             "ckpt-every": "3", "num-workers": "0", "shuffle-buffer": "2", "progress": False,
             "caption-dropout": "0.5", "buckets": "[[64, 64]]", "data-log": True, "fsdp": fsdp,
             "task-weights": '[["text2image", 1.0], ["image2image", 1.0]]', **VAL}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "onegen.pipelines.cli.main", "train"] + [
        (f"--{k}" if v else f"--no-{k}") if isinstance(v, bool) else f"--{k}={v}" for k, v in flags.items()]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return done


def data_log(out: Path) -> list[list[dict]]:
    """Per rank, the data-log records in step order."""
    return [[json.loads(line) for line in (out / "data_log" / f"rank{rank}.jsonl").read_text().splitlines()]
            for rank in range(2)]


def checkpoint_files(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "checkpoints").iterdir())


def checkpoint_model(folder: Path, ema: bool = False):
    """A tiny NextDiT holding the checkpoint's consolidated model (or EMA) weights."""
    from onegen.model.nextdit import build_model
    from onegen.training.checkpoint import consolidated_weights

    model = build_model("tiny")
    model.load_state_dict(consolidated_weights(str(folder), ema)[0])
    return model


def checkpoint_digest(folder: Path) -> str:
    """`param_digest` of a model holding the checkpoint's parameters."""
    from onegen.training.train_logs import param_digest

    return param_digest(checkpoint_model(folder))


@pytest.fixture(scope="module")
def ddp_run(shards, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "run"
    torchrun_train(shards, out, steps=3, fsdp=False)
    return out


def test_ddp_writes_one_sharded_checkpoint_from_both_ranks(ddp_run):
    assert checkpoint_files(ddp_run) == ["latest.txt", "step_00000003"]  # no debris, no per-rank copies
    assert (ddp_run / "checkpoints" / "latest.txt").read_text() == "step_00000003"
    folder = ddp_run / "checkpoints" / "step_00000003"
    assert sorted(p.name for p in folder.iterdir()) == ["COMPLETE", "meta.json", "rank_00000.pt", "rank_00001.pt",
                                                        "state"]
    assert {"__0_0.distcp", "__1_0.distcp", ".metadata"} <= {p.name for p in (folder / "state").iterdir()}
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["step"] == 3 and meta["world_size"] == 2 and meta["preset"] == "tiny"
    for rank in range(2):  # every rank's RNG and loader state, loadable without pickle
        per_rank = torch.load(folder / f"rank_{rank:05d}.pt", weights_only=True)
        assert set(per_rank) == {"rng", "loader"} and per_rank["loader"]["world"] == 2


def test_ddp_ranks_read_disjoint_shards(ddp_run, shards):
    table = read_manifests(shards, ["key", "shard"]).to_pydict()
    shard_of = dict(zip(table["key"], table["shard"], strict=True))
    seen = [{shard_of[key] for record in records for key in record["keys"]} for records in data_log(ddp_run)]
    assert seen[0] and seen[1] and not seen[0] & seen[1]  # split by node: no shard read by both ranks


def test_ddp_parameters_identical_on_both_ranks_and_in_checkpoint(ddp_run):
    ranks = data_log(ddp_run)
    assert [r["step"] for r in ranks[0]] == [r["step"] for r in ranks[1]] == [1, 2, 3]
    assert {r["wrapper"] for r in ranks[0] + ranks[1]} == {"DistributedDataParallel"}
    digests = [[r["params"] for r in records] for records in ranks]
    assert digests[0] == digests[1]  # the all-reduce keeps both replicas bit-identical after every step
    assert len(set(digests[0])) == 3  # and the parameters do change from step to step
    assert checkpoint_digest(ddp_run / "checkpoints" / "step_00000003") == digests[1][-1]


def test_resume_under_torchrun_continues_exactly(ddp_run, shards, tmp_path_factory):
    torchrun_train(shards, ddp_run, steps=5, fsdp=False)  # same OUT: resumes from step 3
    ranks = data_log(ddp_run)
    assert [r["step"] for r in ranks[0]] == [r["step"] for r in ranks[1]] == [1, 2, 3, 4, 5]
    assert (ddp_run / "checkpoints" / "latest.txt").read_text() == "step_00000005"
    straight = tmp_path_factory.mktemp("straight") / "run"
    torchrun_train(shards, straight, steps=5, fsdp=False)
    reference = data_log(straight)
    for rank in range(2):  # same data, and (per-rank RNG restored) the same parameters as a straight run
        assert [r["keys"] for r in ranks[rank][3:]] == [r["keys"] for r in reference[rank][3:]]
        assert ranks[rank][-1]["params"] == reference[rank][-1]["params"]


@pytest.fixture(scope="module")
def fsdp_run(shards, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fsdp") / "run"
    torchrun_train(shards, out, steps=3, fsdp=True)
    return out


def test_fsdp2_trains_on_cpu_gloo_like_ddp(ddp_run, fsdp_run):
    ranks = data_log(fsdp_run)
    assert {r["wrapper"] for r in ranks[0] + ranks[1]} == {"FSDPNextDiT"}  # fully_shard swaps the class
    assert [r["params"] for r in ranks[0]] == [r["params"] for r in ranks[1]]
    assert checkpoint_files(fsdp_run) == ["latest.txt", "step_00000003"]
    fsdp_state = checkpoint_model(fsdp_run / "checkpoints" / "step_00000003").state_dict()
    ddp_state = checkpoint_model(ddp_run / "checkpoints" / "step_00000003").state_dict()
    assert fsdp_state.keys() == ddp_state.keys()  # no wrapper prefixes
    for name, tensor in ddp_state.items():  # same seeds and data: the same 3 steps as DDP
        torch.testing.assert_close(fsdp_state[name], tensor, rtol=1e-5, atol=1e-6, msg=name)


def test_fsdp2_checkpoint_exports_to_one_file_that_samples_like_the_in_memory_ema(fsdp_run, tmp_path):
    from onegen.model.flow import sample_euler
    from onegen.model.nextdit import load_model_checkpoint
    from onegen.pipelines.cli.main import main
    from onegen.training.sample import load_denoiser
    from onegen.training.train_logs import param_digest

    folder = fsdp_run / "checkpoints" / "step_00000003"
    assert main(["export", str(folder), "--out", str(tmp_path / "ema.safetensors"), "--ema"]) == 0
    exported = load_model_checkpoint(tmp_path / "ema.safetensors", "tiny")
    in_memory = [records[-1]["ema"] for records in data_log(fsdp_run)]  # both ranks' EMA after step 3
    assert in_memory[0] == in_memory[1] == param_digest(exported)  # bit for bit the EMA the ranks held
    assert param_digest(exported) != checkpoint_digest(folder)  # the EMA, not the model
    sampler_model, _ = load_denoiser(str(tmp_path / "ema.safetensors"), torch.device("cpu"), "tiny")
    g = torch.Generator().manual_seed(0)
    noise, caption = torch.randn(1, 16, 2, 8, 8, generator=g), torch.randn(1, 4, 32, generator=g)
    args = (noise, torch.zeros_like(noise), torch.tensor([[True, False]]), caption, torch.ones(1, 4, dtype=torch.bool))
    reference = checkpoint_model(folder, ema=True)
    assert torch.equal(sample_euler(sampler_model, *args, steps=3), sample_euler(reference, *args, steps=3))


def test_resume_under_fsdp2_continues_exactly(fsdp_run, shards, tmp_path_factory):
    torchrun_train(shards, fsdp_run, steps=5, fsdp=True)  # resumes from the sharded step-3 checkpoint
    straight = tmp_path_factory.mktemp("fsdp_straight") / "run"
    torchrun_train(shards, straight, steps=5, fsdp=True)
    resumed, reference = data_log(fsdp_run), data_log(straight)
    for rank in range(2):
        assert [r["step"] for r in resumed[rank]] == [1, 2, 3, 4, 5]
        assert [r["keys"] for r in resumed[rank][3:]] == [r["keys"] for r in reference[rank][3:]]
        assert [r["params"] for r in resumed[rank][3:]] == [r["params"] for r in reference[rank][3:]]
        assert resumed[rank][-1]["ema"] == reference[rank][-1]["ema"]


def test_validation_and_grad_norm_under_ddp_and_fsdp2_match_one_process(ddp_run, fsdp_run, shards):
    from onegen.training.train_config import config_from_values
    from onegen.training.validation import Validator

    logs = {name: [json.loads(line) for line in (run / "val.jsonl").read_text().splitlines()]
            for name, run in (("ddp", ddp_run), ("fsdp", fsdp_run))}
    for records in logs.values():  # rank 0 alone writes; later tests' resumes may append step 5
        assert [r["step"] for r in records][:2] == [0, 3]
        assert records[0]["samples"] == {"image2image": 3, "text2image": 2}  # both ranks' slices, all-reduced
    for ddp, fsdp in zip(logs["ddp"][:2], logs["fsdp"][:2], strict=True):
        for family, value in ddp["families"].items():
            assert fsdp["families"][family] == pytest.approx(value, rel=1e-4)
    config = config_from_values({"shards": shards, "val_shards": shards, "preset": "tiny", "batch_size": 2,
                                 "buckets": [[64, 64]], "val_samples": 5, "val_timesteps": 2,
                                 "task_weights": [["text2image", 1.0], ["image2image", 1.0]]})
    ema = checkpoint_model(ddp_run / "checkpoints" / "step_00000003", ema=True)
    alone = Validator.create(config).evaluate(ema, 3, torch.device("cpu"))  # one process, the saved EMA
    for family, value in alone["families"].items():
        assert logs["ddp"][1]["families"][family] == pytest.approx(value, rel=1e-5)
    norms = {name: [[r["grad_norm"] for r in records[:3]] for records in data_log(run)]
             for name, run in (("ddp", ddp_run), ("fsdp", fsdp_run))}
    for per_rank in norms.values():
        assert per_rank[0] == per_rank[1] and all(np.isfinite(per_rank[0])) and min(per_rank[0]) > 0
    # FSDP2's norm is the full one (all shards), the same as DDP's of the same gradients
    np.testing.assert_allclose(norms["fsdp"][0], norms["ddp"][0], rtol=1e-4)
