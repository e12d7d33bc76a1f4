"""Deterministic agent answers for the benchmark, shared by the fake server and the checks."""

from __future__ import annotations

import random
import re

_PROSE = (
    "the refund policy covers every order placed in the last thirty days and you can "
    "start it from your account page where the orders tab lists each purchase with its "
    "status shipping details invoice and a button to request a return or exchange please "
    "note that digital goods are final once downloaded while physical items must arrive "
    "back unused in their original packaging our team checks returns within two business "
    "days & sends a confirmation email when the money is on its way"
)
_VOCAB = tuple(_PROSE.split(" "))
_QUESTION = re.compile(r"bench q(\d+) w(\d+)")


def question(seed: int, words: int) -> str:
    """The message a benchmark user sends; the fake derives its answer from it."""
    return f"bench q{seed} w{words}"


def answer_text(seed: int, words: int) -> str:
    """``words`` words of Markdown-ish prose (paragraphs, a list, inline code), the same for
    the same seed in every process."""
    rng = random.Random(seed)
    out: list[str] = []
    for i in range(words):
        word = rng.choice(_VOCAB)
        if i % 37 == 36:
            sep = "\n\n"
        elif i % 53 == 52:
            sep = "\n- "
        elif i % 29 == 28:
            word = f"`{word}`"
            sep = " "
        else:
            sep = " "
        out.append(word + (sep if i < words - 1 else "."))
    return f"Answer {seed}: " + "".join(out)


def answer_for(message: str | None) -> str:
    """The fake's answer to a benchmark question (anything else gets a short echo)."""
    found = _QUESTION.search(message or "")
    if found is None:
        return f"Echo: {message}"
    return answer_text(int(found.group(1)), int(found.group(2)))
