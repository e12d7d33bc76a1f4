"""Feedback policy: which reactions mean what, and what a reaction change sends to Chatbase."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from bridge.core.models import Feedback, FeedbackFrom
from bridge.core.ports import FeedbackSettings


class Meaning(Enum):
    REGENERATE = "regenerate"


class _Unchanged(Enum):
    UNCHANGED = "unchanged"


UNCHANGED = _Unchanged.UNCHANGED


@dataclass(frozen=True, slots=True)
class FeedbackPolicy:
    positive: frozenset[str]
    negative: frozenset[str]
    regenerate: frozenset[str]
    only_asker: bool

    @classmethod
    def from_settings(cls, settings: FeedbackSettings) -> FeedbackPolicy:
        return cls(
            positive=_names(settings.feedback_positive),
            negative=_names(settings.feedback_negative),
            regenerate=_names(settings.regenerate_reactions),
            only_asker=settings.feedback_from is FeedbackFrom.ASKER,
        )

    def meaning(self, emoji: str) -> Feedback | Meaning | None:
        """What a (normalised) reaction name means, or None for any other emoji."""
        name = emoji.strip().lower()
        if name in self.positive:
            return Feedback.POSITIVE
        if name in self.negative:
            return Feedback.NEGATIVE
        if name in self.regenerate:
            return Meaning.REGENERATE
        return None

    def counts(self, user: str, asker: str) -> bool:
        return not self.only_asker or user == asker

    @staticmethod
    def decide(
        value: Feedback, *, added: bool, remaining: frozenset[str]
    ) -> Feedback | _Unchanged | None:
        """The feedback to send after ``value`` was added or removed.

        ``remaining`` is the set of feedback values this person still has on the answer
        after the change. Adding sends the value; removing clears (``None``) unless the
        person's other thumb is still there, which then becomes the feedback."""
        if added:
            return value
        others = remaining - {value.value}
        if not others:
            return None
        if len(others) == 1:
            return Feedback(next(iter(others)))
        return UNCHANGED


def _names(values: Iterable[str]) -> frozenset[str]:
    return frozenset(v.strip().lower() for v in values if v.strip())
