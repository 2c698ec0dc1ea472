"""What the model answered, cleaned and judged: an upsampled prompt is used only when it is one.

The model's text is cleaned (reasoning blocks, a leading "Here is…" line, wrapping quotes, markdown
emphasis and whitespace runs removed). It is rejected, with the reason, when nothing is left, when
it only repeats the input, or when it is much shorter than the input (a rewrite must add detail). An
answer cut off at ``max_tokens`` (``finish_reason == "length"``) is kept up to its last full
sentence and marked truncated; if no full sentence is left it is rejected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from difflib import SequenceMatcher

#: A rewrite must be at least this long relative to the input (in characters) to count.
MIN_LENGTH_RATIO = 0.8
#: At or above this similarity to the input (after normalising), the answer is a repeat.
REPEAT_SIMILARITY = 0.9

_THINK_RE = re.compile(r"<think>.*?</think>", re.IGNORECASE | re.DOTALL)
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)
_PREAMBLE_RE = re.compile(
    r"^\s*(?:sure[,!.]?\s*)?(?:here(?:'s|’s| is)|below is|the (?:rewritten|upsampled|enhanced|improved) prompt)"
    r"[^\n]*?:\s*\n",
    re.IGNORECASE,
)
_LABEL_RE = re.compile(
    r"^\s*(?:\*\*)?(?:rewritten |upsampled |enhanced |improved )?prompt(?:\*\*)?\s*:\s*", re.IGNORECASE
)
_EMPHASIS_RE = re.compile(r"(\*+|__|`)")
_SPACE_RE = re.compile(r"\s+")
_SENTENCE_END_RE = re.compile(r"[.!?][\"')\]”’]?(?=\s|$)")
#: Opening quote → the closing quotes that pair with it.
_QUOTE_PAIRS = {'"': '"', "'": "'", "“": "”", "‘": "’"}


class AnswerRejectedError(ValueError):
    """The model's answer cannot be used as a prompt; the message says why."""


@dataclass(frozen=True)
class CleanAnswer:
    """A usable rewrite and whether it was cut at a sentence because it hit ``max_tokens``."""

    text: str
    truncated: bool


def _normalise(text: str) -> str:
    return _SPACE_RE.sub(" ", re.sub(r"[^\w\s]", " ", text.lower())).strip()


def clean(text: str) -> str:
    """The answer without reasoning, preamble, labels, wrapping quotes, emphasis and extra whitespace."""
    answer = _ANSWER_RE.findall(text)
    if answer:
        body = str(answer[-1])
    elif "<answer>" in text.lower():  # an answer block cut off before its end tag
        body = text[text.lower().rindex("<answer>") + len("<answer>") :]
    else:
        body = _THINK_RE.sub(" ", text)
        lowered = body.lower()
        if "</think>" in lowered:  # the template opened the reasoning block: it ends at the last end tag
            body = body[lowered.rindex("</think>") + len("</think>") :]
        if "<think>" in body.lower():  # an unclosed reasoning block: everything after it is thinking
            body = body[: body.lower().index("<think>")]
    body = _PREAMBLE_RE.sub("", body, count=1)
    body = _LABEL_RE.sub("", body, count=1)
    body = _EMPHASIS_RE.sub("", body)
    body = _SPACE_RE.sub(" ", body).strip()
    return _unwrap_quotes(body)


def _unwrap_quotes(body: str) -> str:
    """Remove quotes around the whole text, but not quotes that open and close inside it."""
    while len(body) >= 2 and body[0] in _QUOTE_PAIRS:
        opening, closing = body[0], _QUOTE_PAIRS[body[0]]
        inner = body[1:-1] if body[-1] == closing else body[1:]
        if opening in inner or closing in inner:
            break  # the first quote closes inside the text: it does not wrap all of it
        body = inner.strip()
    return body


def _cut_at_sentence(text: str) -> str:
    ends = list(_SENTENCE_END_RE.finditer(text))
    return text[: ends[-1].end()].strip() if ends else ""


def judge(content: str | None, original: str, *, finish_reason: str | None = None) -> CleanAnswer:
    """The usable rewrite of ``original`` in ``content``, or :class:`AnswerRejectedError` with the reason."""
    if content is None or not content.strip():
        raise AnswerRejectedError("the answer is empty")
    text = clean(content)
    if not text:
        raise AnswerRejectedError("the answer holds no prompt text (only reasoning, quotes or markup)")
    truncated = finish_reason == "length"
    if truncated:
        cut = _cut_at_sentence(text)
        if not cut:
            raise AnswerRejectedError("the answer hit max_tokens before its first sentence ended")
        text = cut
    ours, theirs = _normalise(text), _normalise(original)
    if ours == theirs:
        raise AnswerRejectedError("the answer repeats the input prompt")
    if theirs and SequenceMatcher(None, ours, theirs, autojunk=False).ratio() >= REPEAT_SIMILARITY:
        raise AnswerRejectedError(
            f"the answer is a near repeat of the input prompt (similarity ≥ {REPEAT_SIMILARITY:.0%})"
        )
    if len(text) < MIN_LENGTH_RATIO * len(original.strip()):
        raise AnswerRejectedError(
            f"the answer ({len(text)} characters) is shorter than the input ({len(original.strip())}): "
            "a rewrite should add detail"
        )
    return CleanAnswer(text=text, truncated=truncated)
