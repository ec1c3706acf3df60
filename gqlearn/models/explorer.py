"""The model explorer: quantize every tensor of a checkpoint and report what it costs.

This is the reference Rust ``model_explorer`` grown up.  For each tensor of a safetensors checkpoint
(default: all-MiniLM-L6-v2) it reports the tensor's role, the group size actually used (a
requested size that does not divide the tensor's last axis backs off, see
:func:`gqlearn.choose_group_size`), the max and mean absolute error, the SQNR, the fraction of
nonzero weights that became zero, and the bytes before and after; then totals.  Norms, biases
and integer buffers are kept as they are (see :mod:`gqlearn.roles`).

Groups run along each tensor's last axis, which for the ``(out_features, in_features)``
weights of BERT and LLaMA is the input dimension.  ``group_size="row"`` gives one scale per
output channel, ``group_size="tensor"`` a single scale for the whole tensor.

:func:`save_quantized` writes the result as safetensors in the layout of
:mod:`gqlearn.io.saved`, whose :func:`~gqlearn.io.saved.load_quantized` reads it back;
dequantizing gives bit for bit the same float32 tensors.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import textwrap
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .. import __version__
from ..core import QuantizedTensor, Rounding, dequantize, quantize
from ..group_size import GroupSize, Policy, parse_group_size, resolve_group_size
from ..io.errors import ModelFileError
from ..io.fetch import MODELS, fetch_model
from ..io.gguf import dequantize_tensor, open_gguf
from ..io.safetensors import NUMPY_DTYPES, Checkpoint, open_checkpoint
from ..io.saved import FORMATS, SavedModelWriter, TensorEntry, natural_key
from ..metrics import error_report
from ..roles import ROLES, classify, keep_reason, layer_index

__all__ = ["TensorResult", "ExploreReport", "explore", "quantize_tensor", "fake_quantize",
           "save_quantized"]

ModelLike = str | os.PathLike | Checkpoint | Mapping[str, np.ndarray] | None


def quantize_tensor(w: np.ndarray, group_size: GroupSize, *, bits: int = 8,
                    rounding: Rounding = "half_away", policy: Policy = "pow2",
                    threads: int | None = None) -> QuantizedTensor:
    """Quantize one tensor along its last axis, backing off the group size if needed.

    With ``group_size="tensor"`` the result is a ``QuantizedTensor`` of shape ``(1, w.size)``
    with a single scale; reshape its dequantized values to ``w.shape``.

    >>> w = np.arange(1, 13, dtype=np.float32).reshape(2, 6)
    >>> quantize_tensor(w, 4).group_size, quantize_tensor(w, "tensor").scales.shape
    (2, (1, 1))
    """
    w = np.asarray(w)
    used = resolve_group_size(w.shape, group_size, policy)
    if parse_group_size(group_size) == "tensor":
        w = w.reshape(1, -1)
    return quantize(w, used, bits=bits, rounding=rounding, threads=threads)


@dataclass(frozen=True)
class TensorResult:
    """One row of the explorer's table.

    Errors are absolute, in the tensor's units; ``sqnr_db`` is ``inf`` for an exact
    reconstruction (:attr:`lossless`).  For kept tensors the error fields are ``None`` and
    ``kept_because`` says why (``"norm"``, ``"bias"``, ``"integer buffer"``, ``"role not
    selected"``, ``"1-D"``).  ``dtype`` is what the explorer quantized (GGUF tensors are
    dequantized to float32 first); ``stored_type`` is how the source file stores the tensor
    (``"F32"``, ``"BF16"``, or a GGUF block format such as ``"Q4_1"``, ``"Q8_0"``) and
    ``stored_bytes`` what it takes there.
    """

    name: str
    role: str
    shape: tuple[int, ...]
    dtype: str
    quantized: bool
    group_size: int | None = None
    requested_group_size: GroupSize | None = None
    n_groups: int | None = None
    max_abs_error: float | None = None
    mean_abs_error: float | None = None
    rms_error: float | None = None
    sqnr_db: float | None = None
    zeroed_fraction: float | None = None
    bytes_before: int = 0
    bytes_after: int = 0
    kept_because: str | None = None
    stored_type: str | None = None
    stored_bytes: int | None = None
    # sums for the totals (float64), not shown in the table
    sum_sq_error: float = field(default=0.0, repr=False)
    sum_sq_signal: float = field(default=0.0, repr=False)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def layer(self) -> int | None:
        """Transformer block index, or None."""
        return layer_index(self.name)

    @property
    def backed_off(self) -> bool:
        """Whether the requested (integer) group size did not divide and was reduced."""
        return (isinstance(self.requested_group_size, int) and self.group_size is not None
                and self.group_size != self.requested_group_size)

    @property
    def lossless(self) -> bool:
        """Whether quantizing gave back the tensor exactly (e.g. requantizing GGUF Q8_0
        blocks with 8 bits and group size 32 reproduces them bit for bit)."""
        return self.quantized and self.max_abs_error == 0

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        del d["sum_sq_error"], d["sum_sq_signal"]
        d.update(shape=list(self.shape), backed_off=self.backed_off, lossless=self.lossless)
        if d["sqnr_db"] is not None and math.isinf(d["sqnr_db"]):
            d["sqnr_db"] = None  # JSON has no infinity; null with "lossless": true means exact
        return d


@dataclass
class ExploreReport:
    """Everything :func:`explore` measured.

    Attributes
    ----------
    source : str
    group_size : int, "row" or "tensor"
        As requested.
    bits, rounding, policy
        Settings used.
    results : list of TensorResult
        One per tensor, in natural name order.
    quantized : dict of str to QuantizedTensor
        Filled only when :func:`explore` was asked to keep them (``keep=True`` or ``save=``).
    kept : dict of str to numpy.ndarray
        The tensors left unquantized, likewise only with ``keep=True``.
    notes : list of str
        What a reader of the numbers must know about the source (e.g. a GGUF file whose
        "float" weights are themselves dequantized from a 4-bit format).
    source_file_bytes : int, optional
        Size of the source file, for a GGUF file (its totals are also compared with it).
    """

    source: str
    group_size: GroupSize
    bits: int
    rounding: str
    policy: str
    results: list[TensorResult]
    quantized: dict[str, QuantizedTensor] = field(default_factory=dict, repr=False)
    kept: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    notes: list[str] = field(default_factory=list)
    source_file_bytes: int | None = None

    def __getitem__(self, name: str) -> TensorResult:
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(name)

    @property
    def totals(self) -> dict[str, object]:
        """Totals over the model: counts, parameters, bytes, overall SQNR and error."""
        q = [r for r in self.results if r.quantized]
        before = sum(r.bytes_before for r in self.results)
        after = sum(r.bytes_after for r in self.results)
        noise = sum(r.sum_sq_error for r in q)
        signal = sum(r.sum_sq_signal for r in q)
        q_params = sum(r.size for r in q)
        q_after = sum(r.bytes_after for r in q)
        return {
            "n_tensors": len(self.results),
            "n_quantized": len(q),
            "n_kept": len(self.results) - len(q),
            "n_backed_off": sum(r.backed_off for r in q),
            "parameters": sum(r.size for r in self.results),
            "parameters_quantized": q_params,
            "bytes_before": before,
            "bytes_after": after,
            "compression_ratio": before / after if after else None,
            "stored_bytes": sum(r.stored_bytes if r.stored_bytes is not None else r.bytes_before
                                for r in self.results),
            "source_file_bytes": self.source_file_bytes,
            "n_lossless": sum(r.lossless for r in q),
            "bits_per_quantized_weight": 8 * q_after / q_params if q_params else None,
            "sqnr_db": (10 * math.log10(signal / noise) if noise > 0 else None) if q else None,
            "max_abs_error": max((r.max_abs_error for r in q), default=None),
            # quantized rows always have a mean error: `or 0.0` only narrows the type
            "mean_abs_error": (sum((r.mean_abs_error or 0.0) * r.size
                                   for r in q) / q_params if q_params else None),
        }

    def by_role(self) -> list[dict[str, object]]:
        """Per-role summary: tensors, parameters, bytes before/after, SQNR, max error."""
        rows = []
        for role in ROLES:
            rs = [r for r in self.results if r.role == role]
            if not rs:
                continue
            q = [r for r in rs if r.quantized]
            noise = sum(r.sum_sq_error for r in q)
            signal = sum(r.sum_sq_signal for r in q)
            rows.append({
                "role": role, "n_tensors": len(rs), "quantized": len(q) == len(rs),
                "parameters": sum(r.size for r in rs),
                "bytes_before": sum(r.bytes_before for r in rs),
                "bytes_after": sum(r.bytes_after for r in rs),
                "sqnr_db": 10 * math.log10(signal / noise) if q and noise > 0 else None,
                "max_abs_error": max((r.max_abs_error for r in q), default=None),
            })
        return rows

    def to_dict(self) -> dict[str, object]:
        """Settings, per-tensor results and totals, ready for ``json.dumps``."""
        return {"source": self.source, "source_file_bytes": self.source_file_bytes,
                "group_size": self.group_size, "bits": self.bits,
                "rounding": self.rounding, "policy": self.policy, "gqlearn": __version__,
                "tensors": [r.to_dict() for r in self.results], "by_role": self.by_role(),
                "totals": self.totals, "notes": self.notes}

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def header(self, width: int = 100) -> str:
        """One line: which model, group size, bits, rounding and back-off policy."""
        gs = self.group_size
        settings = (f": group size {gs}, {self.bits} bits, rounding {self.rounding}"
                    + (f", back-off {self.policy}" if isinstance(gs, int) else ""))
        return _shorten_middle(self.source, width - len(settings)) + settings

    def table(self, *, kept: bool = True, width: int = 100) -> str:
        """The per-tensor table and totals as text at most ``width`` columns wide.

        Long tensor names are shortened in the middle; numbers are never cut.  The mean error
        and exact byte counts of each tensor are in :meth:`to_dict` and :attr:`results`.
        """
        rows = [r for r in self.results if r.quantized or kept]
        per_tensor = parse_group_size(self.group_size) == "tensor"
        cells = [_row_cells(r, per_tensor) for r in rows]
        heads = ("tensor", "role", "shape", "type", "group", "max err", "SQNR", "zeroed",
                 "bytes", "after")
        widths = [max([len(h)] + [len(c[i] or "") for c in cells
                                  if c[6] is not None or i not in (4, 5, 6, 7)])
                  for i, h in enumerate(heads)]
        span = sum(widths[4:8]) + 3  # a kept row's reason spans group to zeroed
        rest = sum(widths[1:]) + len(widths) - 1
        widths[0] = max(16, min(widths[0], width - rest))

        def line(c: Sequence[str | None]) -> str:
            name = _shorten_middle(str(c[0]), widths[0])
            left = [f"{name:<{widths[0]}}", f"{c[1]:<{widths[1]}}"]
            if c[6] is None:  # kept
                why = str(c[5])[:span]
                mid = [f"{c[2]:>{widths[2]}}", f"{c[3]:>{widths[3]}}", f"{why:>{span}}"]
            else:
                mid = [f"{c[i]:>{widths[i]}}" for i in range(2, 8)]
            return " ".join(left + mid + [f"{c[8]:>{widths[8]}}", f"{c[9]:>{widths[9]}}"])

        head = line(heads)
        rule = "-" * len(head)
        lines = [self.header(width), head, rule] + [line(c) for c in cells] + [rule]
        t = self.totals
        sq = "n/a" if t["sqnr_db"] is None else f"{t['sqnr_db']:.2f} dB"
        if t["n_quantized"] and t["n_lossless"] == t["n_quantized"]:
            sq = "exact"
        ratio = t["compression_ratio"]
        totals = [f"total: {t['n_tensors']} tensors, {t['n_quantized']} quantized "
                     f"({t['parameters_quantized']:,} of {t['parameters']:,} parameters), "
                  f"{t['n_kept']} kept; SQNR {sq}"]
        floats = "as float32" if self.source_file_bytes is not None else "before"
        totals.append(f"bytes: {t['bytes_before']:,} {floats} -> {t['bytes_after']:,}"
                      + (f" ({ratio:.2f}x smaller)" if ratio else ""))
        if self.source_file_bytes is not None:
            size = self.source_file_bytes
            after = t["bytes_after"]
            cmp = (f"{after / size:.2f}x the file's size" if after >= size
                   else f"{size / after:.2f}x smaller than the file")
            totals.append(f"GGUF file: {size:,} bytes ({t['stored_bytes']:,} of tensors as "
                          f"stored); the result is {cmp}")
        notes: list[str] = []
        if t["n_backed_off"]:
            notes.append(f"* group size {self.group_size} does not divide the last axis of "
                         f"{t['n_backed_off']} tensors; backed off ({self.policy} policy)")
        exact = [r for r in rows if r.lossless]
        if exact:
            kinds = sorted({r.stored_type for r in exact if r.stored_type})
            notes.append(f"exact: {len(exact)} tensor(s) came back bit for bit (error 0), "
                         + ("because their stored " + "/".join(kinds) + " blocks already are "
                            "values on this grid: requantizing them is lossless"
                            if any(k.startswith(("Q", "IQ")) for k in kinds)
                            else "their values already lie on the quantization grid"))
        notes += [f"note: {n}" for n in self.notes]
        for n in totals + notes:
            lines += textwrap.wrap(n, width, subsequent_indent="  ", break_on_hyphens=False)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _shorten_middle(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters by replacing its middle with ``...``; a tensor
    name keeps its start up to the layer number when it can.

    >>> _shorten_middle("encoder.layer.5.attention.output.dense.weight", 30)
    'encoder.layer.5...dense.weight'
    >>> _shorten_middle("/a/long/directory/name/model.gguf", 20)
    '/a/long/d...el.gguf'
    """
    if len(text) <= width:
        return text
    if width <= 3:
        return text[:width]
    head = (width - 3 + 1) // 2
    number = re.search(r"\.\d+(?=\.)", text)
    if number and head < number.end() <= width - 3 - 8:
        head = number.end()
    tail = width - 3 - head
    return text[:head] + "..." + (text[-tail:] if tail else "")


