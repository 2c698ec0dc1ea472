"""Upsample answers: cleaning a vision-language model's rewrite of a video prompt and judging whether it is usable.

Pure tests: ``worldmill.upsample.answer`` on hand-written model outputs in the styles the upsamplers actually
produce (Pixtral's plain paragraph; Cosmos-Reason1 / Qwen's ``<think>`` and ``<answer>`` blocks; chatty
preambles, labels, quotes and markdown), no servers.
"""

from __future__ import annotations

import math

import pytest

from worldmill.upsample.answer import (
    MIN_LENGTH_RATIO,
    REPEAT_SIMILARITY,
    AnswerRejectedError,
    CleanAnswer,
    clean,
    judge,
)

ORIGINAL = "A forklift carries a pallet of red crates across a wet loading dock at night, under sodium lamps."

# What a good rewrite of ORIGINAL looks like once cleaned: one paragraph, several sentences, single spaces.
REWRITE = (
    "At night, a yellow forklift drives slowly across a wet concrete loading dock, carrying a wooden pallet "
    "stacked with six red plastic crates. Orange sodium lamps mounted high on the warehouse wall cast warm pools "
    "of light that reflect in the puddles, while the far end of the dock fades into darkness. The camera stands "
    "at chest height beside the dock door with a 35 mm lens and pans steadily to follow the forklift as its tires "
    "splash through shallow water and the crates sway slightly on the raised forks."
)

# The same rewrite as Pixtral returns it: a plain paragraph, with the line breaks and double spaces of free text.
PIXTRAL_RAW = (
    "At night, a yellow forklift drives slowly across a wet concrete loading dock, carrying a wooden pallet\n"
    "stacked with six red plastic crates.  Orange sodium lamps mounted high on the warehouse wall cast warm pools\n"
    "of light that reflect in the puddles, while the far end of the dock fades into darkness. The camera stands\n"
    "at chest height beside the dock door with a 35 mm lens and pans steadily to follow the forklift as its tires\n"
    "splash through shallow water and the crates sway slightly on the raised forks.\n"
)

THINK = (
    "<think>\nThe user wants a detailed paragraph. Key facts: forklift, pallet, red crates, wet loading dock, "
    "night, sodium lamps. I should describe the lighting, the camera and the motion without adding text "
    "overlays. Let me write it as one paragraph.\n</think>"
)

# A different, short rewrite of exactly ceil(MIN_LENGTH_RATIO × len(ORIGINAL)) = 78 characters.
AT_MINIMUM = "At night a yellow forklift crosses a wet dock lit by tall orange sodium lamps."

# A long prompt for the near-repeat check, and the same prompt with a single word changed.
LONG_ORIGINAL = (
    "A red vintage convertible drives along a winding coastal road at sunset, with the ocean on the left, "
    "tall cliffs on the right, seagulls circling overhead and the camera following from a low drone shot behind "
    "the car as its chrome bumper catches the last orange light of the day."
)
LONG_ONE_WORD_CHANGED = LONG_ORIGINAL.replace("red vintage", "blue vintage")


# --------------------------------------------------------------------------------------------- clean


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # Pixtral: a plain paragraph, only its line breaks and double spaces collapse.
        (PIXTRAL_RAW, REWRITE),
        # Reason1 / Qwen: reasoning first, then the paragraph.
        (f"{THINK}\n\n{REWRITE}", REWRITE),
        # Reasoning, then the paragraph inside an answer block.
        (f"{THINK}\n<answer>\n{REWRITE}\n</answer>", REWRITE),
        # An answer block alone.
        (f"<answer>{REWRITE}</answer>", REWRITE),
        # Tags are matched regardless of case.
        (f"<THINK>planning</THINK>\n<Answer>\n{REWRITE}\n</Answer>", REWRITE),
        # Several answer blocks: the last one is the answer.
        (f"<answer>A first draft.</answer>\n<answer>{REWRITE}</answer>", REWRITE),
        # A reasoning block that is never closed: everything after its opening tag is thinking.
        (f"{REWRITE}\n<think>Should I also mention the driver? Perhaps", REWRITE),
    ],
    ids=[
        "pixtral-plain",
        "think-then-paragraph",
        "think-then-answer",
        "answer-only",
        "tag-case",
        "last-answer",
        "unclosed-think",
    ],
)
def test_clean_removes_reasoning_and_keeps_the_paragraph(raw: str, expected: str) -> None:
    """Reasoning blocks go, answer blocks are unwrapped, and the paragraph comes out on single spaces."""
    assert clean(raw) == expected


