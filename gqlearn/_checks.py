"""Input validation shared by the public functions: say what is wrong and what to do."""

from __future__ import annotations

import numbers

import numpy as np

try:  # bfloat16 is not a numpy dtype; ml_dtypes provides it (a dependency of gqlearn)
    from ml_dtypes import bfloat16 as _bfloat16
except ImportError:  # pragma: no cover - ml_dtypes is a declared dependency
    _bfloat16 = None

__all__ = ["as_weights", "check_group_size", "check_bits", "check_rounding", "positive_int",
           "baseline_bits", "ROUNDINGS", "SUPPORTED_DTYPES", "BASELINE_BITS"]

ROUNDINGS = ("half_away", "half_even")
# Bits per weight of the float formats a quantized tensor is compared against.
BASELINE_BITS = {"float32": 32, "fp32": 32, "float16": 16, "fp16": 16, "bfloat16": 16, "bf16": 16}
SUPPORTED_DTYPES = "float16, bfloat16, float32 or float64"


def _is_supported_float(dtype: np.dtype) -> bool:
    if dtype.kind == "f":
        return dtype.itemsize in (2, 4, 8)
    return _bfloat16 is not None and dtype == np.dtype(_bfloat16)


def as_weights(w: object, name: str = "w") -> np.ndarray:
    """Return ``w`` as an ndarray of a supported float dtype, or raise a clear error.

    Checks dtype, dimensionality and emptiness; finiteness is checked by the kernels as they
    read the data, so large tensors are not scanned twice.
    """
    arr = w if isinstance(w, np.ndarray) else np.asarray(w)
    if not _is_supported_float(arr.dtype):
        kind = {"b": "boolean", "i": "integer", "u": "unsigned integer", "c": "complex",
                "O": "object", "U": "string", "S": "bytes"}.get(arr.dtype.kind, "unsupported")
        hint = ("; for complex data quantize the real and imaginary parts separately"
                if arr.dtype.kind == "c" else
                "; if these numbers are real weights, convert them first with w.astype(np.float32)")
        raise TypeError(f"{name} must hold floating-point weights ({SUPPORTED_DTYPES}), "
                        f"got {kind} dtype {arr.dtype}{hint}")
    if arr.ndim == 0:
        raise ValueError(f"{name} is a 0-d scalar; quantization needs at least one axis to group "
                         f"along: pass np.atleast_1d({name})")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}); there is nothing to quantize")
    return arr


def check_group_size(group_size: object, last_dim: int) -> int:
    if isinstance(group_size, bool) or not isinstance(group_size, numbers.Integral):
        raise TypeError(f"group_size must be a positive integer, got {group_size!r}")
    group_size = int(group_size)
    if group_size <= 0:
        raise ValueError(f"group_size must be a positive integer, got {group_size}")
    if last_dim % group_size:
        raise ValueError(
            f"group_size {group_size} does not divide the last axis ({last_dim}); groups run "
            f"along the last axis, so pick a divisor of {last_dim}: "
            f"gqlearn.choose_group_size({last_dim}, {group_size}) returns the nearest one that "
            f"fits")
    return group_size


def check_bits(bits: object) -> int:
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral) or not 2 <= bits <= 8:
        raise ValueError(f"bits must be an integer from 2 to 8, got {bits!r}")
    return int(bits)


def positive_int(name: str, value: object) -> int:
    """``value`` as an int if it is a positive integer (not a bool), else a ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def baseline_bits(baseline: object) -> int:
    """Bits per weight of a float format named as in :data:`BASELINE_BITS`."""
    try:
        return BASELINE_BITS[baseline]  # type: ignore[index]  # a wrong type is a KeyError too
    except (KeyError, TypeError):
        raise ValueError(f"unknown baseline {baseline!r}; use one of "
                         f"{sorted(BASELINE_BITS)}") from None


def check_rounding(rounding: object) -> str:
    if rounding not in ROUNDINGS:
        raise ValueError(f"unknown rounding {rounding!r}; use 'half_away' (round half away from "
                         f"zero, like C's roundf and Rust's f32::round) or 'half_even' (numpy's "
                         f"rint, torch.round)")
    return rounding


def nonfinite_error(w: np.ndarray, name: str = "w") -> ValueError:
    """Build the error for a tensor known to hold NaN or Inf, naming the first bad element."""
    with np.errstate(over="ignore"):
        flat_index = int(np.flatnonzero(~np.isfinite(w.reshape(-1).astype(np.float32)))[0])
    index = np.unravel_index(flat_index, w.shape)
    value = w.reshape(-1)[flat_index]
    if np.isfinite(value):  # finite in its own dtype (float64), out of float32's range
        return ValueError(f"{name} holds {value:g} at index {tuple(int(i) for i in index)}, which "
                          f"overflows float32 (largest {np.finfo(np.float32).max:g}); gqlearn "
                          f"computes in float32. Rescale the weights, or clip them explicitly")
    return ValueError(f"{name} contains NaN or Inf (first at index {tuple(int(i) for i in index)}: "
                      f"{value}); quantization needs finite weights. Find where they came from, or "
                      f"replace them explicitly, e.g. np.nan_to_num({name})")
