"""Feedback for the exercises at the end of each notebook, shared by every chapter's module.

Each chapter's checkers (in ``gqlearn.lessons``) run the learner's function with
:func:`call_learner` and return a :class:`Feedback`, which prints as one line in a notebook and
is truthy when the answer is right, so tests can assert on it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Feedback", "right", "wrong", "close_enough", "call_learner"]


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
        value = float(answer)  # type: ignore[arg-type]  # any object: float() is the check
    except (TypeError, ValueError):
        return False
    return bool(np.isclose(value, expected, rtol=rel, atol=abs_))


def call_learner(fn: Callable[..., Any], *args: Any) -> tuple[Any, str | None]:
    """Run the learner's ``fn(*args)``: ``(result, None)``, or ``(None, message)`` if it raised.

    numpy's floating-point errors and Python warnings are silenced while it runs: a learner's
    division by a zero scale or an overflowing ``exp`` should reach the checker as the inf or
    nan it produced, which the checker explains, not as a warning printed above the verdict.
    Any exception is caught (the learner's code may raise anything) and described as
    ``"TypeName: message"``, for the checker to put in its own feedback.

    >>> call_learner(lambda x: x / 0, np.float32(1))
    (np.float32(inf), None)
    >>> call_learner(lambda x: 1 // x, 0)
    (None, 'ZeroDivisionError: integer division or modulo by zero')
    """
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn(*args), None
    except Exception as exc:  # the learner's code may raise anything
        return None, f"{type(exc).__name__}: {exc}"