@pytest.mark.parametrize(
    "preamble",
    [
        "Here is the rewritten prompt:\n",
        "Here's the enhanced prompt:\n\n",
        "Sure! Here's an enhanced version:\n",
        "Sure, here is a more detailed version of your prompt:\n\n",
        "Below is the improved prompt:\n",
        "The upsampled prompt:\n",
        "  here is the rewrite, following the instructions:  \n",
    ],
)
def test_clean_drops_a_leading_here_is_line(preamble: str) -> None:
    """A chatty first line ending in a colon ("Here is…:", "Sure! Here's…:") is not part of the prompt."""
    assert clean(preamble + REWRITE) == REWRITE


@pytest.mark.parametrize(
    "label",
    ["Prompt: ", "prompt:", "Rewritten prompt: ", "Enhanced Prompt:\n", "**Prompt:** ", "**Upsampled prompt**: "],
)
def test_clean_drops_a_leading_prompt_label(label: str) -> None:
    """A "Prompt:" label (plain, qualified or in bold) in front of the paragraph is removed."""
    assert clean(label + REWRITE) == REWRITE


def test_clean_drops_preamble_then_label() -> None:
    """A preamble line followed by a label is removed as a whole."""
    assert clean("Here is the rewritten prompt:\nPrompt: " + REWRITE) == REWRITE


@pytest.mark.parametrize(
    "wrapped",
    [
        f'"{REWRITE}"',
        f"'{REWRITE}'",
        f"“{REWRITE}”",
        f"‘{REWRITE}’",
        f'"“{REWRITE}”"',
        f'  "\n{REWRITE}\n"  ',
        f'**"{REWRITE}"**',
    ],
    ids=["straight-double", "straight-single", "curly-double", "curly-single", "nested", "padded", "bold-quoted"],
)
def test_clean_strips_wrapping_quotes(wrapped: str) -> None:
    """Quotes (straight or curly, nested, inside bold) around the whole paragraph are removed."""
    assert clean(wrapped) == REWRITE


def test_clean_removes_markdown_emphasis() -> None:
    """Bold, underscore-bold and code marks are removed and the words between them are kept."""
    raw = "At night, a **yellow forklift** drives across a __wet__ concrete dock lit by `sodium` lamps."
    assert clean(raw) == "At night, a yellow forklift drives across a wet concrete dock lit by sodium lamps."


def test_clean_collapses_whitespace_runs() -> None:
    """Newlines, tabs and runs of spaces become single spaces, and the ends are trimmed."""
    raw = "\n\n  A forklift\tcarries crates.\n\nSodium lamps   glow\r\non the wet dock.  \n"
    assert clean(raw) == "A forklift carries crates. Sodium lamps glow on the wet dock."


def test_clean_all_in_one_reason1_answer() -> None:
    """Reasoning, preamble, label, quotes, bold and line breaks together leave just the paragraph."""
    raw = f'{THINK}\n\nSure! Here\'s an enhanced version:\n\n**Prompt:** "{PIXTRAL_RAW.strip()}"\n'
    assert clean(raw) == REWRITE


def test_clean_keeps_here_is_and_prompt_inside_the_paragraph() -> None:
    """Only a *leading* preamble or label is removed; the same words later in the text are kept."""
    raw = "A director reads the prompt: here is the set, a wet dock at night where a forklift moves crates."
    assert clean(raw) == raw


@pytest.mark.parametrize(
    "raw",
    [THINK, f"{THINK}\n<answer>\n</answer>", "<think>The user wants a forklift scene. Let me", '""', "“ ”", "****"],
    ids=["think-only", "empty-answer", "unclosed-think-only", "empty-quotes", "empty-curly-quotes", "bold-marks"],
)
def test_clean_of_no_prompt_text_is_empty(raw: str) -> None:
    """Reasoning alone, an empty answer block, empty quotes or bare markup clean to nothing."""
    assert clean(raw) == ""


def test_clean_keeps_quotes_that_do_not_wrap_the_whole_text() -> None:
    """Only *wrapping* quotes go: a paragraph that starts and ends with two separate quoted words keeps them."""
    raw = '"Golden hour" light falls on a farm gate under a hand-painted sign that reads "Fresh eggs"'
    assert clean(raw) == raw


def test_clean_removes_reasoning_before_an_orphan_closing_think_tag() -> None:
    """Reasoning is removed even when only its closing tag is in the answer (the template opened the block)."""
    raw = f"The user wants more detail about the dock and the lamps.\n</think>\n\n{REWRITE}"
    assert clean(raw) == REWRITE


# --------------------------------------------------------------------------------------------- judge: accepted


@pytest.mark.parametrize("finish_reason", [None, "stop"])
def test_judge_accepts_a_good_rewrite(finish_reason: str | None) -> None:
    """A real rewrite that adds detail is accepted, cleaned exactly and not marked truncated."""
    result = judge(PIXTRAL_RAW, ORIGINAL, finish_reason=finish_reason)
    assert result == CleanAnswer(text=REWRITE, truncated=False)


