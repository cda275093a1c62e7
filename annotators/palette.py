"""The fixed 20-colour palette of semantic / box maps and their prompt tags (docs/design.md §4).

Colours follow the released OneDiffusion prompt guide, in its order. Each sample draws its own
colours: `choose_colours(key, n)` picks `n <= MAX_CLASSES` distinct palette entries at random,
seeded by the catalog key (`key_rng`), so a rerun gives the same colours and different samples get
different ones. Tags read `<#00FFFF cyan mask: dragon>` (semantic map) and
`<#00FFFF cyan boundingbox: head>` (box map); `parse_tags` reads them back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from onegen.annotators.base import key_rng

MAX_CLASSES = 10
COLOUR_SALT = "segment.colours"


@dataclass(frozen=True)
class Colour:
    """One palette entry: `hex` as "#RRGGBB" (upper case), `name` as in the prompt guide."""

    hex: str
    name: str

    @property
    def rgb(self) -> tuple[int, int, int]:
        """(r, g, b) in 0..255."""
        return int(self.hex[1:3], 16), int(self.hex[3:5], 16), int(self.hex[5:7], 16)


PALETTE: tuple[Colour, ...] = tuple(
    Colour(hex_code, name)
    for hex_code, name in [
        ("#FF0000", "red"),
        ("#00FF00", "lime"),
        ("#0000FF", "blue"),
        ("#FFFF00", "yellow"),
        ("#FF00FF", "magenta"),
        ("#00FFFF", "cyan"),
        ("#FFA500", "orange"),
        ("#800080", "purple"),
        ("#A52A2A", "brown"),
        ("#008000", "green"),
        ("#FFC0CB", "pink"),
        ("#008080", "teal"),
        ("#FF8C00", "darkorange"),
        ("#8A2BE2", "blueviolet"),
        ("#006400", "darkgreen"),
        ("#FF4500", "orangered"),
        ("#000080", "navy"),
        ("#FFD700", "gold"),
        ("#40E0D0", "turquoise"),
        ("#DA70D6", "orchid"),
    ]
)

_TAG = re.compile(r"<(#[0-9A-Fa-f]{6}) ([a-z]+) (mask|boundingbox): ([^<>]*)>")


def choose_colours(key: str, n: int, salt: str = COLOUR_SALT) -> list[Colour]:
    """`n` distinct palette colours for sample `key`, in a random order fixed by (salt, key)."""
    if not 0 <= n <= MAX_CLASSES:
        raise ValueError(f"a sample has at most {MAX_CLASSES} classes, got {n}")
    order = key_rng(key, salt).permutation(len(PALETTE))
    return [PALETTE[i] for i in order[:n]]


def clean_class_name(name: str) -> str:
    """A class name safe inside a tag: one line, no angle brackets, single spaces."""
    return " ".join(name.replace("<", " ").replace(">", " ").split())


def mask_tag(colour: Colour, name: str) -> str:
    """`<#00FFFF cyan mask: dragon>`."""
    return f"<{colour.hex} {colour.name} mask: {clean_class_name(name)}>"


def box_tag(colour: Colour, name: str) -> str:
    """`<#00FFFF cyan boundingbox: head>`."""
    return f"<{colour.hex} {colour.name} boundingbox: {clean_class_name(name)}>"


def parse_tags(text: str) -> list[tuple[Colour, str, str]]:
    """Every tag in `text` as (colour, kind "mask" | "boundingbox", class name), in order."""
    return [(Colour(m.group(1).upper(), m.group(2)), m.group(3), m.group(4)) for m in _TAG.finditer(text)]
