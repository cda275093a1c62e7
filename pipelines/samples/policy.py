"""Per-source build policies: how each catalog source's rows become prompts and which store a task comes from.

The paper treats its sources differently (OneDiffusion §4): Objaverse takes Cap3D's captions, CO3D the task
token alone, Hypersim's depth is its ground truth while the other photos' depth comes from Depth Anything,
PixelProse keeps its own dense captions. A build says so with policies, one `SOURCE.FIELD=VALUE` text each
(`onegen build --policy`, or a recipe source block's `policy = {...}` table):

    caption = original | dense | random | token
        which caption a prompt uses: the source's own (catalog `caption_original`), the dense caption,
        either drawn per sample (the paper's "when an original prompt is available, we use both"), or none
        (the task token alone; text2image candidates are then skipped as `token_only`). Default: `--caption`.
    dense = <store> | source.<column>
        where the dense caption comes from: an annotation store of the caption annotator's columns (default
        `caption`; e.g. `caption_molmo`, a caption annotator run with `store = "caption_molmo"`), or a column the
        source table brought (catalog `source.<column>`, e.g. PixelProse's `source.vlm_caption`, Unsplash's
        `source.ai_description`).
    stores = <store>[,<store>...]
        when two stores make the same task (depth@1 and depth_gt@1 both make depth2image), the one named here
        makes it for this source's rows. Without a policy naming one, the build refuses with one line naming
        both: it never picks silently.
    filters = <filter>
        a `--filter` for this source's rows only (pipelines/hygiene/filters.py), e.g. COYO's
        `source.aesthetic_score_laion_v2>=5` or LAION's `source.punsafe<0.1`: a table's own columns exist only
        on its rows, so as a build-wide filter they would filter every other source's rows as null.

`stores` and `filters` gather over texts (a recipe's list gives one text per item); `caption` and `dense`
take the last text.
SOURCE is a catalog source name (`onegen ingest --name`, a recipe source's `name`) or `*`, which sets the
field for every source that does not set it itself. Which annotators run on which sources is the annotators'
own `sources` field (annotators/base.py): rows of other sources get `skipped: not for this source`.

Light on purpose (standard library only): BuildConfig checks its policies at construction, at every CLI start.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Literal, get_args

from onegen.core.config_fields import SettingError
from onegen.core.source_columns import SOURCE_COLUMN_PREFIX

CaptionPolicy = Literal["", "original", "dense", "random", "token"]
CAPTION_POLICIES = get_args(CaptionPolicy)[1:]
EVERY_SOURCE = "*"


class PolicyError(SettingError):
    """A policy text that cannot be read; one line (BuildConfig raises it at construction: a refused setting)."""


@dataclass(frozen=True)
class SourcePolicy:
    """What one source's rows get in a build (module docstring); empty fields fall back to `*`, then the
    build's own setting."""

    caption: CaptionPolicy = ""
    dense: str = ""
    stores: tuple[str, ...] = ()
    filters: tuple[str, ...] = ()

    def over(self, fallback: SourcePolicy) -> SourcePolicy:
        """This policy with its empty fields taken from `fallback`."""
        return SourcePolicy(self.caption or fallback.caption, self.dense or fallback.dense,
                            self.stores or fallback.stores, self.filters or fallback.filters)


FIELDS = tuple(f.name for f in fields(SourcePolicy))


def parse_policies(texts: tuple[str, ...] | list[str]) -> dict[str, SourcePolicy]:
    """{source or "*": policy} of `SOURCE.FIELD=VALUE` texts; a later text for the same field wins.
    Raises PolicyError naming the text for an unknown field, a bad value or a missing part."""
    policies: dict[str, SourcePolicy] = {}
    for text in texts:
        target, equals, value = text.partition("=")
        source, dot, name = target.strip().rpartition(".")
        value = value.strip()
        if not (equals and dot and source and name):
            raise PolicyError(f"policy {text!r}: expected SOURCE.FIELD=VALUE (fields: {', '.join(FIELDS)})")
        if name not in FIELDS:
            raise PolicyError(f"policy {text!r}: no field {name!r} (fields: {', '.join(FIELDS)})")
        current = policies.get(source, SourcePolicy())
        if name == "caption":
            if value not in CAPTION_POLICIES:
                raise PolicyError(f"policy {text!r}: caption is one of {', '.join(CAPTION_POLICIES)}")
            current = replace(current, caption=value)
        elif name == "dense":
            if not value or value == SOURCE_COLUMN_PREFIX or "@" in value:
                raise PolicyError(f"policy {text!r}: dense is a store name (no @version) or source.<column>")
            current = replace(current, dense=value)
        elif name == "stores":
            stores = tuple(s.strip() for s in value.split(",") if s.strip())
            if not stores or any("@" in s for s in stores):
                raise PolicyError(f"policy {text!r}: stores is a comma-separated list of store names (no @version)")
            current = replace(current, stores=current.stores + stores)
        else:
            if not value:
                raise PolicyError(f"policy {text!r}: filters is a filter such as source.punsafe<0.1")
            current = replace(current, filters=current.filters + (value,))
        policies[source] = current
    return policies


def policy_for(policies: dict[str, SourcePolicy], source: str) -> SourcePolicy:
    """The policy of `source`: its own fields, the `*` policy's where it sets none."""
    return policies.get(source, SourcePolicy()).over(policies.get(EVERY_SOURCE, SourcePolicy()))


def policy_texts(source: str, table: dict) -> tuple[str, ...]:
    """`SOURCE.FIELD=VALUE` texts of a recipe source block's `policy = {...}` table (a list: one text per item);
    parse_policies checks them."""
    texts = []
    for name, value in table.items():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            texts.append(f"{source}.{name}={item}")
    return tuple(texts)
