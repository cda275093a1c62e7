"""T5 wrapper: tiny local checkpoint through the same loader as hub ids; shapes, mask, truncation."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from onegen.core.weights import MissingCheckpointError  # noqa: E402
from onegen.model.text_encoder import TextEncoder  # noqa: E402
from onegen.pipelines.demo.train_step import build_tiny_text_encoder  # noqa: E402


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return TextEncoder.load(build_tiny_text_encoder(tmp_path_factory.mktemp("t5") / "t5", width=32))


def test_states_and_mask(encoder):
    states, mask = encoder.encode(["[[text2image]] a photo of a cat", "a dog"])
    assert states.shape[0] == 2 and states.shape[2] == encoder.width == 32
    assert mask.dtype == torch.bool and mask.shape == states.shape[:2]
    assert mask[0].all() and 0 < mask[1].sum() < mask.shape[1]
    alone, _ = encoder.encode(["a dog"])  # padding does not change the real tokens' states
    torch.testing.assert_close(states[1, : alone.shape[1]], alone[0], atol=1e-5, rtol=1e-5)


def test_truncates_to_max_length(encoder):
    states, mask = encoder.encode(["cat " * 400])
    assert states.shape[1] == 300 and mask.all()


def test_missing_checkpoint_is_one_line():
    with pytest.raises(MissingCheckpointError):
        TextEncoder.load("/nonexistent/t5")
