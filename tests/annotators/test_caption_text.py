"""Caption cleanup and entity-list parsing on messy VLM answers (expectations written by hand)."""

from __future__ import annotations

import pytest

from onegen.annotators.caption_text import (
    MAX_ENTITIES,
    clean_caption,
    length_reason,
    parse_entities,
    view_phrases,
    word_count,
)

CAPTIONS = [
    # (raw answer, expected cleaned caption)
    ("The image shows a brown dog running on green grass.", "A brown dog running on green grass."),
    (
        "This image depicts two children flying a red kite. The sky is blue.",
        "Two children flying a red kite. The sky is blue.",
    ),
    (
        "In this image, a woman in a yellow coat waits at a bus stop.",
        "A woman in a yellow coat waits at a bus stop.",
    ),
    (
        "The photograph captures an old lighthouse at dusk. Waves crash below. In the image, the lamp is lit.",
        "An old lighthouse at dusk. Waves crash below. The lamp is lit.",
    ),
    (
        "A cat sleeps on a sofa.\n\n  A lamp stands   beside it. The room is dim and the cur",
        "A cat sleeps on a sofa. A lamp stands beside it.",
    ),
    ("**Caption:** A bowl of ramen with an egg.", "A bowl of ramen with an egg."),
    ("A rocket on its launch pad against a cloudy sky", "A rocket on its launch pad against a cloudy sky"),
    (
        "This is a photo of a mountain lake! Pine trees line the shore?",
        "A mountain lake! Pine trees line the shore?",
    ),
    ("The image features a red car. It is parked.", "A red car. It is parked."),
    ("A swan\x00 on a lake\ufffd.", "A swan on a lake."),
]


@pytest.mark.parametrize(("raw", "expected"), CAPTIONS)
def test_clean_caption(raw: str, expected: str) -> None:
    assert clean_caption(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"),
        ("   \n ", "empty"),
        ("I'm sorry, I can't help with identifying this image.", "refusal"),
        ("dog " * 40, "repetition"),
    ],
)
def test_clean_caption_rejects_unusable(raw: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        clean_caption(raw)


def test_word_count() -> None:
    assert word_count("A dog  runs.\nFast") == 4
    assert word_count("") == 0


def test_length_reason() -> None:
    assert length_reason(30, 30, 75) is None and length_reason(75, 30, 75) is None
    assert length_reason(29, 30, 75) == "words_out_of_range:29 not in 30-75"
    assert length_reason(151, 100, 150) == "words_out_of_range:151 not in 100-150"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A man in a blue coat looking at the camera.", ["looking at the camera"]),
        ("She faces the viewer, a lamp on the right side.", ["faces the viewer", "on the right side"]),
        ("In the foreground a cat; in the background a wall. In the foreground again.",
         ["in the foreground", "in the background"]),
        ("A red brick house seen from above, a close-up of the door.", ["seen from above", "close-up"]),
        ("A wooden table with four chairs and a vase of left-over flowers.", []),
        ("A lighthouse on a rocky shore under a cloudy sky.", []),
    ],
)
def test_view_phrases(text: str, expected: list[str]) -> None:
    assert view_phrases(text) == expected


ENTITIES = [
    ("1. a dog\n2. a red ball\n3. the grass", ["dog", "red ball", "grass"]),
    ("- Dog\n- Cat\n- dog\n* Tree", ["Dog", "Cat", "Tree"]),
    ('["person", "bicycle", "Person", "traffic light"]', ["person", "bicycle", "traffic light"]),
    ("Here are the entities:\n\n• woman\n• umbrella\n• rain", ["woman", "umbrella", "rain"]),
    ("dog, cat, and a tree.", ["dog", "cat", "tree"]),
    ("Entities: astronaut, American flag, space suit", ["astronaut", "American flag", "space suit"]),
    ("1. dog 2. cat 3. tree", ["dog", "cat", "tree"]),
    ("['cup', 'saucer', 'coffee']", ["cup", "saucer", "coffee"]),
    ('Sure! ```json\n[{"name": "rocket"}, {"name": "launch tower"}]\n```', ["rocket", "launch tower"]),
    ("1. **Cat** - a tabby cat lying down\n2. **Blanket**: soft and red", ["Cat", "Blanket"]),
    ("a man wearing a very long blue coat; hat; 42", ["hat"]),
    ("car; bus; the road", ["car", "bus", "road"]),
    ("- cat\x07\n- \ufffd", ["cat"]),
]


@pytest.mark.parametrize(("raw", "expected"), ENTITIES)
def test_parse_entities(raw: str, expected: list[str]) -> None:
    assert parse_entities(raw) == expected


def test_parse_entities_keeps_at_most_ten() -> None:
    raw = "\n".join(f"- object{i}" for i in range(15))
    assert parse_entities(raw) == [f"object{i}" for i in range(MAX_ENTITIES)]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"),
        ("I cannot identify objects in this image.", "refusal"),
        ("[]", "no entity"),
        ("there is a large brown dog sleeping in the sun", "no entity"),
        ("1. 2. 3.", "no entity"),
    ],
)
def test_parse_entities_rejects_unusable(raw: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_entities(raw)