def _human_bytes(n: int) -> str:
    """Bytes to three significant digits (at most 7 characters below a TB).

    >>> _human_bytes(1536), _human_bytes(786_432), _human_bytes(46_881_792), _human_bytes(792)
    ('1.5 kB', '786 kB', '46.9 MB', '792 B')
    """
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size * 0.9995 or unit == "kB" and n >= 1000:
            x = n / size
            return f"{x:.1f} {unit}" if x < 99.95 else f"{x:.0f} {unit}"
    return f"{n} B"


def _row_cells(r: TensorResult, per_tensor: bool) -> list[str | None]:
    """The table cells of one result; for a kept tensor, the reason sits in the error
    columns (and the SQNR and zeroed cells are None)."""
    shape = "x".join(map(str, r.shape)) or "scalar"
    stored = r.stored_type or r.dtype
    before, after = _human_bytes(r.bytes_before), _human_bytes(r.bytes_after)
    if not r.quantized:
        why = str(r.kept_because)
        return [r.name, r.role, shape, stored, None, "kept: " + why, None, None, before, after]
    group = "tensor" if per_tensor else f"{r.group_size}" + ("*" if r.backed_off else "")
    if r.lossless:
        err, sqnr = "0", "exact"
    else:
        err, sqnr = f"{r.max_abs_error:.2e}", f"{r.sqnr_db:.2f}"
    zeroed = 100 * (r.zeroed_fraction or 0.0)  # never None on a quantized row
    return [r.name, r.role, shape, stored, group, err, sqnr,
            "100%" if zeroed >= 99.995 else f"{zeroed:.2f}%", before, after]


