"""Prompt strings shared by the shard builder and the sampler (DESIGN §4). Imports nothing: the
sampler (training/sample.py) reads them without pulling in Ray, Arrow or the shard writer.

- `faceid_prompt([target, ref1, ...])`: `[[faceid]] [[img0]] <target caption> [[img1]] <caption of
  reference 1> ...`; a missing (None / empty) caption leaves its `[[imgN]]` marker alone.
- `multiview_prompt(caption)`: `[[multiview]] <scene caption>`, or the token alone.
"""

from __future__ import annotations

FACEID = "faceid"
MULTIVIEW = "multiview"


def faceid_prompt(captions: list[str | None]) -> str:
    """One `[[imgN]]` marker per view (target first), each followed by that view's caption when it has one."""
    parts = [f"[[{FACEID}]]"]
    for index, caption in enumerate(captions):
        parts.append(f"[[img{index}]]")
        if caption and caption.strip():
            parts.append(" ".join(caption.split()))
    return " ".join(parts)


def multiview_prompt(caption: str | None) -> str:
    """`[[multiview]] <caption>`, or `[[multiview]]` without one."""
    text = " ".join((caption or "").split())
    return f"[[{MULTIVIEW}]] {text}" if text else f"[[{MULTIVIEW}]]"
