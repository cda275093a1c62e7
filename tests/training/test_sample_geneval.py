"""`onegen sample --prompts FILE.jsonl`: GenEval's prompt file in, GenEval's folder layout out (what its
evaluation/evaluate_images.py reads), the paper's settings as that mode's defaults, bad lines refused."""

from __future__ import annotations

import argparse
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from onegen.core.errors import UserError
from onegen.model.nextdit import build_model, save_checkpoint
from onegen.pipelines.cli.train_commands import add_commands

LINES = [{"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"},
         {"tag": "colors", "include": [{"class": "cow", "count": 1, "color": "red"}], "prompt": "a photo of a red cow"}]


def _parse(argv):
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    return parser.parse_args(argv)


def test_geneval_prompts_write_geneval_layout(tmp_path, checkpoints):
    torch.manual_seed(0)
    model = build_model("tiny")
    with torch.no_grad():  # non-zero output layer so samples depend on the seed
        model.final_layer.linear.weight.normal_(0, 0.02)
    save_checkpoint(model, tmp_path / "ema.pt", "tiny")
    prompts = tmp_path / "evaluation_metadata.jsonl"
    prompts.write_text("".join(json.dumps(line) + "\n" for line in LINES))
    out = tmp_path / "geneval"
    args = _parse(["sample", "--checkpoint", str(tmp_path / "ema.pt"), "--preset", "tiny", "--task", "text2image",
                   "--prompts", str(prompts), "--text-encoder", checkpoints["t5"], "--vae", checkpoints["vae"],
                   "--size", "32x32", "--steps", "2", "--images-per-prompt", "3", "--out", str(out)])
    assert args.run(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["00000", "00001"]
    for index, line in enumerate(LINES):
        folder = out / f"{index:05d}"
        assert json.loads((folder / "metadata.jsonl").read_text()) == line  # GenEval reads it with json.load
        names = sorted(p.name for p in (folder / "samples").iterdir())
        assert names == ["00000.png", "00001.png", "00002.png"]
        assert all(re.match(r"\d+\.png", n) for n in names)  # evaluate_images.py's filter
        pictures = [np.asarray(Image.open(folder / "samples" / n)) for n in names]
        assert pictures[0].shape == (32, 32, 3) and not np.array_equal(pictures[0], pictures[1])  # own seeds


def test_geneval_mode_defaults_are_the_papers_and_bad_lines_are_refused(tmp_path, capsys):
    from onegen.pipelines.cli.main import main
    from onegen.training import sample

    args = _parse(["sample", "--checkpoint", "x", "--task", "text2image", "--prompts", "p.jsonl", "--out", "o"])
    assert (args.steps, args.cfg_scale, args.images_per_prompt) == (None, None, 4)
    assert (sample.GENEVAL_STEPS, sample.GENEVAL_CFG) == (100, 5.0)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(LINES[0]) + "\n{\"tag\": \"colors\"}\n")
    with pytest.raises(UserError, match="bad.jsonl:2: no \"prompt\" string"):
        sample.read_prompt_file(str(bad))
    argv = ["sample", "--checkpoint", str(bad), "--preset", "tiny", "--task", "text2image", "--prompts", str(bad),
            "--out", str(tmp_path / "o")]
    assert main(argv) == 2  # read before any model loads: one line
    assert capsys.readouterr().err == f"onegen: error: {bad}:2: no \"prompt\" string\n"
    assert main(argv[:6] + ["canny2image"] + argv[7:]) == 2
    assert "--prompts samples text2image" in capsys.readouterr().err
    bad.write_text("not json\n")
    with pytest.raises(UserError, match="bad.jsonl:1: not a JSON line"):
        sample.read_prompt_file(str(bad))
    with pytest.raises(UserError, match="no such --prompts file"):
        sample.read_prompt_file(str(tmp_path / "none.jsonl"))