def _measure(name: str, role: str, w: np.ndarray, qt: QuantizedTensor,
             requested: GroupSize, stored_type: str, stored_bytes: int) -> TensorResult:
    rep = error_report(w.reshape(qt.shape), qt)
    return TensorResult(
        name=name, role=role, shape=tuple(w.shape), dtype=w.dtype.name, quantized=True,
        group_size=qt.group_size, requested_group_size=requested, n_groups=qt.n_groups,
        max_abs_error=rep.max_abs_error, mean_abs_error=rep.mean_abs_error,
        rms_error=math.sqrt(rep.mse), sqnr_db=rep.sqnr_db,
        zeroed_fraction=rep.zeroed_fraction, bytes_before=w.nbytes, bytes_after=qt.nbytes,
        sum_sq_error=rep.sum_sq_error, sum_sq_signal=rep.sum_sq_signal,
        stored_type=stored_type, stored_bytes=stored_bytes)


@dataclass(frozen=True)
class _Header:
    """One tensor as the explorer plans it, before reading its data."""

    name: str
    shape: tuple[int, ...]
    is_float: bool
    dtype: str  # the numpy dtype it is read as
    stored_type: str  # how the file stores it (safetensors dtype or ggml type)
    stored_bytes: int


@dataclass
class _Source:
    """A model as the explorer reads it: every tensor's header first, then data on demand."""

    label: str
    headers: list[_Header]
    get: Callable[[str], np.ndarray]
    release: Callable[[], None] = lambda: None  # after each tensor
    close: Callable[[], None] = lambda: None  # at the end, if the explorer opened the model
    note: str | None = None  # what a reader of the numbers must know
    file_bytes: int | None = None