def test_judge_accepts_a_reason1_answer_with_reasoning_and_preamble() -> None:
    """A Reason1-style answer (think block, answer block, preamble, quotes) yields the bare paragraph."""
    raw = f'{THINK}\n<answer>\nHere is the rewritten prompt:\n"{REWRITE}"\n</answer>'
    assert judge(raw, ORIGINAL) == CleanAnswer(text=REWRITE, truncated=False)


def test_judge_without_length_finish_does_not_cut() -> None:
    """Only ``finish_reason == "length"`` cuts at a sentence: a stopped answer without a final period is kept whole."""
    raw = REWRITE.removesuffix(".") + " and the lamps hum"
    assert judge(raw, ORIGINAL, finish_reason="stop") == CleanAnswer(text=raw, truncated=False)


def test_judge_accepts_exactly_the_minimum_length() -> None:
    """An answer of exactly ``MIN_LENGTH_RATIO`` times the input's length is long enough."""
    assert len(AT_MINIMUM) == math.ceil(MIN_LENGTH_RATIO * len(ORIGINAL))
    assert judge(AT_MINIMUM, ORIGINAL) == CleanAnswer(text=AT_MINIMUM, truncated=False)


def test_judge_measures_the_input_without_surrounding_whitespace() -> None:
    """Whitespace around the input prompt does not make the rewrite look too short."""
    assert judge(AT_MINIMUM, f"\n\n   {ORIGINAL}   \n" + " " * 200).text == AT_MINIMUM


# --------------------------------------------------------------------------------------------- judge: truncated


@pytest.mark.parametrize("tail", [" The camera then slowly tilts up toward", " Rain", " As the forklift reaches the"])
def test_judge_cuts_a_length_limited_answer_at_its_last_full_sentence(tail: str) -> None:
    """An answer cut off by ``max_tokens`` is kept up to its last full sentence and marked truncated."""
    result = judge(REWRITE + tail, ORIGINAL, finish_reason="length")
    assert result == CleanAnswer(text=REWRITE, truncated=True)


@pytest.mark.parametrize("end", ["!", "?", ".", '."', ".)"])
def test_judge_cut_keeps_the_sentence_end_and_its_closing_mark(end: str) -> None:
    """The kept text ends with the sentence's own punctuation, including a closing quote or bracket."""
    body = REWRITE.removesuffix(".")
    result = judge(f"{body}{end} Then the camera", ORIGINAL, finish_reason="length")
    assert result == CleanAnswer(text=body + end, truncated=True)


def test_judge_cuts_a_truncated_reason1_answer_after_its_reasoning() -> None:
    """A Reason1 answer cut off after its reasoning is cleaned, then cut at the last full sentence."""
    raw = f"{THINK}\n\n{REWRITE} A second forklift waits in the"
    assert judge(raw, ORIGINAL, finish_reason="length") == CleanAnswer(text=REWRITE, truncated=True)


def test_judge_truncated_answer_that_already_ends_a_sentence_is_kept_whole() -> None:
    """An answer that hit ``max_tokens`` right at a period keeps everything, still marked truncated."""
    assert judge(REWRITE, ORIGINAL, finish_reason="length") == CleanAnswer(text=REWRITE, truncated=True)


def test_judge_cuts_a_truncated_answer_block_without_keeping_its_tag() -> None:
    """An answer block cut off by ``max_tokens`` (no closing tag) keeps its full sentences and not the tag."""
    raw = f"{THINK}\n<answer>\n{REWRITE} The camera then slowly tilts up toward"
    assert judge(raw, ORIGINAL, finish_reason="length") == CleanAnswer(text=REWRITE, truncated=True)


@pytest.mark.parametrize(
    "raw",
    [
        "At night a yellow forklift drives slowly across a wet concrete loading dock carrying a wooden pallet of",
        f"{THINK}\n\nAt night a yellow forklift drives slowly across a wet concrete loading dock while the",
        "At 3.5 metres above the dock, an orange sodium lamp lights a forklift carrying red crates toward the",
    ],
    ids=["plain", "after-think", "decimal-is-not-a-sentence-end"],
)
def test_judge_rejects_a_truncated_answer_without_a_full_sentence(raw: str) -> None:
    """If ``max_tokens`` hit before the first sentence ended, nothing usable is left."""
    with pytest.raises(AnswerRejectedError, match="max_tokens"):
        judge(raw, ORIGINAL, finish_reason="length")


