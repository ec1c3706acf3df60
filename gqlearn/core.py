"""Group-wise symmetric absmax quantization: ``quantize``, ``dequantize``, ``QuantizedTensor``.

The scheme is the course's (and llama.cpp's Q8_0, and llama2.c's ``quantize_q80``)::

    qmax  = 2**(bits - 1) - 1                   # 127 at 8 bits
    scale = max(|group|) / qmax                 # one float32 per group
    q     = clip(round(w / scale), -qmax, qmax) # stored as int8
    w'    = q * scale                           # dequantized, float32

An all-zero group (or one so tiny that ``scale`` underflows to 0) gets scale 1.0 and zeros.

Where implementations differ, only at rounding ties
----------------------------------------------------
``w / scale`` lands exactly on ``k + 0.5`` for a few weights in a large tensor; there the
result depends on three choices:

* the rounding rule: half away from zero (C ``roundf``, Rust ``f32::round``, llama.cpp) or half
  to even (numpy ``rint``, ``torch.round``, llama2.c's ``export.py``): ``rounding=``;
* dividing by the scale (the course, llama2.c) or multiplying by its float32 reciprocal
  (llama.cpp: ``id = 1/d; q = roundf(x * id)``), which can differ in the last bit of the
  quotient: ``reciprocal=`` (groups with a subnormal scale, whose reciprocal overflows, divide);
* the stored scale's dtype: Q8_0 stores ``d`` as float16, so its dequantized weights use the
  float16-rounded scale (``gqlearn.formats.to_q8_0``).

``quantize(w, 32, rounding="half_away", reciprocal=True)`` gives llama.cpp Q8_0's values,
and ``quantize(w, gs, rounding="half_even")`` gives llama2.c ``quantize_q80``'s values.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np

from . import _parallel, packing
from ._checks import (
    as_weights,
    baseline_bits,
    check_bits,
    check_group_size,
    check_rounding,
    nonfinite_error,
)
from ._numba import fused_kernels, numba_threads, pick_backend, require_fused_kernels
from ._parallel import Block, plan_blocks, run_blocks, scratch
from ._rounding import round_half_away

__all__ = ["QuantizedTensor", "quantize", "dequantize", "qmax_for_bits",
           "available_backends"]

Rounding = Literal["half_away", "half_even"]


def qmax_for_bits(bits: int) -> int:
    """Largest quantized magnitude for symmetric ``bits``-bit quantization: ``2**(bits-1) - 1``."""
    return 2 ** (check_bits(bits) - 1) - 1


class QuantizedTensor:
    """A tensor quantized group-wise along its last axis.

    Construct it as ``QuantizedTensor(values, scales, group_size, bits, rounding, reciprocal)``
    (int8 ``values`` of the original shape), or from stored bytes with :meth:`from_packed`.
    Instances are immutable.

    Attributes
    ----------
    values : numpy.ndarray
        int8 quantized values, same shape as the original tensor, within ``±qmax``.  At 8 bits
        this is the stored array; below 8 bits the values are stored packed (see ``packed``) and
        each access unpacks them into a new int8 array of ``size`` bytes (measured 0.7 to 1.5 ms
        per million weights): read it once into a variable, not inside a loop.
    packed : numpy.ndarray
        The values as stored: int8 of the original shape at 8 bits; uint8 packed along the last
        axis at 2 to 7 bits, eight values in ``bits`` bytes, each row padded to a multiple of 8
        values (layout in :mod:`gqlearn.packing`).
    scales : numpy.ndarray
        float32 scales, shape ``(*shape[:-1], shape[-1] // group_size)``.
    group_size : int
        Consecutive weights along the last axis that share a scale.
    bits : int
        Bit width (2 to 8); values lie in ``[-qmax, qmax]`` with ``qmax = 2**(bits-1) - 1``.
    rounding : str
        ``"half_away"`` or ``"half_even"``, as passed to :func:`quantize`.
    reciprocal : bool
        Whether ``w * (1/scale)`` was used instead of ``w / scale``.

    Memory accounting (``values_nbytes``, ``nbytes``, ``bits_per_weight``) counts the bytes
    really held: the packed values plus one float32 scale per group.  When the last axis is a
    multiple of 8 that is ``bits + 32 / group_size`` bits per weight; otherwise each row's
    padding to a multiple of 8 values is counted too.
    """

    def __init__(self, values: np.ndarray, scales: np.ndarray, group_size: int, bits: int = 8,
                 rounding: str = "half_away", reciprocal: bool = False,
                 _checked: bool = False) -> None:
        values, scales = np.asarray(values), np.asarray(scales)
        if not _checked:
            if values.dtype != np.int8:
                raise TypeError(f"values must be int8, got {values.dtype}")
            if values.ndim == 0 or values.size == 0:
                raise ValueError(f"values must be a non-empty array with at least one axis, "
                                 f"got shape {values.shape}")
            check_bits(bits)
            qmax = qmax_for_bits(bits)
            if values.min() < -qmax or values.max() > qmax:
                raise ValueError(f"values must lie in [-{qmax}, {qmax}] for {bits} bits")
        self._set(packing.pack(values, bits), values.shape, scales, group_size, bits, rounding,
                  reciprocal, _checked)

    @classmethod
    def from_packed(cls, packed: np.ndarray, shape: tuple[int, ...], scales: np.ndarray,
                    group_size: int, bits: int = 8, rounding: str = "half_away",
                    reciprocal: bool = False) -> QuantizedTensor:
        """A tensor from its stored values (``qt.packed``), e.g. as read from a file.

        The packed fields are checked (every value within ``±qmax``, zero padding).

        Examples
        --------
        >>> import numpy as np, gqlearn
        >>> qt = gqlearn.quantize(np.linspace(-1, 1, 16, dtype=np.float32), 8, bits=4)
        >>> qt.packed.nbytes, qt.values.nbytes
        (8, 16)
        >>> back = gqlearn.QuantizedTensor.from_packed(qt.packed, qt.shape, qt.scales, 8, bits=4)
        >>> np.array_equal(back.values, qt.values)
        True
        """
        packed = np.asarray(packed)
        shape = tuple(int(d) for d in shape)
        check_bits(bits)
        if len(shape) == 0 or 0 in shape:
            raise ValueError(f"shape must be non-empty with at least one axis, got {shape}")
        want = packing.packed_shape(shape, bits)
        dtype = np.int8 if bits == 8 else np.uint8
        if packed.dtype != dtype or packed.shape != want:
            raise ValueError(f"{bits}-bit values of shape {shape} are stored as "
                             f"{np.dtype(dtype).name} {want}, got {packed.dtype} {packed.shape}")
        packing.check_packed(packed, bits, shape[-1])
        self = cls.__new__(cls)
        self._set(packed, shape, np.asarray(scales), group_size, bits, rounding, reciprocal,
                  False)
        return self

    def _set(self, packed: np.ndarray, shape: tuple[int, ...], scales: np.ndarray,
             group_size: int, bits: int, rounding: str, reciprocal: bool, checked: bool) -> None:
        if not checked:
            if scales.dtype != np.float32:
                raise TypeError(f"scales must be float32, got {scales.dtype}")
            check_rounding(rounding)
            group_size = check_group_size(group_size, shape[-1])
            expected = (*shape[:-1], shape[-1] // group_size)
            if scales.shape != expected:
                raise ValueError(f"scales have shape {scales.shape}, but values of shape "
                                 f"{shape} with group_size {group_size} need {expected}")
            if not np.isfinite(scales).all() or (scales <= 0).any():
                raise ValueError("scales must be finite and positive")
            qmax = qmax_for_bits(bits)
            if scales.max() > _MAX_SCALES[qmax]:
                raise ValueError(f"scale {scales.max():.7g} is too large: {qmax} * scale "
                                 f"overflows float32, so dequantized weights would be inf; "
                                 f"scales must be at most {_MAX_SCALES[qmax]:.7g} for {bits} bits")
        for name, value in (("_packed", packed), ("_shape", tuple(shape)), ("scales", scales),
                            ("group_size", int(group_size)), ("bits", int(bits)),
                            ("rounding", rounding), ("reciprocal", bool(reciprocal))):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"QuantizedTensor is immutable: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"QuantizedTensor is immutable: cannot delete {name!r}")

    def __reduce__(self):  # pickles through _from_packed_unchecked, skipping the checks
        return (_from_packed_unchecked, (self._packed, self._shape, self.scales, self.group_size,
                                         self.bits, self.rounding, self.reciprocal))

    @property
    def values(self) -> np.ndarray:
        """int8 values of the original shape (unpacked on each access below 8 bits)."""
        if self.bits == 8:
            return self._packed
        return packing.unpack(self._packed, self.bits, self._shape[-1])

    @property
    def packed(self) -> np.ndarray:
        """The values as stored (packed uint8 below 8 bits, int8 at 8 bits)."""
        return self._packed

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the original tensor."""
        return self._shape

    @property
    def size(self) -> int:
        """Number of weights."""
        return math.prod(self._shape)

    @property
    def n_groups(self) -> int:
        """Number of groups, i.e. of scales."""
        return self.scales.size

    @property
    def qmax(self) -> int:
        """Largest quantized magnitude, ``2**(bits-1) - 1``."""
        return 2 ** (self.bits - 1) - 1

    @property
    def values_nbytes(self) -> int:
        """Bytes the stored values really take (``packed.nbytes``)."""
        return int(self._packed.nbytes)

    @property
    def scales_nbytes(self) -> int:
        """Bytes of the float32 scales."""
        return 4 * self.n_groups

    @property
    def nbytes(self) -> int:
        """Bytes held: packed values plus float32 scales."""
        return self.values_nbytes + self.scales_nbytes

    @property
    def bits_per_weight(self) -> float:
        """Storage cost per weight, ``bits + 32 / group_size`` (plus any row padding)."""
        return 8 * self.nbytes / self.size

    def compression_ratio(self, against: str = "float32") -> float:
        """How many times smaller than the same tensor stored as ``against``.

        Parameters
        ----------
        against : {"float32", "float16", "bfloat16"} (or "fp32", "fp16", "bf16")
        """
        return baseline_bits(against) * self.size / (8 * self.nbytes)

    def dequantize(self, **kwargs: Any) -> np.ndarray:
        """Same as :func:`gqlearn.dequantize` applied to this tensor."""
        return dequantize(self, **kwargs)

    def __repr__(self) -> str:
        return (f"QuantizedTensor(shape={self.shape}, group_size={self.group_size}, "
                f"bits={self.bits}, rounding={self.rounding!r}, n_groups={self.n_groups}, "
                f"bits_per_weight={self.bits_per_weight:.3f})")


def _from_packed_unchecked(packed: np.ndarray, shape: tuple[int, ...], scales: np.ndarray,
                           group_size: int, bits: int, rounding: str,
                           reciprocal: bool) -> QuantizedTensor:
    self = QuantizedTensor.__new__(QuantizedTensor)
    self._set(packed, shape, scales, group_size, bits, rounding, reciprocal, True)
    return self


def _as_groups(w: np.ndarray, group_size: int) -> np.ndarray:
    """View ``w`` as ``(n_groups, group_size)``; copies only if ``w`` is not C-contiguous."""
    return np.ascontiguousarray(w).reshape(-1, group_size)


# Group sizes up to this are reduced through a transposed copy (measured faster on x86-64).
_TRANSPOSE_UP_TO = 64

# Below this absmax the scale is subnormal and w / scale can overshoot qmax; above it the
# quotient is provably within qmax + 0.5, so clipping is skipped.
_TINY = float(np.finfo(np.float32).tiny)


def _max_scale(qmax: int) -> np.float32:
    """Largest float32 scale whose ``qmax * scale`` is finite in float32.

    ``max|group| / qmax`` rounds up for a group near float32's maximum (3.4e38), and then
    ``127 * scale`` overflows to inf on dequantization.  Scales are clamped to this bound.  We
    clamp instead of raising because such weights are finite and quantizable, and instead of
    computing ``q * scale`` in float64 because the clamp touches only groups whose max is within
    one float32 step of 3.4e38 (no real weight comes near it), so on every other tensor the
    scales, values and dequantized weights stay bit-exact with llama.cpp Q8_0 and llama2.c; the
    clamped scale is at most one ulp smaller, so ``w / scale`` stays below ``qmax + 0.5`` and
    rounds to ``qmax`` without clipping.
    """
    s = np.float32(float(np.finfo(np.float32).max) / qmax)
    with np.errstate(over="ignore"):
        while not np.isfinite(s * np.float32(qmax)):
            s = np.nextafter(s, np.float32(0))
    return s


_MAX_SCALES = {2 ** (b - 1) - 1: _max_scale(2 ** (b - 1) - 1) for b in range(2, 9)}


def _round_inplace(y: np.ndarray, rounding: str) -> None:
    if rounding == "half_even":
        np.rint(y, out=y)
    else:
        round_half_away(y)


def _block_absmax(src: np.ndarray) -> np.ndarray:
    """Per-row max |x| of a 2-D block (any float dtype), in float32."""
    k, n = src.shape
    a = scratch("absmax", src.size)
    with np.errstate(over="ignore"):  # float64 beyond float32's range -> inf, reported after
        if n <= _TRANSPOSE_UP_TO:
            # numpy reduces short rows slowly (per-row overhead); a transposed copy turns the
            # reduction into n elementwise maxima over rows of length k, which vectorize.
            a = a.reshape(n, k)
            np.copyto(a, src.T, casting="unsafe")
            np.abs(a, out=a)
            return np.maximum.reduce(a, axis=0)
        a = a.reshape(k, n)
        np.abs(src, out=a, dtype=np.float32, casting="unsafe")
        return np.maximum.reduce(a, axis=1)


def _scales_from_absmax(amax: np.ndarray, qmax: int) -> np.ndarray:
    scale = amax / np.float32(qmax)
    scale[scale == 0] = 1.0  # all-zero group, or one so small its scale underflows
    np.minimum(scale, _MAX_SCALES[qmax], out=scale)  # keep qmax * scale finite (_max_scale)
    return scale


def _quantize_rows(src: np.ndarray, scale: np.ndarray, out: np.ndarray, qmax: int,
                   rounding: str, reciprocal: bool) -> None:
    """Quantize a 2-D block ``src`` (any float dtype) with per-row ``scale`` into int8 ``out``."""
    y = scratch("quotient", src.size).reshape(src.shape)
    tiny = scale < _TINY
    if reciprocal:
        with np.errstate(over="ignore", invalid="ignore"):
            inv = np.float32(1) / scale
            np.multiply(src, inv[:, None], out=y, dtype=np.float32, casting="unsafe")
        if tiny.any():
            # 1/scale overflows for subnormal scales: those rows divide instead.
            y[tiny] = np.divide(src[tiny], scale[tiny, None], dtype=np.float32, casting="unsafe")
    else:
        np.divide(src, scale[:, None], out=y, dtype=np.float32, casting="unsafe")
    _round_inplace(y, rounding)
    if tiny.any():
        np.clip(y, -qmax, qmax, out=y)
    np.copyto(out, y, casting="unsafe")


def available_backends() -> list[str]:
    """Kernels usable here: ``"numpy"`` always, ``"numba"`` when numba is installed."""
    return ["numpy", "numba"] if fused_kernels() is not None else ["numpy"]


def _pick_backend(backend: str, n_groups: int, threads: int) -> str:
    # The fused kernel parallelises over groups; a handful of huge groups (per-tensor
    # quantization) is better served by the numpy path, which splits groups into pieces.
    return pick_backend(backend, numba_pays=n_groups >= 4 * threads)


def quantize(w: np.ndarray, group_size: int, *, bits: int = 8, rounding: Rounding = "half_away",
             reciprocal: bool = False, threads: int | None = None,
             chunk_elements: int | None = None, backend: str = "auto") -> QuantizedTensor:
    """Quantize ``w`` group-wise along its last axis with one absmax scale per group.

    Parameters
    ----------
    w : array_like
        Weights of any shape with at least one axis: float16, bfloat16 (``ml_dtypes``),
        float32 or float64.  Computation is in float32 (float64 input is rounded to float32
        first).  Must be finite.
    group_size : int
        Consecutive weights along the last axis that share a scale; must divide
        ``w.shape[-1]``.  ``w.shape[-1]`` gives one scale per row; for a single scale for the
        whole tensor, quantize ``w.reshape(1, -1)`` with ``group_size=w.size``.
    bits : int, default 8
        2 to 8.  ``qmax = 2**(bits-1) - 1``; values are stored as int8 at 8 bits and packed
        (eight values in ``bits`` bytes, :mod:`gqlearn.packing`) below.
    rounding : {"half_away", "half_even"}, default "half_away"
        Rule for ties: half away from zero (the course's Rust ``f32::round``, llama.cpp) or half
        to even (numpy, torch).
    reciprocal : bool, default False
        Multiply by the float32 reciprocal of the scale instead of dividing (llama.cpp does).
    threads : int, optional
        Threads to use; default :func:`gqlearn.default_threads`.  Results do not depend on it.
    chunk_elements : int, optional
        Weights per work block (default 262144).  Results do not depend on it.
    backend : {"auto", "numpy", "numba"}, default "auto"
        ``"numba"`` is the fused one-pass kernel (``pip install gqlearn[fast]``), chosen by
        ``"auto"`` when numba is installed.  Both give bit-identical results.

    Returns
    -------
    QuantizedTensor

    Raises
    ------
    TypeError
        If ``w`` is not a supported float dtype, or ``group_size`` is not an integer.
    ValueError
        If ``w`` is 0-d, empty or not finite; if ``group_size`` does not divide the last axis
        (see :func:`gqlearn.choose_group_size`); if ``bits`` or ``rounding`` is invalid.

    Examples
    --------
    >>> import numpy as np, gqlearn
    >>> w = np.array([2.0, -1.5, 0.8, -0.3, 0.01, -0.02, 0.005, -0.001], dtype=np.float32)
    >>> qt = gqlearn.quantize(w, group_size=4)
    >>> qt.values
    array([ 127,  -95,   51,  -19,   63, -127,   32,   -6], dtype=int8)
    >>> qt.nbytes
    16
    """
    w = as_weights(w)
    group_size = check_group_size(group_size, w.shape[-1])
    bits = check_bits(bits)
    rounding = check_rounding(rounding)
    reciprocal = bool(reciprocal)
    threads = _parallel.check_threads(threads)
    chunk = _parallel.check_chunk_elements(chunk_elements)
    qmax = qmax_for_bits(bits)

    groups = _as_groups(w, group_size)
    n_groups = groups.shape[0]
    values = np.empty(groups.shape, dtype=np.int8)
    scales = np.empty(n_groups, dtype=np.float32)
    if _pick_backend(backend, n_groups, threads) == "numba":
        _quantize_fused(groups, values, scales, qmax, rounding, reciprocal, threads, chunk)
        if not np.isfinite(scales).all():
            raise nonfinite_error(w)
        return QuantizedTensor(values.reshape(w.shape),
                               scales.reshape(*w.shape[:-1], w.shape[-1] // group_size),
                               group_size, bits, rounding, reciprocal, _checked=True)
    blocks, n_pieces = plan_blocks(n_groups, group_size, chunk)

    def check_finite(amax: np.ndarray) -> None:
        if not np.isfinite(amax).all():
            raise nonfinite_error(w)

    if n_pieces == 1:
        # Groups fit in a block: scale and quantize while the block is in cache.
        def fused(b: Block) -> None:
            src = groups[b.g0:b.g1]
            amax = _block_absmax(src)
            check_finite(amax)
            scale = _scales_from_absmax(amax, qmax)
            scales[b.g0:b.g1] = scale
            _quantize_rows(src, scale, values[b.g0:b.g1], qmax, rounding, reciprocal)

        run_blocks(fused, blocks, threads)
    else:
        # Groups longer than a block: max of each piece first, then quantize piece by piece.
        partial = np.empty((n_groups, n_pieces), dtype=np.float32)

        def absmax_piece(b: Block) -> None:
            amax = _block_absmax(groups[b.g0:b.g1, b.c0:b.c1])
            check_finite(amax)
            partial[b.g0:b.g1, b.piece] = amax

        run_blocks(absmax_piece, blocks, threads)
        scales[:] = _scales_from_absmax(partial.max(axis=1), qmax)

        def quantize_piece(b: Block) -> None:
            _quantize_rows(groups[b.g0:b.g1, b.c0:b.c1], scales[b.g0:b.g1],
                           values[b.g0:b.g1, b.c0:b.c1], qmax, rounding, reciprocal)

        run_blocks(quantize_piece, blocks, threads)

    return QuantizedTensor(values.reshape(w.shape),
                           scales.reshape(*w.shape[:-1], w.shape[-1] // group_size),
                           group_size, bits, rounding, reciprocal, _checked=True)


def _quantize_fused(groups: np.ndarray, values: np.ndarray, scales: np.ndarray, qmax: int,
                    rounding: str, reciprocal: bool, threads: int, chunk: int) -> None:
    kernel = require_fused_kernels().quantize_groups
    half_even = rounding == "half_even"
    with numba_threads(threads):
        bits = scales.view(np.uint32)
        if groups.dtype == np.float32:
            kernel(groups, groups.view(np.uint32), qmax, half_even, reciprocal, values, scales,
                   bits)
            _clamp_fused_scales(groups, values, scales, qmax, rounding, reciprocal)
            return
        # Other dtypes are widened to float32 a block at a time, to keep memory bounded.
        per_block = max(1, chunk // groups.shape[1])
        for g0 in range(0, groups.shape[0], per_block):
            g1 = g0 + per_block
            with np.errstate(over="ignore"):  # out-of-range float64 -> inf -> NaN scale
                block = groups[g0:g1].astype(np.float32)
            kernel(block, block.view(np.uint32), qmax, half_even, reciprocal, values[g0:g1],
                   scales[g0:g1], bits[g0:g1])
    _clamp_fused_scales(groups, values, scales, qmax, rounding, reciprocal)


def _clamp_fused_scales(groups: np.ndarray, values: np.ndarray, scales: np.ndarray, qmax: int,
                        rounding: str, reciprocal: bool) -> None:
    """Redo, as the numpy path does, the rare groups whose scale exceeds ``_max_scale``."""
    big = np.flatnonzero(scales > _MAX_SCALES[qmax])  # NaN (non-finite group) compares False
    if big.size:
        scales[big] = _MAX_SCALES[qmax]
        redone = np.empty((big.size, groups.shape[1]), np.int8)
        _quantize_rows(groups[big], scales[big], redone, qmax, rounding, reciprocal)
        values[big] = redone


def dequantize(qt: QuantizedTensor, *, threads: int | None = None,
               chunk_elements: int | None = None, backend: str = "auto") -> np.ndarray:
    """Reconstruct float32 weights: ``values * scale`` of each group.

    Parameters
    ----------
    qt : QuantizedTensor
    threads, chunk_elements : int, optional
        As in :func:`quantize`; results do not depend on them.
    backend : {"auto", "numpy", "numba"}, default "auto"
        As in :func:`quantize`.

    Returns
    -------
    numpy.ndarray
        float32, shape ``qt.shape``.

    Examples
    --------
    >>> import numpy as np, gqlearn
    >>> qt = gqlearn.quantize(np.array([0.1, -0.8, 0.05, -0.02], dtype=np.float32), 4)
    >>> gqlearn.dequantize(qt).round(4)
    array([ 0.1008, -0.8   ,  0.0504, -0.0189], dtype=float32)
    """
    if not isinstance(qt, QuantizedTensor):
        raise TypeError(f"dequantize expects a QuantizedTensor (from gqlearn.quantize), "
                        f"got {type(qt).__name__}")
    threads = _parallel.check_threads(threads)
    chunk = _parallel.check_chunk_elements(chunk_elements)
    if qt.bits < 8:  # packed storage: decoded a block of rows at a time
        from .qmatmul import dequantize_packed
        return dequantize_packed(qt, threads=threads, chunk=chunk, backend=backend)
    values = qt.values.reshape(-1, qt.group_size)
    scales = qt.scales.reshape(-1)
    out = np.empty(values.shape, dtype=np.float32)
    if _pick_backend(backend, values.shape[0], threads) == "numba":
        with numba_threads(threads):
            require_fused_kernels().dequantize_groups(values, scales, out)
        return out.reshape(qt.shape)
    blocks, _ = plan_blocks(values.shape[0], qt.group_size, chunk)

    def kernel(b: Block) -> None:
        np.multiply(values[b.g0:b.g1, b.c0:b.c1], scales[b.g0:b.g1, None],
                    out=out[b.g0:b.g1, b.c0:b.c1], dtype=np.float32)

    run_blocks(kernel, blocks, threads)
    return out.reshape(qt.shape)