def _array_source(arrays: Mapping[str, np.ndarray]) -> _Source:
    codes = {dt.name: code for code, dt in NUMPY_DTYPES.items()}
    headers = []
    for name, value in arrays.items():
        a = np.asarray(value)
        headers.append(_Header(name, a.shape, a.dtype.kind == "f" or a.dtype.name == "bfloat16",
                               a.dtype.name, codes.get(a.dtype.name, a.dtype.name), a.nbytes))
    return _Source("<arrays>", headers, lambda name: np.asarray(arrays[name]))


def _checkpoint_source(ckpt: Checkpoint, label: str, owned: bool) -> _Source:
    headers = []
    for info in ckpt.infos():
        dtype = NUMPY_DTYPES.get(info.dtype)
        if dtype is None:
            if owned:
                ckpt.close()
            raise ModelFileError(info.file, f"dtype {info.dtype} is not supported by gqlearn "
                                            f"(it reads {', '.join(NUMPY_DTYPES)})", info.name)
        headers.append(_Header(info.name, info.shape, info.is_float, dtype.name, info.dtype,
                               info.nbytes))
    # Pages read through a memory map stay resident while it is open; closing it after each
    # tensor keeps memory bounded by the largest tensor, not the model.
    return _Source(label, headers, ckpt.get, release=ckpt.close,
                   close=ckpt.close if owned else lambda: None)


