"""Chapter 02: one scale per group.

Everything the notebook ``02_group_scales.ipynb`` computes or draws:

* :func:`split_groups`, :func:`group_summary`, :func:`group_steps`: the seed's walk-through
  (split, max, scale, quantize, error), every number from :func:`gqlearn.quantize` and
  :func:`gqlearn.metrics.error_report`;
* :func:`seed_scales`, :func:`hand_vs_float32`, :func:`tie_anatomy`, :func:`hand_products`:
  why the seed's hand arithmetic (scales rounded to 3 digits) and float32 sometimes give
  different integers, and the seed's multiplications redone exactly;
* :func:`memory_table`, :func:`model_gigabytes`: bytes and bits per weight, from
  :class:`gqlearn.QuantizedTensor`;
* :func:`seed_loop_quantize`: **the slow reference**, the seed's Rust loop written plainly in
  Python, one weight at a time, to compare with the vectorized :func:`gqlearn.quantize`;
  :func:`fused_kernel_excerpt` shows the compiled (numba) kernel as it runs by default;
  :func:`time_quantizers` times them;
* :func:`plot_group_grids`, :func:`plot_relative_error`, :func:`show_group_size`,
  :func:`group_size_explorer`: pictures and the widget with its static fallback;
* ``check_*``: the exercise checkers.
"""

from __future__ import annotations

import ast
import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from .. import core
from .._parallel import DEFAULT_CHUNK_ELEMENTS, default_threads
from ..exercises import Feedback, close_enough, right, wrong
from ..metrics import error_report
from .display import Table
from .single_scale import QMAX, _draw_grid, quantize_with_scales, round_half_away

if TYPE_CHECKING:  # pragma: no cover
    import ipywidgets
    from matplotlib.figure import Figure

__all__ = ["EXPLORER", "divisors", "split_groups", "group_summary", "group_steps",
           "seed_scales", "hand_vs_float32", "tie_anatomy", "memory_table", "model_gigabytes",
           "hand_products", "SeedLoopResult", "seed_loop_quantize", "reference_source",
           "fused_kernel_source", "fused_kernel_excerpt", "time_quantizers",
           "plot_group_grids", "plot_relative_error", "show_group_size", "group_size_explorer",
           "EXERCISE_GROUP_WEIGHTS", "EXERCISE_BYTES_SHAPE", "EXERCISE_BYTES_GROUP_SIZE",
           "EXERCISE_LOSSLESS_WEIGHTS", "check_group_scales", "check_total_bytes",
           "check_lossless_group_size"]

# The seed's model_explorer.rs example (input only).
EXPLORER = (2.0, -1.5, 0.8, -0.3, 0.01, -0.02, 0.005, -0.001)


def _flat(w: Any) -> np.ndarray:
    return np.asarray(w, dtype=np.float32).ravel()


def divisors(n: int) -> list[int]:
    """The group sizes that fit a tensor of ``n`` weights: every divisor of ``n``.

    >>> divisors(16)
    [1, 2, 4, 8, 16]
    """
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    return [d for d in range(1, n + 1) if n % d == 0]


# --------------------------------------------------------------------------------------------
# The walk-through
# --------------------------------------------------------------------------------------------

def _quantize(w: np.ndarray, group_size: int, scales: Any = None) -> core.QuantizedTensor:
    if scales is None:
        return core.quantize(w, group_size)
    return quantize_with_scales(w, scales, group_size)


def split_groups(w: Any, group_size: int) -> Table:
    """Step 1: which weights share a scale (``num_groups = len(w) // group_size``).

    >>> split_groups([1.0, 2.0, 3.0, 4.0], 2).column("weights")
    [[1.0, 2.0], [3.0, 4.0]]
    """
    w = _flat(w)
    groups = w.reshape(-1, core.quantize(w, group_size).group_size)
    rows = tuple((g, f"{g * group_size}-{(g + 1) * group_size - 1}", [float(x) for x in grp])
                 for g, grp in enumerate(groups))
    return Table(("group", "indices", "weights"), rows,
                 (f"{w.size} weights / group size {group_size} = {len(groups)} groups",))


