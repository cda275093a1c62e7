"""FaceID samples from an ID subject's photos (docs/design.md §4): 2-5 views, target first.

Prompt (`task_prompts.faceid_prompt`, the same function the sampler uses): `[[faceid]] [[img0]]
<target caption> [[img1]] <caption of reference 1> ...`, each caption the one the builder chose for that
photo with `--caption original|dense|random` (dense: the `caption` annotator's ID-photo caption, 30-75
words asked; a photo without one keeps its marker alone). A subject enters
only with at least `min_subject_images` usable photos (faces annotation status "ok": exactly one face,
not flagged); otherwise each of its photos is skipped with the reason "subject_too_small:<n> usable".
Every usable photo is the target of one sample, with 1-4 references drawn from the subject's other
usable photos (seeded by key), so a subject of n photos gives n samples.
"""

from __future__ import annotations

from onegen.annotators.base import key_rng
from onegen.core.task_prompts import faceid_prompt
from onegen.core.tasks import FACEID as TASK
from onegen.core.tasks import TASKS
from onegen.manifests.shard_writer import Sample
from onegen.pipelines.samples.common import sample_meta, text_members
from onegen.pipelines.samples.settings import FaceidConfig

FACES_STORE = TASKS[TASK].annotator  # the store whose rows say which photos are usable (the task table's)


def faceid_samples(subject_rows: list[dict], faces_rows: list[dict | None], captions: list[str | None],
                   ordinals: list[int], faces_store: str, config: FaceidConfig,
                   excluded: list[str | None] | None = None) -> list[tuple[int, Sample | str]]:
    """(row index, Sample or skip reason) for each photo of one subject, in row order.

    `captions[i]` is the caption the caller chose for photo i (`samples.choose_caption`), or None.
    `excluded[i]` (optional) is a reason to drop photo i before the subject-size rule, e.g. from
    `task_selection.nsfw_exclusions`; such a photo is skipped with it and is not counted as usable.
    """
    excluded = excluded or [None] * len(faces_rows)
    usable = [i for i, faces in enumerate(faces_rows)
              if faces is not None and faces.get("status") == "ok" and excluded[i] is None]
    results: list[tuple[int, Sample | str]] = []
    for index, faces in enumerate(faces_rows):
        if faces is None:
            results.append((index, f"missing_annotation:{FACES_STORE}"))
        elif faces.get("status") != "ok":
            results.append((index, f"{FACES_STORE}:{faces.get('status')}"))
        elif excluded[index] is not None:
            results.append((index, excluded[index]))
        elif len(usable) < config.min_subject_images:
            results.append((index, f"subject_too_small:{len(usable)} usable"))
        else:
            results.append((index, _sample(index, usable, subject_rows, captions, ordinals[index], faces_store, config)))
    return results


def _sample(target: int, usable: list[int], rows: list[dict], captions: list[str | None], ordinal: int,
            faces_store: str, config: FaceidConfig) -> Sample:
    row = rows[target]
    rng = key_rng(row["key"], f"{TASK}-references")
    others = [i for i in usable if i != target]
    count = int(rng.integers(config.min_views - 1, min(config.max_views - 1, len(others)) + 1))
    chosen = [target, *[others[i] for i in rng.permutation(len(others))[:count]]]
    prompt = faceid_prompt([captions[i] for i in chosen])
    members = [(f"img{n}.{rows[i]['image_format']}", rows[i]["image"]) for n, i in enumerate(chosen)]
    meta = sample_meta(TASK, prompt, ["target", *["reference"] * count], [rows[i]["key"] for i in chosen])
    return Sample(key=f"{row['key']}-{TASK}", task=TASK, prompt=prompt, source=row["source"],
                  members=members + text_members(prompt, meta), n_views=len(chosen),
                  source_keys=[rows[i]["key"] for i in chosen], annotators=[faces_store],
                  width=row.get("width"), height=row.get("height"), ordinal=ordinal)