_GGUF_FLOAT_TYPES = ("F32", "F16", "BF16", "F64")


def _gguf_source(path: Path) -> _Source:
    """Every tensor of a GGUF file is read as float32, dequantized if stored quantized; the
    explorer then measures the error against those dequantized values, as the note says."""
    tensors = {t.name: t for t in open_gguf(path).tensors}
    headers = [_Header(t.name, tuple(int(d) for d in reversed(t.shape.tolist())), True,
                       "float32", t.tensor_type.name, int(t.n_bytes)) for t in tensors.values()]
    kinds = Counter(h.stored_type for h in headers if h.stored_type not in _GGUF_FLOAT_TYPES)
    note = None
    if kinds:
        listed = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        note = (f"{sum(kinds.values())} of {len(headers)} tensors are stored quantized in this "
                f"GGUF file ({listed}); the baseline they are compared with is their dequantized "
                "values, not the original weights; 'bytes' counts them as float32, the 'type' "
                "column says how the file stores each tensor")
    return _Source(str(path), headers, lambda name: dequantize_tensor(path, tensors[name]),
                   note=note, file_bytes=path.stat().st_size)


def _open_source(model: ModelLike) -> _Source:
    if model is None:
        return _checkpoint_source(open_checkpoint(fetch_model("minilm")), MODELS["minilm"].name,
                                  owned=True)
    if isinstance(model, Checkpoint):
        return _checkpoint_source(model, str(model.path), owned=False)
    if isinstance(model, Mapping):
        return _array_source(model)
    if Path(model).suffix.lower() == ".gguf":
        return _gguf_source(Path(model))
    ckpt = open_checkpoint(model)
    if ckpt.metadata.get("format") in FORMATS:
        ckpt.close()
        raise ModelFileError(ckpt.path, "this is a model gqlearn already quantized; read it "
                                        "with gqlearn.io.load_quantized, and explore the "
                                        f"original (its source: {ckpt.metadata.get('source')})")
    return _checkpoint_source(ckpt, str(model), owned=True)


