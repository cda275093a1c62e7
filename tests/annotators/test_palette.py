"""The 20-colour palette, per-key colour choice and tag formats of docs/design.md §4."""

import pytest

from onegen.annotators.palette import (
    MAX_CLASSES,
    PALETTE,
    Colour,
    box_tag,
    choose_colours,
    mask_tag,
    parse_tags,
)

# docs/design.md §4, in its order
DESIGN_COLOURS = (
    "#FF0000 red, #00FF00 lime, #0000FF blue, #FFFF00 yellow, #FF00FF magenta, #00FFFF cyan, #FFA500 orange, "
    "#800080 purple, #A52A2A brown, #008000 green, #FFC0CB pink, #008080 teal, #FF8C00 darkorange, "
    "#8A2BE2 blueviolet, #006400 darkgreen, #FF4500 orangered, #000080 navy, #FFD700 gold, "
    "#40E0D0 turquoise, #DA70D6 orchid"
)


def test_palette_is_the_design_list_in_order():
    expected = [tuple(item.split()) for item in DESIGN_COLOURS.split(", ")]
    assert [(c.hex, c.name) for c in PALETTE] == expected
    assert PALETTE[5].rgb == (0, 255, 255) and PALETTE[8].rgb == (0xA5, 0x2A, 0x2A)


def test_tags_follow_the_released_prompt_format():
    cyan = Colour("#00FFFF", "cyan")
    assert mask_tag(cyan, "dragon") == "<#00FFFF cyan mask: dragon>"
    assert box_tag(cyan, "head") == "<#00FFFF cyan boundingbox: head>"
    assert mask_tag(cyan, " big <red>\n car ") == "<#00FFFF cyan mask: big red car>"


def test_parse_tags_reads_back_what_was_written():
    red = Colour("#FF0000", "red")
    cyan = Colour("#00FFFF", "cyan")
    prompt = f"[[semanticmap2image]] {mask_tag(cyan, 'dragon')} {mask_tag(red, 'small bird')} a photo of a dragon"
    assert parse_tags(prompt) == [(cyan, "mask", "dragon"), (red, "mask", "small bird")]
    assert parse_tags(box_tag(red, "head")) == [(red, "boundingbox", "head")]


def test_colours_are_deterministic_distinct_and_differ_across_keys():
    first = choose_colours("source-abc123", MAX_CLASSES)
    assert first == choose_colours("source-abc123", MAX_CLASSES)
    assert len(set(first)) == MAX_CLASSES and set(first) <= set(PALETTE)
    draws = {tuple(c.hex for c in choose_colours(f"key{i}", 3)) for i in range(20)}
    assert len(draws) > 10  # 20 keys, 6840 ordered triples: collisions would mean no randomness
    # the first colour used is not always the same palette entry
    assert len({choose_colours(f"key{i}", 1)[0] for i in range(20)}) > 3
    assert choose_colours("k", 3) == choose_colours("k", 5)[:3]  # prefix-stable in n


def test_at_most_ten_classes():
    with pytest.raises(ValueError, match="at most 10"):
        choose_colours("key", MAX_CLASSES + 1)
    assert choose_colours("key", 0) == []