def group_summary(w: Any, group_size: int, scales: Any = None) -> Table:
    """One row per group: max, scale, quantized values, max error and zeroed weights.

    Parameters
    ----------
    w : array_like
        Weights (flattened).
    group_size : int
        Must divide ``w.size``.
    scales : array_like, optional
        Hand-picked scales, one per group (e.g. :func:`seed_scales`); default absmax, through
        :func:`gqlearn.quantize`.

    Returns
    -------
    Table
        Columns ``group``, ``max |w|``, ``scale``, ``q``, ``max error`` (from
        :func:`gqlearn.metrics.error_report`, the seed's ``group_error``), ``zeroed``.
    """
    w = _flat(w)
    qt = _quantize(w, group_size, scales)
    rep = error_report(w, qt)
    groups = w.reshape(-1, qt.group_size)
    values = qt.values.reshape(-1, qt.group_size)
    rows = tuple((g, float(np.abs(grp).max()), float(s), q, float(e),
                  int(((q == 0) & (grp != 0)).sum()))
                 for g, (grp, s, q, e) in enumerate(zip(groups, qt.scales.ravel(), values,
                                                        rep.group_max_error.ravel())))
    return Table(("group", "max |w|", "scale", "q", "max error", "zeroed"), rows,
                 formats={"scale": ".5g", "max error": ".4g"})


