"""Prompt strings shared by the shard builder and the sampler (docs/design.md §4), from the task table's tokens.
Imports only core/tasks.py (which imports nothing): the sampler (training/sample.py) reads them without
pulling in Ray, Arrow or the shard writer.

- `task_prompt(token, caption, tags)`: `[[token]] <tags> <caption>`, the parts that are given.
- `faceid_prompt([target, ref1, ...])`: `[[faceid]] [[img0]] <target caption> [[img1]] <caption of
  reference 1> ...`; a missing (None / empty) caption leaves its `[[imgN]]` marker alone.
- `multiview_prompt(caption)`: `[[multiview]] <scene caption>`, or the token alone.
"""

from __future__ import annotations

from onegen.core.tasks import FACEID, MULTIVIEW, marker


def task_prompt(token: str, caption: str | None, tags: str | None = None) -> str:
    """`[[token]] <tags> <caption>`: empty parts left out, the ends stripped."""
    return " ".join(part for part in (marker(token), tags or "", caption or "") if part).strip()


def faceid_prompt(captions: list[str | None]) -> str:
    """One `[[imgN]]` marker per view (target first), each followed by that view's caption when it has one."""
    parts = [marker(FACEID)]
    for index, caption in enumerate(captions):
        parts.append(marker(f"img{index}"))
        if caption and caption.strip():
            parts.append(" ".join(caption.split()))
    return " ".join(parts)


def multiview_prompt(caption: str | None) -> str:
    """`[[multiview]] <caption>`, or `[[multiview]]` without one."""
    return task_prompt(MULTIVIEW, " ".join((caption or "").split()))