def test_judge_rejects_a_truncated_answer_whose_full_sentences_are_too_short() -> None:
    """Cutting at the last sentence can leave too little: then the answer is rejected as too short."""
    raw = "A forklift moves. It carries red crates across the wet loading dock while sodium lamps buzz over"
    with pytest.raises(AnswerRejectedError, match="shorter"):
        judge(raw, ORIGINAL, finish_reason="length")


def test_judge_rejects_a_truncated_answer_cut_inside_its_reasoning() -> None:
    """An answer that ran out of tokens while still reasoning holds no prompt."""
    raw = "<think>\nThe user wants a forklift scene. First I will describe the dock. Then the"
    with pytest.raises(AnswerRejectedError, match="no prompt text"):
        judge(raw, ORIGINAL, finish_reason="length")


# --------------------------------------------------------------------------------------------- judge: rejected


@pytest.mark.parametrize("content", [None, "", "  \n\t "], ids=["none", "empty", "whitespace"])
def test_judge_rejects_an_empty_answer(content: str | None) -> None:
    """No content, an empty string or only whitespace is rejected as empty."""
    with pytest.raises(AnswerRejectedError, match="empty"):
        judge(content, ORIGINAL)


@pytest.mark.parametrize(
    "content",
    [THINK, f"{THINK}\n<answer>\n</answer>", f'{THINK}\n""', "**  **"],
    ids=["think-only", "empty-answer-block", "empty-quotes", "bare-markup"],
)
def test_judge_rejects_an_answer_with_only_reasoning_or_markup(content: str) -> None:
    """An answer that is all reasoning, quotes or markup holds no prompt text."""
    with pytest.raises(AnswerRejectedError, match="no prompt text"):
        judge(content, ORIGINAL)


@pytest.mark.parametrize(
    "content",
    [
        ORIGINAL,
        f"  {ORIGINAL}\n",
        ORIGINAL.upper(),
        "a forklift carries a pallet of red crates across a wet loading dock at night under sodium lamps",
        "A forklift carries a pallet of red crates -- across a wet loading dock at night; under sodium lamps!",
        "A forklift\ncarries a pallet of red crates across a wet loading dock\n\nat night,   under sodium lamps.",
        f'{THINK}\nHere is the rewritten prompt:\n"{ORIGINAL}"',
        f"<answer>**{ORIGINAL}**</answer>",
    ],
    ids=[
        "verbatim",
        "padded",
        "upper-case",
        "lower-no-punctuation",
        "other-punctuation",
        "other-whitespace",
        "reason1-wrapped",
        "bold-in-answer",
    ],
)
def test_judge_rejects_the_input_repeated(content: str) -> None:
    """The input repeated (whatever its case, punctuation, whitespace or wrapping) is not a rewrite."""
    with pytest.raises(AnswerRejectedError, match="repeats the input"):
        judge(content, ORIGINAL)


def test_judge_rejects_a_near_repeat() -> None:
    """A long prompt repeated with one word changed is a near repeat, not a rewrite."""
    with pytest.raises(AnswerRejectedError, match="near repeat") as caught:
        judge(LONG_ONE_WORD_CHANGED, LONG_ORIGINAL)
    assert f"{REPEAT_SIMILARITY:.0%}" in str(caught.value)


def test_judge_rejects_a_near_repeat_with_a_tiny_addition() -> None:
    """Appending a couple of words to the input does not make it a rewrite."""
    with pytest.raises(AnswerRejectedError, match="near repeat"):
        judge(LONG_ORIGINAL + " The sky is pink.", LONG_ORIGINAL)


@pytest.mark.parametrize(
    "content",
    [
        "A forklift moves red crates at night.",
        "Forklift, crates, wet dock, night.",
        "A forklift carries a pallet of red crates.",
    ],
)
def test_judge_rejects_an_answer_much_shorter_than_the_input(content: str) -> None:
    """A rewrite must add detail: an answer much shorter than the input is rejected, with both lengths."""
    with pytest.raises(AnswerRejectedError, match="shorter") as caught:
        judge(content, ORIGINAL)
    assert str(len(content)) in str(caught.value)
    assert str(len(ORIGINAL)) in str(caught.value)


def test_judge_rejects_one_character_below_the_minimum_length() -> None:
    """An answer one character short of ``MIN_LENGTH_RATIO`` times the input's length is too short."""
    below = AT_MINIMUM.replace("tall", "big")
    assert len(below) == math.ceil(MIN_LENGTH_RATIO * len(ORIGINAL)) - 1
    with pytest.raises(AnswerRejectedError, match="shorter"):
        judge(below, ORIGINAL)


def test_answer_rejected_error_is_a_value_error() -> None:
    """Callers that catch ``ValueError`` also catch a rejected answer."""
    assert issubclass(AnswerRejectedError, ValueError)
    with pytest.raises(ValueError, match="empty"):
        judge(None, ORIGINAL)
