"""`add_commands(subparsers)`: the training sub-commands of `onegen` (precompute, train, export, sample)."""

from __future__ import annotations

from onegen.training.checkpoint import add_export_command
from onegen.training.precompute import add_precompute_command
from onegen.training.sample import add_sample_command
from onegen.training.train import add_train_command


def add_commands(subparsers) -> None:
    """Add `precompute`, `train`, `export` and `sample`; each sets `run` (args -> exit code)."""
    add_precompute_command(subparsers)
    add_train_command(subparsers)
    add_export_command(subparsers)
    add_sample_command(subparsers)
