"""Group sizes: choosing one that divides a model's dimension, reading and naming requests.

Everything about a group size has its home here: :func:`choose_group_size` (back-off),
:func:`parse_group_size` (an integer, ``"row"`` or ``"tensor"``, as the CLI and the explorer
take it), :func:`resolve_group_size` (the size actually used for a tensor's shape) and
:func:`setting_label`, the one formatter of labels such as ``int8 g=32``.

The classic loop adjusts a requested group size by halving it until it divides the dimension::

    while dim % group_size != 0:
        group_size /= 2

That works for powers of two but fails badly otherwise: for ``dim = 4096`` a request of 300
goes 300 -> 150 -> 75 -> 37 -> 18 -> 9 -> 4, ending at a group size of 4 (8 bits of scale per
weight) although 256 divides 4096.

gqlearn's default policy, ``"pow2"``, keeps a request that divides the dimension, and
otherwise returns the largest power of two that is at most the request and divides it.
Powers of two are what kernels are written for (SIMD widths, llama.cpp's 32-weight blocks, GPU
warps of 32), they never overshoot the request, and every transformer width we know of is a
multiple of 32, so the result is never tiny in practice.  ``"divisor"`` returns the largest
divisor at most the request (closest overhead to what was asked, but sizes like 144 or 192 that
no kernel is tuned for).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from ._checks import positive_int

__all__ = ["choose_group_size", "halving_sequence", "POLICIES", "GroupSize", "parse_group_size",
           "resolve_group_size", "setting_label"]

Policy = Literal["pow2", "divisor", "halve"]
POLICIES = ("pow2", "divisor", "halve")
GroupSize = int | str  # an int, "row" (one group per row) or "tensor" (one group per tensor)


def halving_sequence(dim: int, requested: int) -> list[int]:
    """Every group size the classic halving loop tries, ending with the one it returns.

    >>> halving_sequence(4096, 300)
    [300, 150, 75, 37, 18, 9, 4]
    """
    dim = positive_int("dim", dim)
    size = positive_int("requested", requested)
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
        ``"halve"``: the classic loop, halving ``requested`` until it divides ``dim``.

    Returns
    -------
    int
        A group size ``g`` with ``dim % g == 0``; ``requested`` itself when it already divides.

    Raises
    ------
    ValueError
        If ``dim`` or ``requested`` is not a positive integer, ``dim`` is above ``2**63 - 1``
        (no array axis is that long), or ``policy`` is unknown.

    Examples
    --------
    >>> choose_group_size(4096, 300), choose_group_size(4096, 300, "halve")
    (256, 4)
    >>> choose_group_size(384, 256), choose_group_size(384, 256, "divisor")
    (128, 192)
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; use one of {POLICIES}")
    dim = positive_int("dim", dim)
    requested = positive_int("requested", requested)
    if policy == "halve":
        return halving_sequence(dim, requested)[-1]
    if dim % requested == 0:
        return requested
    if policy == "pow2":
        size = 1 << (min(requested, dim).bit_length() - 1)
        while dim % size:
            size //= 2
        return size
    return max(d for d in _divisors(dim) if d <= requested)


def parse_group_size(text: str | int) -> GroupSize:
    """Read a group size from the command line: a positive integer, ``row`` or ``tensor``.

    >>> parse_group_size("128"), parse_group_size("row"), parse_group_size("per-tensor")
    (128, 'row', 'tensor')
    """
    if isinstance(text, int) and not isinstance(text, bool):
        value: GroupSize = text
    else:
        t = str(text).strip().lower().replace("_", "-")
        if t in ("row", "channel", "per-row", "per-channel"):
            return "row"
        if t in ("tensor", "per-tensor"):
            return "tensor"
        try:
            value = int(t)
        except ValueError:
            raise ValueError(f"group size must be a positive integer, 'row' or 'tensor', "
                             f"got {text!r}") from None
    if value <= 0:
        raise ValueError(f"group size must be positive, got {value}")
    return value


def resolve_group_size(shape: Sequence[int], requested: GroupSize,
                       policy: Policy = "pow2") -> int:
    """The group size used for a tensor of ``shape``, after any back-off.

    Parameters
    ----------
    shape : sequence of int
    requested : int, "row" or "tensor"
    policy : {"pow2", "divisor", "halve"}
        How a size that does not divide ``shape[-1]`` backs off (:func:`choose_group_size`).

    Returns
    -------
    int
        Divides ``shape[-1]``; for ``"tensor"`` it is the tensor's size (the tensor is then
        quantized as one row).

    >>> resolve_group_size((384, 384), 256), resolve_group_size((384, 1536), 256)
    (128, 256)
    >>> resolve_group_size((384, 384), "row"), resolve_group_size((384, 384), "tensor")
    (384, 147456)
    """
    requested = parse_group_size(requested)
    if requested == "tensor":
        return math.prod(shape)
    if requested == "row":
        return int(shape[-1])
    return choose_group_size(int(shape[-1]), int(requested), policy)


def setting_label(bits: int, group_size: GroupSize, *, asymmetric: bool = False) -> str:
    """The course's one name for a quantization setting, as tables and plots print it.

    Parameters
    ----------
    bits : int
    group_size : int, "row" or "tensor"
        Anything :func:`parse_group_size` reads.
    asymmetric : bool, default False
        A minimum and a step per group (:func:`gqlearn.formats.quantize_minmax`): adds ``asym``.

    Examples
    --------
    >>> setting_label(8, 128), setting_label(4, "row"), setting_label(8, "tensor")
    ('int8 g=128', 'int4 per-row', 'int8 per-tensor')
    >>> setting_label(4, 32, asymmetric=True)
    'int4 asym g=32'
    """
    g = parse_group_size(group_size)
    grouping = "per-tensor" if g == "tensor" else "per-row" if g == "row" else f"g={g}"
    return f"int{bits} " + ("asym " if asymmetric else "") + grouping


# Axis lengths are at most this (numpy's and safetensors' int64 sizes).
_MAX_DIM = 2**63 - 1


def _divisors(n: int) -> list[int]:
    """Every divisor of ``n``, from its prime factors: milliseconds for any ``n < 2**63``
    (a scan of 1..n takes 27 s for n = 10**9 + 7 and years for a prime near 2**61)."""
    if n > _MAX_DIM:
        raise ValueError(f"dim {n} is larger than any array axis can be (2**63 - 1)")
    divisors = [1]
    for p, k in _factorize(n).items():
        divisors = [d * p**e for d in divisors for e in range(k + 1)]
    return divisors


def _factorize(n: int) -> dict[int, int]:
    factors: dict[int, int] = {}
    for p in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):
        while n % p == 0:
            factors[p] = factors.get(p, 0) + 1
            n //= p
    stack = [n] if n > 1 else []
    while stack:
        m = stack.pop()
        if _is_prime(m):
            factors[m] = factors.get(m, 0) + 1
            continue
        d = _pollard_brent(m)
        stack += [d, m // d]
    return factors


def _is_prime(n: int) -> bool:
    """Miller-Rabin with the first 12 primes as bases: exact for n < 3.3 * 10**24."""
    if n < 2:
        return False
    bases = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)
    if n in bases:
        return True
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for a in bases:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def _pollard_brent(n: int) -> int:
    """A nontrivial factor of the odd composite ``n`` (Brent's variant of Pollard's rho)."""
    for c in range(1, n):
        y, m, g, r, q = 2, 128, 1, 1, 1
        x = ys = y
        while g == 1:
            x = y
            for _ in range(r):
                y = (y * y + c) % n
            k = 0
            while k < r and g == 1:
                ys = y
                for _ in range(min(m, r - k)):
                    y = (y * y + c) % n
                    q = q * abs(x - y) % n
                g = math.gcd(q, n)
                k += m
            r *= 2
        if g == n:
            g = 1
            while g == 1:
                ys = (ys * ys + c) % n
                g = math.gcd(abs(x - ys), n)
        if g != n:
            return g
    raise AssertionError(f"no factor found for {n}")  # pragma: no cover - n is composite