_T = TypeVar("_T")


def _progress(items: list[_T], enabled: bool | None, desc: str) -> Iterable[_T]:
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return items
    from tqdm.auto import tqdm
    return tqdm(items, desc=desc, unit="tensor", file=sys.stderr, leave=False, delay=0.5)


def explore(model: ModelLike = None, group_size: GroupSize = 128, *, bits: int = 8,
            rounding: Rounding = "half_away", policy: Policy = "pow2",
            roles: Sequence[str] | None = None, progress: bool | None = False,
            keep: bool = False, save: str | os.PathLike[str] | None = None,
            threads: int | None = None) -> ExploreReport:
    """Quantize every quantizable tensor of a model and measure the damage.

    Parameters
    ----------
    model : path, Checkpoint, mapping of arrays, or None
        A safetensors file, sharded index or directory (see
        :func:`gqlearn.io.open_checkpoint`), a ``.gguf`` file (tensors dequantized to
        float32; the report's notes say when they were stored quantized), an open checkpoint,
        a dict of arrays, or None for all-MiniLM-L6-v2 (fetched on first use).
    group_size : int, "row" or "tensor", default 128
        Requested group size; backs off per tensor when it does not divide the last axis.
    bits : int, default 8
    rounding : {"half_away", "half_even"}, default "half_away"
    policy : {"pow2", "divisor", "halve"}, default "pow2"
        Back-off policy, see :func:`gqlearn.choose_group_size`.
    roles : sequence of str, optional
        Quantize only tensors of these roles (default: everything but norms and biases).
    progress : bool or None, default False
        Show a progress bar on stderr; None shows it when stderr is a terminal.
    keep : bool, default False
        Keep the QuantizedTensors (and the kept tensors) in the report, for
        :func:`save_quantized` or further analysis.
    save : path, optional
        Also write the quantized model there, in the format of :func:`save_quantized`.  Each
        tensor is written as soon as it is quantized and the memory map is released after
        each, so memory stays bounded by a few times the largest tensor, not the model size.
        A target that cannot be written (a directory, a file as its folder, no permission)
        raises :class:`gqlearn.io.SaveError` before any tensor is quantized; so does a
        full disk, when it happens, leaving the target as it was.
    threads : int, optional
        Passed to :func:`gqlearn.quantize`.

    Returns
    -------
    ExploreReport

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> arrays = {"layers.0.mlp.up_proj.weight": rng.normal(size=(8, 96)).astype(np.float32),
    ...           "layers.0.input_layernorm.weight": np.ones(96, np.float32)}
    >>> report = explore(arrays, group_size=64)
    >>> r = report["layers.0.mlp.up_proj.weight"]
    >>> r.role, r.group_size, r.backed_off, report.totals["n_kept"]
    ('mlp_up', 32, True, 1)
    """
    requested = parse_group_size(group_size)
    if roles is not None:
        unknown = [r for r in roles if r not in ROLES]
        if unknown:
            raise ValueError(f"unknown roles {unknown}; roles are {ROLES}")
    source = _open_source(model)
    results: list[TensorResult] = []
    quantized: dict[str, QuantizedTensor] = {}
    kept: dict[str, np.ndarray] = {}
    writer = None
    try:
        plan = _plan(source.headers, requested, policy, roles)
        headers = {h.name: h for h in source.headers}
        if save is not None:
            writer = SavedModelWriter(save, plan, source.label, requested, bits, rounding,
                                      policy)
        for p in _progress(plan, progress, "quantizing"):
            w, h = source.get(p.name), headers[p.name]
            if not p.quantized:
                results.append(TensorResult(p.name, p.role, p.shape, p.dtype, False,
                                            bytes_before=w.nbytes, bytes_after=w.nbytes,
                                            kept_because=p.kept_because,
                                            stored_type=h.stored_type,
                                            stored_bytes=h.stored_bytes))
                if keep:
                    kept[p.name] = w
                if writer:
                    writer.write_kept(p.name, w)
                continue
            try:
                qt = quantize_tensor(w, requested, bits=bits, rounding=rounding, policy=policy,
                                     threads=threads)
            except ValueError as exc:
                raise ValueError(f"{p.name}: {exc}") from exc
            results.append(_measure(p.name, p.role, w, qt, requested, h.stored_type,
                                    h.stored_bytes))
            if keep:
                quantized[p.name] = qt
            if writer:
                writer.write_quantized(p.name, qt, p.shape)
            del w, qt
            source.release()
        if writer:
            writer.close()
    except BaseException:
        if writer:
            writer.abort()
        raise
    finally:
        source.close()
    notes = [source.note] if source.note else []
    return ExploreReport(source.label, requested, bits, rounding, policy, results, quantized, kept,
                         notes, source.file_bytes)


