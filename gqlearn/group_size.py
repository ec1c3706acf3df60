"""Choosing a group size that divides a model's dimension.

The seeds adjust a requested group size by halving it until it divides the dimension::

    while dim % group_size != 0:
        group_size /= 2

That works for powers of two but fails badly otherwise: for ``dim = 4096`` a request of 300
goes 300 -> 150 -> 75 -> 37 -> 18 -> 9 -> 4, ending at a group size of 4 (8 bits of scale per
weight) although 256 divides 4096.

gqlearn's default policy, ``"pow2"``, keeps a request that divides the dimension, and
otherwise returns the largest power of two that is at most the request and divides it.  Powers of two are what kernels are written for (SIMD
widths, llama.cpp's 32-weight blocks, GPU warps of 32), they never overshoot the request, and
every transformer width we know of is a multiple of 32, so the result is never tiny in
practice.  ``"divisor"`` returns the largest divisor at most the request (closest overhead to
what was asked, but sizes like 144 or 192 that no kernel is tuned for).
"""

from __future__ import annotations

import numbers
from typing import Literal

__all__ = ["choose_group_size", "halving_sequence", "POLICIES"]

Policy = Literal["pow2", "divisor", "halve"]
POLICIES = ("pow2", "divisor", "halve")


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def halving_sequence(dim: int, requested: int) -> list[int]:
    """Every group size the seeds' halving loop tries, ending with the one it returns.

    >>> halving_sequence(4096, 300)
    [300, 150, 75, 37, 18, 9, 4]
    """
    dim = _positive_int("dim", dim)
    size = _positive_int("requested", requested)
    sequence = [size]
    while dim % size:
        size //= 2  # integer halving, as Rust's usize `/=` does
        sequence.append(size)
    return sequence


def choose_group_size(dim: int, requested: int, policy: Policy = "pow2") -> int:
    """Return a group size that divides ``dim``, derived from ``requested``.

    Parameters
    ----------
    dim : int
        Length of the axis the groups run along (a model's hidden or intermediate width).
    requested : int
        The group size you would like.
    policy : {"pow2", "divisor", "halve"}, default "pow2"
        ``"pow2"``: ``requested`` if it divides ``dim``, else the largest power of two
        <= ``min(requested, dim)`` that divides ``dim``.
        ``"divisor"``: largest divisor of ``dim`` <= ``requested``.
        ``"halve"``: the seeds' loop, halving ``requested`` until it divides ``dim``.

    Returns
    -------
    int
        A group size ``g`` with ``dim % g == 0``; ``requested`` itself when it already divides.

    Raises
    ------
    ValueError
        If ``dim`` or ``requested`` is not a positive integer, or ``policy`` is unknown.

    Examples
    --------
    >>> choose_group_size(4096, 300), choose_group_size(4096, 300, "halve")
    (256, 4)
    >>> choose_group_size(384, 256), choose_group_size(384, 256, "divisor")
    (128, 192)
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; use one of {POLICIES}")
    dim = _positive_int("dim", dim)
    requested = _positive_int("requested", requested)
    if policy == "halve":
        return halving_sequence(dim, requested)[-1]
    if dim % requested == 0:
        return requested
    if policy == "pow2":
        size = 1 << (min(requested, dim).bit_length() - 1)
        while dim % size:
            size //= 2
        return size
    return max(d for d in range(1, min(requested, dim) + 1) if dim % d == 0)
