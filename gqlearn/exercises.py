"""Feedback for the exercises at the end of each notebook.

Each chapter's checkers (in ``gqlearn.lessons``) return a :class:`Feedback`, which prints as
one line in a notebook and is truthy when the answer is right, so tests can assert on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Feedback", "right", "wrong", "close_enough"]


@dataclass(frozen=True)
class Feedback:
    """The verdict on one answer: ``correct`` and a message saying why."""

    correct: bool
    message: str

    def __bool__(self) -> bool:
        return self.correct

    def __repr__(self) -> str:
        return ("Correct: " if self.correct else "Not yet: ") + self.message

    def _repr_markdown_(self) -> str:
        return ("✅ **Correct.** " if self.correct else "❌ **Not yet.** ") + self.message


def right(message: str) -> Feedback:
    return Feedback(True, message)


def wrong(message: str) -> Feedback:
    return Feedback(False, message)


def close_enough(answer: object, expected: float, rel: float = 1e-3, abs_: float = 0.0) -> bool:
    """Whether a numeric answer matches ``expected`` within a relative tolerance."""
    try:
        value = float(answer)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return bool(np.isclose(value, expected, rtol=rel, atol=abs_))
