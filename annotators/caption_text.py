"""Pure text cleaning and parsing of VLM answers (no model, no torch).

- `clean_caption(raw)`: collapse whitespace, drop markdown emphasis and a "Caption:" label, strip
  image-talk boilerplate at sentence starts ("The image shows", "This image depicts",
  "In this image," ...) and re-capitalise the sentence, drop a truncated last sentence (text after
  the last . ! or ?) when at least one full sentence precedes it.
- `length_reason(count, min_words, max_words)`: None inside the family's word range, else the recorded
  reason `words_out_of_range:<count> not in <min>-<max>` (the caption is kept whole, never truncated).
- `view_phrases(text)`: view-specific phrases in a scene caption ("looking at the camera", "on the
  left", "in the foreground" ...), which the released prompt guide warns make multiview results
  multi-faced; lower-cased, in order of appearance, deduplicated.
- `parse_entities(raw)`: a JSON / Python list, bullet or numbered lines, inline numbering
  ("1. dog 2. cat"), or a comma / semicolon / "and" list -> at most `MAX_ENTITIES` short noun
  phrases (<= `MAX_ENTITY_WORDS` words), leading articles and punctuation stripped, deduplicated
  case-insensitively (the first spelling is kept).

Unusable output (empty, a refusal, degenerate repetition, no entity left) raises ValueError whose
message is the reason; the annotators record it as status "unparseable".
"""

from __future__ import annotations

import ast
import json
import re

MAX_ENTITIES = 10
MAX_ENTITY_WORDS = 4

_BOILERPLATE = re.compile(
    r"^(?:"
    r"(?:in|within)\s+(?:this|the)\s+(?:image|picture|photo(?:graph)?|scene),?\s*(?:we\s+(?:can\s+)?see\s+|there\s+(?:is|are)\s+)?"
    r"|(?:the|this)\s+(?:image|picture|photo(?:graph)?|scene)\s+"
    r"(?:shows|depicts|features|displays|captures|presents|portrays|showcases|illustrates|contains|is\s+of)"
    r"(?:\s*:)?\s+"
    r"|(?:the|this)\s+is\s+(?:an?\s+)?(?:image|picture|photo(?:graph)?)\s+of\s+"
    r")",
    re.IGNORECASE,
)
_LABEL = re.compile(r"^\s*(?:caption|description|answer)\s*:\s*", re.IGNORECASE)
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=\S)")
_REFUSAL = re.compile(r"^(?:i'?m sorry|i am sorry|sorry,|i cannot|i can'?t|as an ai)", re.IGNORECASE)
_TERMINAL = (".", "!", "?", '."', ".'", ".)")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffd]")  # decoding debris, never text


def clean_caption(raw: str) -> str:
    """The cleaned caption text; ValueError(reason) when nothing usable is left."""
    text = _LABEL.sub("", re.sub(r"\*\*|__|#+\s", "", _CONTROL.sub("", raw or "")))
    text = re.sub(r"\s+", " ", text).strip()
    if not text:
        raise ValueError("empty caption")
    if _REFUSAL.match(text):
        raise ValueError(f"refusal: {text[:60]!r}")
    sentences = [_strip_boilerplate(s) for s in _SENTENCE_SPLIT.split(text)]
    sentences = [s for s in sentences if s]
    if len(sentences) > 1 and not sentences[-1].endswith(_TERMINAL):
        sentences = sentences[:-1]  # cut off by max_new_tokens mid-sentence
    caption = " ".join(sentences)
    if not caption:
        raise ValueError("caption is only boilerplate")
    if _is_repetitive(caption):
        raise ValueError("degenerate repetition")
    return caption


def word_count(text: str) -> int:
    """Whitespace-separated words in `text`."""
    return len(text.split())


WORDS_OUT_OF_RANGE = "words_out_of_range"


def length_reason(count: int, min_words: int, max_words: int) -> str | None:
    """None when min_words <= count <= max_words, else `words_out_of_range:<count> not in <min>-<max>`."""
    if min_words <= count <= max_words:
        return None
    return f"{WORDS_OUT_OF_RANGE}:{count} not in {min_words}-{max_words}"