def _plan(headers: list[_Header], requested: GroupSize, policy: Policy,
          roles: Sequence[str] | None) -> list[TensorEntry]:
    """Decide, from the headers alone, what happens to every tensor."""
    plan = []
    for h in sorted(headers, key=lambda h: natural_key(h.name)):
        role = classify(h.name)
        why = keep_reason(h.name, h.shape, h.is_float, roles)
        if why is None:
            try:
                used = resolve_group_size(h.shape, requested, policy)
            except ValueError as exc:
                raise ValueError(f"{h.name}: {exc}") from exc
            plan.append(TensorEntry(h.name, role, h.shape, h.dtype, True, used, None))
        else:
            plan.append(TensorEntry(h.name, role, h.shape, h.dtype, False, None, why))
    return plan


def fake_quantize(model: ModelLike = None, group_size: GroupSize = 128, *, bits: int = 8,
                  rounding: Rounding = "half_away", policy: Policy = "pow2",
                  roles: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Quantize-then-dequantize the selected tensors: float32 weights with quantization error.

    Returns only the tensors that were quantized (original shapes), ready for
    :meth:`gqlearn.models.SentenceEncoder.with_weights`.
    """
    report = explore(model, group_size, bits=bits, rounding=rounding, policy=policy,
                     roles=roles, keep=True)
    out = {}
    for r in report.results:
        if r.quantized:
            out[r.name] = dequantize(report.quantized[r.name]).reshape(r.shape)
    return out


def save_quantized(report: ExploreReport, path: str | os.PathLike[str]) -> Path:
    """Write a quantized model as safetensors, atomically.

    The layout (``name.values`` and ``name.scales`` per quantized tensor, kept tensors as they
    are, the settings in the metadata) is :mod:`gqlearn.io.saved`'s; read it back with
    :func:`gqlearn.io.load_quantized`.

    The file is written to a temporary file in the same directory and renamed into place, so
    ``path`` is either the old file or the complete new one, never a partial write.  To
    quantize a model larger than memory, use ``explore(model, save=path)`` instead, which
    writes each tensor as soon as it is quantized.

    Parameters
    ----------
    report : ExploreReport
        From :func:`explore` with ``keep=True``.
    path : path-like
        Output ``.safetensors`` file.
    """
    if not report.quantized and not report.kept:
        raise ValueError("the report holds no tensors; call explore(..., keep=True) or "
                         "explore(..., save=path)")
    reciprocal = any(qt.reciprocal for qt in report.quantized.values())
    with SavedModelWriter(path, report.results, report.source, report.group_size, report.bits,
                          report.rounding, report.policy, reciprocal) as out:
        for r in report.results:
            if r.quantized:
                out.write_quantized(r.name, report.quantized[r.name], r.shape)
            else:
                out.write_kept(r.name, report.kept[r.name])
    return Path(path)