def group_steps(w: Any, group_size: int, scales: Any = None) -> Table:
    """Steps 2 to 4 for every weight: its group's scale, ``w / scale``, ``q``, recovery, error.

    Returns
    -------
    Table
        Columns ``group``, ``weight``, ``scale``, ``weight / scale``, ``q``, ``recovered``,
        ``error``.

    Examples
    --------
    >>> group_steps(EXPLORER, 4).column("q")
    [127, -95, 51, -19, 63, -127, 32, -6]
    """
    w = _flat(w)
    qt = _quantize(w, group_size, scales)
    gs = qt.group_size
    scale = np.repeat(qt.scales.ravel(), gs)
    quot = (w.reshape(-1, gs) / qt.scales.reshape(-1, 1)).ravel()
    rec = core.dequantize(qt).ravel()
    rows = tuple((i // gs, float(x), float(s), float(y), int(q), float(r), float(abs(x - r)))
                 for i, (x, s, y, q, r) in enumerate(zip(w, scale, quot, qt.values.ravel(), rec)))
    return Table(("group", "weight", "scale", "weight / scale", "q", "recovered", "error"), rows,
                 formats={"scale": ".5g", "weight / scale": ".8g", "error": ".4g"})


def seed_scales(w: Any, group_size: int, sig: int = 3) -> np.ndarray:
    """The scales as the seed texts write them: ``max / 127`` rounded to ``sig`` digits.

    The texts write 0.0157 for 2/127 and 0.000157 for 0.02/127, then divide by the rounded
    number.  Quantizing with these (:func:`group_summary` with ``scales=``) reproduces their
    integers.

    >>> [f"{s:.3g}" for s in seed_scales(EXPLORER, 4)]
    ['0.0157', '0.000157']
    """
    w = _flat(w)
    amax = np.abs(w.reshape(-1, core.quantize(w, group_size).group_size)).max(axis=1)
    exact = amax.astype(np.float64) / QMAX
    return np.array([float(f"{s:.{sig}g}") for s in exact], dtype=np.float32)


def hand_vs_float32(w: Any, group_size: int, sig: int = 3) -> Table:
    """Per weight: the integer from the seed's rounded scale next to the float32 one.

    Returns
    -------
    Table
        Columns ``group``, ``weight``, ``hand scale``, ``w / hand scale``, ``q (hand)``,
        ``float32 scale``, ``w / float32 scale``, ``q (float32)``, ``same``.
    """
    w = _flat(w)
    hand = group_steps(w, group_size, seed_scales(w, group_size, sig))
    exact = group_steps(w, group_size)
    rows = tuple((g, x, hs, hy, hq, fs, fy, fq, hq == fq)
                 for (g, x, hs, hy, hq, _, _), (_, _, fs, fy, fq, _, _)
                 in zip(hand.rows, exact.rows))
    return Table(("group", "weight", "hand scale", "w / hand scale", "q (hand)",
                  "float32 scale", "w / float32 scale", "q (float32)", "same"), rows,
                 formats={"hand scale": ".3g", "w / hand scale": ".4f", "float32 scale": ".8g",
                          "w / float32 scale": ".8g"})


def _dec(x: float, digits: int = 12) -> str:
    return format(Decimal(x), f".{digits}g")


def tie_anatomy(x: float, group_max: float) -> Table:
    """Why ``x`` in a group whose max is ``group_max`` rounds the way it does in float32.

    When ``x / group_max`` is exactly 1/2 (0.01 and 0.02; 0.001 and 0.002) the exact quotient
    ``x * 127 / group_max`` is the tie 63.5.  In float32, ``x`` and ``group_max`` are both
    rounded (by the same relative amount, since ``group_max = 2 x``), but the scale
    ``group_max / 127`` is rounded once more, up or down; that last rounding pushes the
    quotient just below or just above 63.5.

    Returns
    -------
    Table
        Two columns, ``quantity`` and ``value`` (values as exact decimal strings).
    """
    xf, mf = np.float32(x), np.float32(group_max)
    scale = mf / np.float32(QMAX)
    exact_scale = Fraction(float(mf)) / QMAX
    quot = xf / scale
    q32 = int(round_half_away(np.array([quot]))[0])
    q64 = float(x) / (float(group_max) / QMAX)
    direction = "up" if Fraction(float(scale)) > exact_scale else "down"
    rows = (
        ("x * 127 / max with the decimal inputs", _dec(float(Fraction(str(x)) * QMAX
                                                           / Fraction(str(group_max))))),
        ("x stored as float32", _dec(float(xf), 17)),
        ("max stored as float32", _dec(float(mf), 17)),
        ("scale = max / 127, exact", _dec(float(exact_scale), 17)),
        ("scale rounded to float32", _dec(float(scale), 17)),
        ("float32 scale - exact scale", f"{float(Fraction(float(scale)) - exact_scale):+.3g}"),
        ("float32 rounding of the scale went", direction),
        ("x / scale in float32", _dec(float(quot), 9)),
        ("q in float32 (gqlearn)", str(q32)),
        ("x / (max / 127) in float64", _dec(q64, 17)),
        ("q in float64", str(int(math.copysign(math.floor(abs(q64) + 0.5), q64)))),
    )
    return Table(("quantity", "value"), rows, (f"x = {x:g}, group max = {group_max:g}",))


def hand_products(claims: Iterable[tuple[str, str, str]]) -> Table:
    """The texts' hand multiplications ``q × scale = result``, redone exactly.

    Parameters
    ----------
    claims : iterable of (q, scale, result)
        As the text writes them, as strings (so that the decimals are exact), e.g.
        ``("127", "0.0827", "10.51")``.

    Returns
    -------
    Table
        Columns ``q``, ``scale``, ``q × scale`` (exact decimal product), ``text``, ``agrees``:
        whether the exact product, rounded half up to the text's number of decimals, is the
        text's result.

    Examples
    --------
    >>> hand_products([("127", "0.0827", "10.51"), ("-99", "0.0827", "-8.19")]).column("agrees")
    [False, True]
    """
    from decimal import ROUND_HALF_UP

    rows = []
    for q, scale, result in claims:
        product = Decimal(q) * Decimal(scale)
        shown = Decimal(result)
        agrees = product.quantize(shown, rounding=ROUND_HALF_UP) == shown
        rows.append((q, scale, str(product.normalize()), result, agrees))
    return Table(("q", "scale", "q × scale", "text", "agrees"), tuple(rows))


# --------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------

def _accounting(shape: tuple[int, ...], group_size: int) -> core.QuantizedTensor:
    """A QuantizedTensor of the given shape, for its byte counts (values 0, scales 1)."""
    values = np.broadcast_to(np.int8(0), shape)
    scales = np.broadcast_to(np.float32(1), (*shape[:-1], shape[-1] // group_size))
    return core.QuantizedTensor(values, scales, group_size)


def memory_table(shape: int | tuple[int, ...], group_sizes: Iterable[int]) -> Table:
    """Storage of an int8 tensor of ``shape`` with one float32 scale per group.

    Every number comes from :class:`gqlearn.QuantizedTensor`'s accounting (``n_groups``,
    ``values_nbytes``, ``scales_nbytes``, ``nbytes``, ``bits_per_weight``,
    ``compression_ratio``).  ``compression (float32/int8)`` is float32 bytes over int8 bytes
    (values and scales): below 1 means the int8 form is larger.

    >>> memory_table(8, [4]).column("total bytes")
    [16]
    """
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    rows = []
    for gs in group_sizes:
        qt = _accounting(shape, gs)
        rows.append((gs, qt.n_groups, qt.values_nbytes, qt.scales_nbytes, qt.nbytes,
                     qt.bits_per_weight, qt.compression_ratio("float32")))
    n = int(np.prod(shape))
    return Table(("group size", "groups (scales)", "values bytes", "scales bytes",
                  "total bytes", "bits/weight", "compression (float32/int8)"), tuple(rows),
                 (f"{n} weights; float32 needs {4 * n} bytes",),
                 formats={"bits/weight": ".6g", "compression (float32/int8)": ".4g"})


def model_gigabytes(n_params: float, group_size: int) -> tuple[float, float]:
    """(float32 GB, int8-with-scales GB) for a model of ``n_params`` weights (1 GB = 1e9 B).

    Uses ``bits_per_weight`` of a :class:`gqlearn.QuantizedTensor` with this group size.
    Assumes every weight is quantized and a float32 baseline; notebook 03 §7
    (:func:`gqlearn.lessons.error_analysis.claim_280_to_70`) does the full check with real
    parameter counts.

    >>> model_gigabytes(70e9, 256)
    (280.0, 71.09375)
    """
    bpw = _accounting((group_size,), group_size).bits_per_weight
    return (n_params * 4 / 1e9, n_params * bpw / 8 / 1e9)


# --------------------------------------------------------------------------------------------
# The seed's loop, in plain Python: THE SLOW REFERENCE
# --------------------------------------------------------------------------------------------

class SeedLoopResult(NamedTuple):
    """What :func:`seed_loop_quantize` returns (flat arrays, in group order)."""

    values: np.ndarray  # int8, one per weight
    scales: np.ndarray  # float32, one per group
    group_errors: np.ndarray  # float32, max |w - q * scale| per group


def _f32_round(y: np.float32) -> float:
    """Rust's ``f32::round``: half away from zero (exact: |y| + 0.5 is exact in float64)."""
    y = float(y)
    return math.copysign(math.floor(abs(y) + 0.5), y)


def seed_loop_quantize(weights: Any, group_size: int) -> SeedLoopResult:
    """SLOW REFERENCE: the seed's ``model_explorer.rs`` loop, one weight at a time in Python.

    Written like the Rust it mirrors, for reading and for checking :func:`gqlearn.quantize`
    against; it is thousands of times slower.  Arithmetic is float32 (``np.float32`` scalars),
    as in the Rust.  One corner differs from gqlearn: a group whose max is so tiny (below
    ~1.5e-43) that ``max / 127`` underflows to 0 divides by zero here, as it would in the Rust;
    gqlearn gives it scale 1.

    Parameters
    ----------
    weights : array_like
        Flattened; its length must be a multiple of ``group_size``.
    group_size : int

    Returns
    -------
    SeedLoopResult

    Examples
    --------
    >>> seed_loop_quantize(EXPLORER, 4).values
    array([ 127,  -95,   51,  -19,   63, -127,   32,   -6], dtype=int8)
    """
    weights = _flat(weights)
    if group_size < 1 or len(weights) % group_size:
        raise ValueError(f"group_size {group_size} does not divide {len(weights)} weights")
    num_groups = len(weights) // group_size
    int8_data: list[int] = []
    scales: list[np.float32] = []
    errors: list[np.float32] = []
    for g in range(num_groups):  # Rust: (0..num_groups).into_par_iter()
        group = weights[g * group_size:(g + 1) * group_size]

        # let group_max = group.iter().map(|&x| x.abs()).fold(0.0f32, f32::max);
        group_max = np.float32(0.0)
        for x in group:
            group_max = max(group_max, abs(x))

        # let scale = if group_max > 0.0 { group_max / 127.0 } else { 1.0 };
        scale = group_max / np.float32(127.0) if group_max > 0.0 else np.float32(1.0)

        # for &weight in group { (weight / scale).round().clamp(-127.0, 127.0) as i8 }
        group_int8 = []
        for weight in group:
            quantized = min(max(_f32_round(weight / scale), -127.0), 127.0)
            group_int8.append(int(quantized))

        # group_error = max over the group of |quantized * scale - original|
        group_error = np.float32(0.0)
        for quantized, original in zip(group_int8, group):
            dequantized = np.float32(quantized) * scale
            error = abs(dequantized - original)
            group_error = max(group_error, error)

        int8_data.extend(group_int8)
        scales.append(scale)
        errors.append(group_error)
    return SeedLoopResult(np.array(int8_data, dtype=np.int8), np.array(scales, np.float32),
                          np.array(errors, np.float32))


def reference_source() -> str:
    """The code of :func:`seed_loop_quantize` without its docstring, for printing beside the seed.

    >>> print(reference_source().splitlines()[0])
    def seed_loop_quantize(weights: Any, group_size: int) -> SeedLoopResult:
    """
    import inspect

    src = inspect.getsource(seed_loop_quantize)
    start = src.index('"""')
    end = src.index('"""', start + 3) + 3
    return src[:start].rstrip() + "\n" + src[end:].lstrip("\n")


def _best_time(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def fused_kernel_source() -> str:
    """Source of gqlearn's fused numba kernel (``gqlearn._fused.quantize_groups``), docstring
    removed: the seeds' parallel loop over groups, compiled.  Readable without numba installed."""
    from pathlib import Path

    path = Path(core.__file__).with_name("_fused.py")
    src = path.read_text(encoding="utf-8")
    start = src.index("@numba.njit(parallel=True, cache=True)\ndef quantize_groups")
    body = src[start:src.index("\n\n\n", start)]
    doc_start = body.index('"""')
    doc_end = body.index('"""', doc_start + 3) + 3
    return body[:doc_start].rstrip() + "\n" + body[doc_end:].lstrip("\n")


# What fused_kernel_excerpt fixes: the call's defaults, and what holds for ordinary weights.
_KERNEL_OPTIONS = {"half_even": False, "reciprocal": False}
_KERNEL_ASSUMED = {"clip": False}  # no subnormal scale: groups whose max |w| is not tiny


class _Specialize(ast.NodeTransformer):
    """Fold names with known values into a function and drop the branches they switch off.

    ``known`` names are replaced by constants where read; assignments to ``assumed`` names
    are dropped, and so are parameters with known values.  Constant ``not``, ``and``, ``or``,
    ``x if c else y`` and ``if`` are folded; a name assigned a constant bool becomes known.
    """

    def __init__(self, known: dict[str, Any], assumed: Iterable[str] = ()) -> None:
        self.known = dict(known)
        self.assumed = set(assumed)

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if isinstance(node.ctx, ast.Load) and node.id in self.known:
            return ast.copy_location(ast.Constant(self.known[node.id]), node)
        return node

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        self.generic_visit(node)
        if isinstance(node.op, ast.Not) and isinstance(node.operand, ast.Constant):
            return ast.copy_location(ast.Constant(not node.operand.value), node)
        return node

    def visit_BoolOp(self, node: ast.BoolOp) -> ast.AST:
        self.generic_visit(node)
        decides = isinstance(node.op, ast.Or)  # a constant equal to this decides the result
        rest = []
        for v in node.values:
            if isinstance(v, ast.Constant):
                if bool(v.value) == decides:
                    return ast.copy_location(ast.Constant(decides), node)
                continue
            rest.append(v)
        if not rest:
            return ast.copy_location(ast.Constant(not decides), node)
        if len(rest) == 1:
            return rest[0]
        node.values = rest
        return node

    def visit_IfExp(self, node: ast.IfExp) -> ast.AST:
        self.generic_visit(node)
        if isinstance(node.test, ast.Constant):
            return node.body if node.test.value else node.orelse
        return node

    def visit_Assign(self, node: ast.Assign) -> ast.AST | None:
        self.generic_visit(node)
        if len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name in self.assumed:
                return None
            if isinstance(node.value, ast.Constant) and isinstance(node.value.value, bool):
                self.known[name] = node.value.value
                return None
        return node

    def visit_If(self, node: ast.If) -> ast.AST | list[ast.stmt] | None:
        self.generic_visit(node)
        if isinstance(node.test, ast.Constant):
            return (node.body if node.test.value else node.orelse) or None
        if not node.body and not node.orelse:
            return None  # only a test without side effects is left
        if not node.body:
            node.body = [ast.Pass()]
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            node.body = body[1:]  # the docstring
        self.generic_visit(node)
        node.args.args = [a for a in node.args.args if a.arg not in self.known]
        return node


def _names_read(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node)
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _drop_dead_assignments(func: ast.FunctionDef) -> None:
    """Remove ``name = ...`` statements whose name is never read."""
    read = _names_read(func)
    for node in ast.walk(func):
        for attr in ("body", "orelse"):
            stmts = getattr(node, attr, None)
            if isinstance(stmts, list):
                setattr(node, attr, [
                    st for st in stmts
                    if not (isinstance(st, ast.Assign) and len(st.targets) == 1
                            and isinstance(st.targets[0], ast.Name)
                            and st.targets[0].id not in read)])


def _calls_to(func: ast.FunctionDef, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(func) if isinstance(n, ast.Call)
            and isinstance(n.func, ast.Name) and n.func.id == name]


def _specialize_helper(kernel: ast.FunctionDef, helper: ast.FunctionDef) -> None:
    """Bind the helper's parameters that every call passes as the same constant, then drop the
    parameters it no longer reads, at the definition and at the calls."""
    calls = _calls_to(kernel, helper.name)
    params = [a.arg for a in helper.args.args]
    known = {}
    for i, p in enumerate(params):
        values = {repr(c.args[i].value) if isinstance(c.args[i], ast.Constant) else None
                  for c in calls}
        if calls and len(values) == 1 and None not in values:
            known[p] = calls[0].args[i].value
    _Specialize(known).visit(helper)
    _drop_dead_assignments(helper)
    keep = [p in _names_read(helper) for p in params]
    helper.args.args = [a for a, k in zip(helper.args.args, keep) if k]
    for c in calls:
        c.args = [a for a, k in zip(c.args, keep) if k]


def fused_kernel_excerpt(kernel: str = "quantize_groups") -> str:
    """The fused numba kernel as it runs for :func:`gqlearn.quantize`'s defaults: a readable
    excerpt, computed from the source of ``gqlearn/_fused.py``.

    The kernel is specialized: its options are fixed to the defaults (``half_even=False``:
    round half away from zero; ``reciprocal=False``: divide by the scale) and the scale is
    assumed normal (not subnormal, so no clip).  Branches these switch off, variables and
    parameters left unused, docstrings and comments are removed; helpers the kernel calls
    (``_round``) are specialized the same way and printed after it.  What remains is the
    seed's loop over groups, with ``prange`` for ``into_par_iter``.

    Parameters
    ----------
    kernel : str
        Name of the kernel function in ``gqlearn/_fused.py``.

    Returns
    -------
    str
        Python source: a comment line naming the specialization, then the functions.

    Examples
    --------
    >>> src = fused_kernel_excerpt()
    >>> "for g in prange(n_groups):" in src, "half_even" in src.split("\\n", 1)[1]
    (True, False)
    """
    from pathlib import Path

    src = Path(core.__file__).with_name("_fused.py").read_text(encoding="utf-8")
    funcs = {f.name: f for f in ast.parse(src).body if isinstance(f, ast.FunctionDef)}
    main = funcs[kernel]
    _Specialize({**_KERNEL_OPTIONS, **_KERNEL_ASSUMED}, _KERNEL_ASSUMED).visit(main)
    _drop_dead_assignments(main)
    helpers = [f for name, f in funcs.items() if name != kernel and _calls_to(main, name)]
    for helper in helpers:
        _specialize_helper(main, helper)
    code = "\n\n".join(ast.unparse(ast.fix_missing_locations(f)) for f in [main, *helpers])
    # bit masks read better in hex
    code = re.sub(r"np\.uint32\((\d{6,})\)", lambda m: f"np.uint32(0x{int(m[1]):08X})", code)
    options = ", ".join(f"{k}={v}" for k, v in _KERNEL_OPTIONS.items())
    return f"# gqlearn._fused.{kernel} with {options} (the defaults), for normal scales\n" + code


def time_quantizers(small_shape: tuple[int, int] = (64, 256),
                    big_shape: tuple[int, int] = (4096, 4096), group_size: int = 256,
                    seed: int = 0) -> Table:
    """Time :func:`seed_loop_quantize` against :func:`gqlearn.quantize` with each backend
    available (numpy, and the fused numba kernel when numba is installed), best of a few runs.

    The loop runs only on the small tensor; its time on the big one is extrapolated linearly
    (it does the same work per weight).

    Returns
    -------
    Table
        Columns ``tensor``, ``weights``, ``Python loop (s)``, one column per backend, and
        ``speed-up (fastest)``: the loop's time over the fastest backend's on that tensor.
    """
    rng = np.random.default_rng(seed)
    small = rng.standard_normal(small_shape, dtype=np.float32)
    big = rng.standard_normal(big_shape, dtype=np.float32)
    backends = core.available_backends()
    for b in backends:  # first call: imports and JIT compilation, not measured
        core.quantize(small, group_size, backend=b)
    t_loop = _best_time(lambda: seed_loop_quantize(small, group_size), repeat=1)
    t_loop_big = t_loop * big.size / small.size
    rows = []
    for label, w, loop, loop_text, repeat in (
            (f"{small_shape[0]}x{small_shape[1]}", small, t_loop, f"{t_loop:.3g}", 20),
            (f"{big_shape[0]}x{big_shape[1]}", big, t_loop_big, f"{t_loop_big:.3g} (estimated)",
             5)):
        times = [_best_time(lambda: core.quantize(w, group_size, backend=b), repeat=repeat)
                 for b in backends]
        rows.append((label, w.size, loop_text, *(f"{t:.3g}" for t in times),
                     f"{loop / min(times):,.0f}x"))
    return Table(("tensor", "weights", "Python loop (s)", *(f"{b} (s)" for b in backends),
                  "speed-up (fastest)"), tuple(rows),
                 (f"int8 g={group_size}; gqlearn.quantize with up to {default_threads()} "
                  f"threads; numpy runs a tensor of at most {DEFAULT_CHUNK_ELEMENTS:,} weights "
                  "(one block) on the calling thread",))


# --------------------------------------------------------------------------------------------
# Pictures and the widget
# --------------------------------------------------------------------------------------------

def plot_group_grids(w: Any, group_size: int) -> Figure:
    """Each group on its own grid: one panel per group (at most 4 groups).

    Each panel spans its group's ``±127 * scale``, draws the group's levels and joins every
    weight to its recovered value.
    """
    import matplotlib.pyplot as plt

    w = _flat(w)
    qt = core.quantize(w, group_size)
    n = qt.n_groups
    if n > 4:
        raise ValueError(f"{n} groups: plot_group_grids draws at most 4; use a larger group size")
    fig, axes = plt.subplots(n, 1, figsize=(9, 2.4 * n), layout="constrained", squeeze=False)
    groups = w.reshape(n, group_size)
    values = qt.values.reshape(n, group_size)
    for g, ax in enumerate(axes[:, 0]):
        s = float(qt.scales[g])
        edge = 1.05 * QMAX * s
        _draw_grid(ax, groups[g], values[g], s, -edge, edge,
                   f"group {g}: max |w| = {float(np.abs(groups[g]).max()):.4g}, "
                   f"scale = {s:.4g}")
    fig.suptitle(f"group size {group_size}: every group gets its own grid")
    return fig


def plot_relative_error(w: Any, group_sizes: Sequence[int]) -> Figure:
    """Bars of each weight's relative error ``|w - w'| / |w|`` (in %) for several group sizes."""
    import matplotlib.pyplot as plt

    w = _flat(w)
    fig, ax = plt.subplots(figsize=(9, 3.6), layout="constrained")
    width = 0.8 / len(group_sizes)
    idx = np.arange(w.size)
    for k, gs in enumerate(group_sizes):
        rec = core.dequantize(core.quantize(w, gs))
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(w != 0, np.abs(w - rec) / np.abs(w), 0.0)
        label = f"int8 g={gs}" + (" (per-tensor: one scale)" if gs == w.size else "")
        ax.bar(idx + (k - (len(group_sizes) - 1) / 2) * width, 100 * rel, width, label=label)
    ax.set_xticks(idx, [f"{x:.3g}" for x in w], rotation=45, fontsize=8)
    ax.set_xlabel("weight")
    ax.set_ylabel("relative error |w - w'| / |w| (%)")
    ax.set_title("Per-weight error: 100% means the weight became 0")
    ax.legend(fontsize=8)
    return fig


def show_group_size(w: Any, group_size: int) -> None:
    """Print a headline and :func:`group_summary`, and plot relative errors (the widget's view).

    The headline gives the largest absolute error, set by the large weights, and the largest
    relative error ``|w - w'| / |w|`` of a nonzero weight (100% when a weight became 0), which
    is what a group size changes for the small weights.
    """
    import matplotlib.pyplot as plt
    from IPython.display import display

    w = _flat(w)
    qt = core.quantize(w, group_size)
    rep = error_report(w, qt)
    rec = core.dequantize(qt)
    nz = w != 0
    worst_rel = float((np.abs(w - rec)[nz] / np.abs(w[nz])).max()) if nz.any() else 0.0
    print(f"int8 g={group_size}: {qt.n_groups} scale{'s' * (qt.n_groups != 1)}, "
          f"{qt.nbytes} bytes, "
          f"{qt.bits_per_weight:g} bits/weight; {rep.n_zeroed} weights became 0; "
          f"max error {rep.max_abs_error:.4g}; worst relative error {100 * worst_rel:.3g}%")
    print(group_summary(w, group_size))
    sizes = [group_size] if group_size == w.size else [w.size, group_size]
    fig = plot_relative_error(w, sizes)
    display(fig)
    plt.close(fig)


def group_size_explorer(w: Any) -> ipywidgets.Widget:
    """A group-size picker (the divisors of ``w.size``) showing :func:`show_group_size`."""
    import ipywidgets as widgets

    w = _flat(w)
    sizes = divisors(w.size)
    pick = widgets.Dropdown(options=sizes, value=sizes[-1], description="group size")
    return widgets.interactive(lambda group_size: show_group_size(w, group_size),
                               group_size=pick)


# --------------------------------------------------------------------------------------------
# Exercises
# --------------------------------------------------------------------------------------------

EXERCISE_GROUP_WEIGHTS = (0.45, -0.9, 0.3, -0.09, 0.002, -0.004, 0.0016, 0.0)
EXERCISE_BYTES_SHAPE = (4096, 4096)
EXERCISE_BYTES_GROUP_SIZE = 128
EXERCISE_LOSSLESS_WEIGHTS = (3.0, -2.5, 2.0, -1.0, 0.004, -0.003, 0.002, -0.001,
                             0.5, -0.4, 0.3, -0.2, 0.0005, -0.0004, 0.0003, -0.0002)


def check_group_scales(answer: Any) -> Feedback:
    """Exercise 1: the two scales of ``EXERCISE_GROUP_WEIGHTS`` with group size 4."""
    w = np.array(EXERCISE_GROUP_WEIGHTS, np.float32)
    expected = [float(s) for s in core.quantize(w, 4).scales]
    try:
        given = [float(a) for a in answer]
    except (TypeError, ValueError):
        return wrong("answer with a list of two numbers, one scale per group.")
    if len(given) != 2:
        whole = float(np.abs(w).max()) / QMAX
        if len(given) == 1 and close_enough(given[0], whole):
            return wrong("that is the one scale for the whole tensor; group size 4 splits "
                         "8 weights into 2 groups, each with its own scale.")
        return wrong(f"8 weights in groups of 4 make 2 groups, so 2 scales; you gave "
                     f"{len(given)}.")
    if all(close_enough(a, e) for a, e in zip(given, expected)):
        return right(f"group 0: {float(np.abs(w[:4]).max()):g} / {QMAX} = {expected[0]:.5g}; "
                     f"group 1: {float(np.abs(w[4:]).max()):g} / {QMAX} = {expected[1]:.5g}.")
    if all(close_enough(a, e) for a, e in zip(given, expected[::-1])):
        return wrong("right numbers, wrong order: group 0 holds the first four weights.")
    for g, (a, grp) in enumerate(zip(given, w.reshape(2, 4))):
        if not close_enough(a, expected[g]):
            if close_enough(a, float(np.abs(grp).max()) / 128):
                return wrong(f"group {g}: divide by {QMAX}, not 128.")
            if close_enough(a, float(np.abs(w).max()) / QMAX):
                return wrong(f"group {g}: that is the whole tensor's scale; use the max of "
                             "this group only.")
            if close_enough(a, float(grp.max()) / QMAX):
                return wrong(f"group {g}: use the largest magnitude |w|, not the largest "
                             "signed value.")
            return wrong(f"group {g} is off: take max |w| over its four weights, divide by "
                         f"{QMAX}.")
    return wrong("check each group's scale: max |w| of the group / 127.")  # pragma: no cover


def check_total_bytes(answer: Any) -> Feedback:
    """Exercise 2: bytes of a ``EXERCISE_BYTES_SHAPE`` int8 matrix with group size 128."""
    shape, gs = EXERCISE_BYTES_SHAPE, EXERCISE_BYTES_GROUP_SIZE
    qt = _accounting(shape, gs)
    if close_enough(answer, qt.nbytes, rel=0):
        return right(f"{qt.size:,} int8 values ({qt.values_nbytes:,} bytes) + "
                     f"{qt.n_groups:,} float32 scales ({qt.scales_nbytes:,} bytes) = "
                     f"{qt.nbytes:,} bytes, {qt.bits_per_weight:g} bits per weight.")
    hints = [(qt.values_nbytes, "that counts the int8 values only; add 4 bytes per scale"),
             (4 * qt.size, "that is the float32 size; int8 takes 1 byte per weight"),
             (qt.values_nbytes + 2 * qt.n_groups, "the scales are float32: 4 bytes each"),
             (qt.values_nbytes + qt.n_groups, "the scales are float32: 4 bytes each"),
             (8 * qt.nbytes, "that is in bits; the question asks for bytes"),
             (qt.values_nbytes + 4 * shape[0], "that is one scale per row; with group size "
                                               f"{gs} each row has {shape[1] // gs} scales")]
    for value, hint in hints:
        if close_enough(answer, value, rel=0):
            return wrong(hint + ".")
    return wrong(f"count 1 byte per weight plus 4 bytes per group of {gs}.")


def check_lossless_group_size(answer: Any) -> Feedback:
    """Exercise 3: the largest group size for ``EXERCISE_LOSSLESS_WEIGHTS`` that zeroes nothing."""
    w = np.array(EXERCISE_LOSSLESS_WEIGHTS, np.float32)
    zeroed = {gs: error_report(w, core.quantize(w, gs)).n_zeroed for gs in divisors(w.size)}
    best = max(gs for gs, n in zeroed.items() if n == 0)
    if isinstance(answer, (float, np.floating)) and not float(answer).is_integer():
        return wrong("a group size is a whole number.")
    try:
        gs = int(answer)
    except (TypeError, ValueError):
        return wrong("answer with a group size (an integer).")
    if gs == best:
        nxt = [d for d in zeroed if d > gs]
        more = (f"; group size {nxt[0]} would zero {zeroed[nxt[0]]} weights" if nxt else "")
        return right(f"group size {gs} keeps every weight with {w.size // gs} scales" + more
                     + ".")
    if gs not in zeroed:
        return wrong(f"{gs} does not divide {w.size}; try one of {divisors(w.size)}.")
    if zeroed[gs]:
        lost = np.flatnonzero((core.quantize(w, gs).values == 0) & (w != 0)).tolist()
        return wrong(f"with group size {gs}, {zeroed[gs]} weights become 0 (indices {lost}).")
    return wrong(f"group size {gs} keeps every weight, but a larger one does too, with fewer "
                 "scales.")