_VIEW_PHRASES = re.compile(
    r"\b(?:"
    r"(?:looking|looks|look|staring|stares|gazing|gazes|smiling|smiles)\s+(?:directly\s+|straight\s+)?"
    r"(?:at|into|towards?)\s+(?:the\s+)?(?:camera|viewer|lens)"
    r"|(?:facing|faces|face|turned\s+towards?)\s+(?:the\s+)?(?:camera|viewer|lens)"
    r"|(?:on|to|at)\s+the\s+(?:far\s+)?(?:left|right)(?:\s+side)?"
    r"|(?:left|right)(?:-hand)?\s+side"
    r"|in\s+the\s+(?:foreground|background|corner|frame)"
    r"|(?:this|the)\s+(?:view|viewpoint|camera\s+angle|perspective)"
    r"|(?:from|seen\s+from)\s+(?:above|below|behind|the\s+front|the\s+side)"
    r"|close-up"
    r")\b",
    re.IGNORECASE,
)


def view_phrases(text: str) -> list[str]:
    """View-specific phrases found in `text` (lower-cased, first occurrence order, no duplicates)."""
    found: list[str] = []
    for match in _VIEW_PHRASES.finditer(text or ""):
        phrase = re.sub(r"\s+", " ", match.group(0).lower())
        if phrase not in found:
            found.append(phrase)
    return found


def _strip_boilerplate(sentence: str) -> str:
    stripped = _BOILERPLATE.sub("", sentence, count=1).strip()
    if stripped == sentence:
        return sentence
    return stripped[:1].upper() + stripped[1:]


def _is_repetitive(text: str) -> bool:
    """Long text made of very few distinct words (a decoding loop)."""
    words = text.lower().split()
    return len(words) >= 20 and len(set(words)) / len(words) < 0.2


# --- entities ---------------------------------------------------------------------------------------
_BULLET = re.compile(r"^\s*(?:[-*•·+]|\d+\s*[.):]|\(\d+\)|[a-z]\))\s*", re.IGNORECASE)
_INLINE_NUMBER = re.compile(r"(?:^|\s)\d+\s*[.)]\s+")
_ARTICLE = re.compile(r"^(?:a|an|the|some|several|two|three|many)\s+", re.IGNORECASE)
_STRIP_CHARS = " \t\"'`.,;:!?*_-()[]{}"


def parse_entities(raw: str) -> list[str]:
    """Entity names from a VLM answer; ValueError(reason) when none survive."""
    text = _CONTROL.sub("", raw or "").strip()
    if not text:
        raise ValueError("empty entity answer")
    if _REFUSAL.match(text):
        raise ValueError(f"refusal: {text[:60]!r}")
    items = _list_literal(text)
    if items is None:
        items = _split_items(text)
    entities: list[str] = []
    seen: set[str] = set()
    for item in items:
        name = _normalise_entity(item)
        if name and name.lower() not in seen:
            seen.add(name.lower())
            entities.append(name)
    if not entities:
        raise ValueError(f"no entity names in answer: {text[:60]!r}")
    return entities[:MAX_ENTITIES]


def _list_literal(text: str) -> list[str] | None:
    """Items of the first [...] literal in `text` (JSON or Python syntax), else None."""
    match = re.search(r"\[.*\]", text, re.DOTALL)
    if match is None:
        return None
    for loader in (json.loads, ast.literal_eval):
        try:
            value = loader(match.group(0))
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(value, list):
            return [_item_name(v) for v in value]
    return None


def _item_name(value: object) -> str:
    if isinstance(value, dict):  # [{"name": "dog"}, ...]
        for key in ("name", "entity", "object", "label"):
            if isinstance(value.get(key), str):
                return value[key]
        return ""
    return value if isinstance(value, str) else ""


def _split_items(text: str) -> list[str]:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    lines = [line for line in lines if not line.endswith(":")]  # "Here are the entities:"
    if len(lines) > 1:
        return [_BULLET.sub("", line) for line in lines]
    line = lines[0] if lines else ""
    line = re.sub(r"^[^:]*:\s+", "", line) if ":" in line else line  # "Entities: dog, cat"
    if len(_INLINE_NUMBER.findall(line)) > 1:
        return [part for part in _INLINE_NUMBER.split(line) if part.strip()]
    parts = re.split(r"\s*[,;]\s*|\s+and\s+|\s*&\s*", _BULLET.sub("", line))
    return [re.sub(r"^and\s+", "", part) for part in parts]


def _normalise_entity(item: str) -> str:
    """One short noun phrase, or "" when the item is not one."""
    name = re.sub(r"\*\*|__|`", "", item)
    name = re.split(r"\s+[-–—]\s+|:\s|\s\(", name, maxsplit=1)[0]  # drop "dog - a brown dog" descriptions
    name = re.sub(r"\s+", " ", name).strip(_STRIP_CHARS)
    name = _ARTICLE.sub("", name).strip(_STRIP_CHARS)
    if not name or not re.search(r"[^\W\d_]", name) or len(name.split()) > MAX_ENTITY_WORDS:
        return ""
    return name
