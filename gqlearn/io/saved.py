"""Quantized models saved as safetensors: the file layout, and reading it back.

A saved model (written by :func:`gqlearn.models.save_quantized` or
``gqlearn.models.explore(model, save=path)``) is an ordinary safetensors file: each quantized
tensor ``name`` becomes ``name.values`` and ``name.scales`` (float32), kept tensors are stored
unchanged under their own name, and the metadata records the format, gqlearn's version, bits,
rounding, the requested group size, the back-off policy, the source, and per tensor its group
size, shape, dtype and role.  At 8 bits ``name.values`` is int8 of the original shape (format
``gqlearn.quantized.v1``); below 8 bits it holds the packed bytes, uint8 (format
``gqlearn.quantized.v2``; layout in :mod:`gqlearn.packing`), so the file takes the bytes a
report counts.  :func:`load_quantized` reads it back, and dequantizing gives bit for bit the
float32 tensors the quantizer made.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__, packing
from ..core import QuantizedTensor, dequantize
from .errors import ModelFileError
from .safetensors import Checkpoint, check_shape, parse_json, read_header
from .safetensors_writer import StreamingSafetensorsWriter

__all__ = ["FORMAT", "FORMAT_PACKED", "FORMATS", "TensorEntry", "SavedModelWriter",
           "QuantizedModel", "load_quantized", "natural_key"]

FORMAT = "gqlearn.quantized.v1"
# Sub-8-bit values stored packed (gqlearn.packing: eight values in ``bits`` bytes along the last
# axis, uint8); 8-bit files keep FORMAT, so loaders from before packing still read them.
FORMAT_PACKED = "gqlearn.quantized.v2"
FORMATS = (FORMAT, FORMAT_PACKED)


def natural_key(name: str) -> list[object]:
    """Sort key putting ``layer.2`` before ``layer.10``.

    >>> sorted(["h.10.w", "h.2.w", "emb"], key=natural_key)
    ['emb', 'h.2.w', 'h.10.w']
    """
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", name)]


@dataclass(frozen=True)
class TensorEntry:
    """What a saved file records about one tensor: quantized with a group size, or kept."""

    name: str
    role: str
    shape: tuple[int, ...]
    dtype: str
    quantized: bool
    group_size: int | None
    kept_because: str | None


def _file_layout(items: Sequence[TensorEntry], source: str, requested: int | str, bits: int,
                rounding: str, policy: str, reciprocal: bool = False
                ) -> tuple[list[tuple[str, np.dtype, tuple[int, ...]]], dict[str, str]]:
    """The saved file's tensors (name, dtype, shape), in order, and its metadata.

    ``items`` say what happens to each tensor (anything with the attributes of
    :class:`TensorEntry`); ``requested`` is the group size asked for (an int, ``"row"`` or
    ``"tensor"``); the rest is recorded in the metadata.
    """
    per_tensor = requested == "tensor"
    layout: list[tuple[str, np.dtype, tuple[int, ...]]] = []
    entries: dict[str, dict[str, object]] = {}
    for r in items:
        if r.quantized:
            gs = int(r.group_size)  # type: ignore[arg-type]  # a quantized entry has one
            scales = (1, 1) if per_tensor else (*r.shape[:-1], r.shape[-1] // gs)
            layout += [(r.name + ".values", *_values_layout(r.shape, bits, per_tensor)),
                       (r.name + ".scales", np.dtype(np.float32), scales)]
            entries[r.name] = {"quantized": True, "group_size": gs, "shape": list(r.shape),
                               "dtype": r.dtype, "role": r.role, "per_tensor": per_tensor}
        else:
            layout.append((r.name, np.dtype(r.dtype), r.shape))
            entries[r.name] = {"quantized": False, "shape": list(r.shape), "dtype": r.dtype,
                               "role": r.role, "kept_because": r.kept_because}
    for name in entries:
        for suffix in (".values", ".scales"):
            if name + suffix in entries:
                raise ValueError(f"cannot save: tensor names {name!r} and {name + suffix!r} "
                                 "would collide")
    metadata = {"format": FORMAT if bits == 8 else FORMAT_PACKED, "gqlearn_version": __version__,
                "bits": str(bits), "rounding": rounding, "reciprocal": str(reciprocal).lower(),
                "group_size": str(requested), "policy": policy, "source": source,
                "tensors": json.dumps(entries)}
    return layout, metadata


def _values_layout(shape: tuple[int, ...], bits: int,
                   per_tensor: bool) -> tuple[np.dtype, tuple[int, ...]]:
    """dtype and shape of a saved ``.values`` tensor: int8 of the original shape at 8 bits,
    else the packed uint8 bytes (:attr:`QuantizedTensor.packed`, rows along the last axis)."""
    if bits == 8:
        return np.dtype(np.int8), tuple(shape)
    qshape = (1, math.prod(shape)) if per_tensor else tuple(shape)
    return np.dtype(np.uint8), packing.packed_shape(qshape, bits)


def _stored_values(qt: QuantizedTensor, shape: tuple[int, ...]) -> np.ndarray:
    """What the file stores as ``.values``: int8 in the original shape, or the packed bytes."""
    return qt.values.reshape(shape) if qt.bits == 8 else qt.packed


class SavedModelWriter:
    """Write a quantized model tensor by tensor, in the order of ``entries``, atomically.

    The file appears at ``path`` only when :meth:`close` has checked that every tensor was
    written; an exception inside a ``with`` block, or :meth:`abort`, leaves ``path`` as it was.
    Memory stays bounded by the tensor being written, so a model larger than memory can be
    saved while it is quantized.

    Parameters
    ----------
    path : path-like
        Output ``.safetensors`` file.
    entries : sequence of TensorEntry
        What happens to each tensor (anything with :class:`TensorEntry`'s attributes).
    source, requested, bits, rounding, policy, reciprocal
        Recorded in the metadata: where the weights came from, the group size asked for (an
        int, ``"row"`` or ``"tensor"``) and the quantizer's settings.

    Raises
    ------
    gqlearn.io.SaveError
        If the target cannot be written (checked before anything is quantized).
    """

    def __init__(self, path: str | os.PathLike[str], entries: Sequence[TensorEntry], source: str,
                 requested: int | str, bits: int, rounding: str, policy: str,
                 reciprocal: bool = False):
        layout, metadata = _file_layout(entries, source, requested, bits, rounding, policy,
                                        reciprocal)
        self._out = StreamingSafetensorsWriter(path, layout, metadata)

    def write_quantized(self, name: str, qt: QuantizedTensor, shape: tuple[int, ...]) -> None:
        """``name.values`` (int8, or packed bytes below 8 bits) and ``name.scales``."""
        self._out.write(name + ".values", _stored_values(qt, shape))
        self._out.write(name + ".scales", qt.scales)

    def write_kept(self, name: str, array: np.ndarray) -> None:
        """A tensor kept as it is (a norm, a bias, a buffer)."""
        self._out.write(name, array)

    def close(self) -> Path:
        """Check every tensor was written and move the file into place; its path."""
        return self._out.close()

    def abort(self) -> None:
        """Discard what was written; ``path`` is left as it was."""
        self._out.abort()

    def __enter__(self) -> SavedModelWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._out.__exit__(exc_type, exc, tb)


@dataclass
class QuantizedModel:
    """A quantized model read back by :func:`load_quantized`.

    Attributes
    ----------
    tensors : dict of str to QuantizedTensor
        Quantized tensors (a per-tensor-quantized one has shape ``(1, size)``).
    kept : dict of str to numpy.ndarray
        Tensors stored unquantized (norms, biases, buffers).
    shapes : dict of str to tuple
        Original shape of every tensor.
    metadata : dict of str to str
        The file's metadata (format, bits, rounding, group_size, policy, source, ...).
    """

    tensors: dict[str, QuantizedTensor]
    kept: dict[str, np.ndarray]
    shapes: dict[str, tuple[int, ...]]
    metadata: dict[str, str]

    def names(self) -> list[str]:
        return sorted(self.shapes, key=natural_key)

    def dequantize(self, name: str) -> np.ndarray:
        """float32 weights of ``name`` in their original shape (kept tensors as stored)."""
        if name in self.kept:
            return self.kept[name]
        return dequantize(self.tensors[name]).reshape(self.shapes[name])

    def dequantized(self) -> dict[str, np.ndarray]:
        """Every tensor, dequantized where it was quantized."""
        return {name: self.dequantize(name) for name in self.names()}


def load_quantized(path: str | os.PathLike[str]) -> QuantizedModel:
    """Read a file written by :func:`save_quantized`.

    Raises
    ------
    ModelFileError
        If the file is not a gqlearn quantized model, or its tensors do not match its metadata.
    """
    path = Path(path)
    infos, metadata = read_header(path)
    if metadata.get("format") not in FORMATS:
        raise ModelFileError(path, f"not a gqlearn quantized model (metadata format is "
                                   f"{metadata.get('format')!r}, expected one of {FORMATS}); "
                                   "to explore an ordinary checkpoint use explore()")
    packed = metadata.get("format") == FORMAT_PACKED
    try:
        entries = parse_json(path, metadata["tensors"], "the metadata's \"tensors\"")
        bits = int(metadata["bits"])
        rounding = metadata["rounding"]
        reciprocal = metadata.get("reciprocal", "false") == "true"
    except (KeyError, ValueError) as exc:
        if isinstance(exc, ModelFileError):
            raise
        raise ModelFileError(path, f"damaged metadata: {exc}") from None
    if not isinstance(entries, dict):
        raise ModelFileError(path, "damaged metadata: \"tensors\" must be a JSON object "
                                   "mapping tensor names to their entries")
    tensors: dict[str, QuantizedTensor] = {}
    kept: dict[str, np.ndarray] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    ckpt = Checkpoint(path, infos, [path], metadata)
    with ckpt:
        for name, e in entries.items():
            if not isinstance(e, dict) or not isinstance(e.get("quantized"), bool):
                raise ModelFileError(path, "damaged metadata: the entry must be an object with "
                                           "a true/false \"quantized\"", name)
            shape = check_shape(path, e.get("shape"), name)
            shapes[name] = shape
            stored = name + ".values" if e["quantized"] else name
            if stored not in infos:
                raise ModelFileError(path, f"metadata lists it but the file lacks {stored!r}",
                                     name)
            qshape = (1, math.prod(shape)) if e["quantized"] and e.get("per_tensor") else shape
            want = shape
            if e["quantized"] and packed:  # sub-8-bit values stored packed along the last axis
                if not 2 <= bits <= 7:
                    raise ModelFileError(path, f"damaged metadata: packed values need 2 to 7 "
                                               f"bits, got {bits}", name)
                want = packing.packed_shape(qshape, bits)
            if infos[stored].shape != want:
                # a reshape would silently scramble the rows
                layout = (f"{bits}-bit values are stored as uint8 {list(want)}"
                          if want != shape else f"{stored!r} must have that shape")
                raise ModelFileError(path, f"metadata says shape {list(shape)}: {layout}, but "
                                           f"{stored!r} has shape {list(infos[stored].shape)}",
                                     name)
            if not e["quantized"]:
                kept[name] = ckpt.get(name)
                continue
            gs = e.get("group_size")
            if isinstance(gs, bool) or not isinstance(gs, int):
                raise ModelFileError(path, f"damaged metadata: group_size {gs!r} is not an "
                                           "integer", name)
            if name + ".scales" not in infos:
                raise ModelFileError(path, f"metadata lists it but the file lacks "
                                           f"{name + '.scales'!r}", name)
            values = ckpt.get(name + ".values")
            scales = ckpt.get(name + ".scales")
            try:
                if packed:
                    tensors[name] = QuantizedTensor.from_packed(values, qshape, scales, gs, bits,
                                                                rounding, reciprocal)
                else:  # int8 values of the original shape (8 bits, or a v1 file)
                    tensors[name] = QuantizedTensor(values.reshape(qshape), scales, gs, bits,
                                                    rounding, reciprocal)
            except (TypeError, ValueError) as exc:
                raise ModelFileError(path, f"stored values do not form a valid quantized "
                                           f"tensor: {exc}", name) from None
    return QuantizedModel(tensors, kept, shapes, metadata)
