"""Read a GGUF checkpoint (llama.cpp's file format) into float32 numpy tensors.

A GGUF file holds key/value metadata (architecture, sizes, the tokenizer's vocabulary and
merges) and tensors, each stored in a ggml type: F32, F16, or a block-quantized format such
as Q8_0 (32 int8 values and one float16 scale per block) or Q4_1 (32 4-bit values, a float16
scale and a float16 minimum per block).  The ``gguf`` package (from llama.cpp) parses the file
with a memory map and dequantizes each format in numpy; this module adds what the course
needs on top: one tensor at a time, the LLaMA config from the metadata, and errors that name
the file and the tensor when a file is truncated or malformed.

Tensors come out in numpy order, ``(out_features, in_features)`` for a weight matrix (GGUF
lists dimensions the other way round, fastest first).
"""

from __future__ import annotations

import functools
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelFileError

__all__ = ["GGUFError", "GGUFSource", "open_gguf", "as_reader", "read_metadata", "field_value",
           "require_field", "tensor_infos", "dequantize_tensor", "iter_gguf_tensors"]


class GGUFError(ModelFileError):
    """A GGUF file is truncated, malformed, or not the kind of model asked for.

    A :class:`gqlearn.io.ModelFileError` (hence a ``ValueError``).  Raised as
    ``GGUFError(file, message, tensor=None)`` or, with the file already in the message,
    ``GGUFError(message)`` (then ``file`` is None).
    """

    def __init__(self, file_or_message: str | os.PathLike[str], message: str | None = None,
                 tensor: str | None = None):
        if message is not None:
            super().__init__(file_or_message, message, tensor)
        else:
            ValueError.__init__(self, str(file_or_message))
            self.file, self.tensor = None, tensor


# gguf's GGUFReader reports a truncated tensor as numpy's "cannot reshape"; naming the tensor
# needs a hook into its private ``_build_tensors``.  That is why pyproject.toml bounds gguf from
# above: raise the bound only after tests/test_io_gguf.py and tests/test_fuzz_files.py pass
# with the new version.
@functools.cache
def _reader_class() -> type:
    import gguf

    class _CheckedReader(gguf.GGUFReader):
        """GGUFReader that checks each tensor's byte range before mapping it, so a truncated
        file is reported by tensor name instead of numpy's "cannot reshape" message.

        It also keeps the file's memory map as a plain ndarray view (still backed by the
        map): slicing an ``np.memmap`` subclass costs a Python-level ``__array_finalize__``
        per slice, and parsing SmolLM2's 100,000 tokenizer strings takes 3.5x longer.
        """

        path: Path

        @property  # type: ignore[override]  # GGUFReader declares data as a plain attribute
        def data(self) -> np.ndarray:
            return self._data

        @data.setter
        def data(self, value: np.ndarray) -> None:
            self._data = value.view(np.ndarray) if isinstance(value, np.memmap) else value

        def _build_tensors(self, start_offs: int, fields: list[Any]) -> None:
            size = len(self.data)
            for fld in fields:
                try:
                    _, name_data, _, dims, raw_type, offset = fld.parts
                    name = bytes(name_data).decode("utf-8", "replace")
                    qtype = gguf.GGMLQuantizationType(int(raw_type[0]))
                except ValueError as exc:
                    raise GGUFError(f"tensor info at byte {fld.offset}: {exc}") from None
                except Exception:  # a layout this check does not know: let gguf decide
                    break
                block, type_size = gguf.GGML_QUANT_SIZES[qtype]
                n_elements = int(np.prod(dims.astype(np.int64)))
                if n_elements % block:
                    raise GGUFError(f"tensor {name!r}: {n_elements} elements do not fill whole "
                                    f"{qtype.name} blocks of {block}")
                end = int(start_offs + offset[0]) + n_elements // block * type_size
                if end > size:
                    raise GGUFError(f"tensor {name!r} ({qtype.name}, shape "
                                    f"{tuple(reversed(dims.tolist()))}) ends at byte {end}, "
                                    f"past the end of the file ({size} bytes): truncated?")
            super()._build_tensors(start_offs, fields)

    return _CheckedReader


GGUFSource = Any  # a path, or a reader from :func:`open_gguf` (parsing the header takes ~1 s)


def as_reader(source: GGUFSource) -> tuple[Any, Path]:
    """The reader for ``source`` (opened with :func:`open_gguf` if it is a path) and its path."""
    if hasattr(source, "tensors") and hasattr(source, "fields"):
        return source, Path(getattr(source, "path", "<gguf>"))
    reader = open_gguf(source)
    return reader, reader.path


def open_gguf(path: str | os.PathLike[str]) -> Any:
    """Open a GGUF file (memory-mapped) as a ``gguf.GGUFReader``.

    The other functions of this module accept the reader in place of a path, so that a file
    is parsed once.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    GGUFError
        If the file is not a GGUF file, or is truncated or malformed; the message names the
        file (and the tensor, when one tensor's data runs past the end).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no GGUF file at {path}")
    try:
        reader = _reader_class()(path, "r")
        reader.path = path
        return reader
    except GGUFError as exc:
        raise GGUFError(path, str(exc)) from None
    except (ValueError, KeyError, IndexError, OverflowError, UnicodeDecodeError, TypeError,
            AttributeError, struct.error, RecursionError, MemoryError) as exc:
        # whatever gguf's parser trips on; MemoryError: a count that asks for the impossible
        message = " ".join(str(exc).split())[:200]
        raise GGUFError(path, f"not a readable GGUF file (truncated or malformed header): "
                              f"{type(exc).__name__}: {message}") from None


def field_value(field: Any, path: Path | None = None) -> Any:
    """A metadata field's value; a :class:`GGUFError` naming the key if it cannot be decoded."""
    try:
        return field.contents()
    except (ValueError, IndexError, TypeError, UnicodeDecodeError, OverflowError) as exc:
        raise GGUFError(path or "<gguf>", f"metadata key {field.name!r} cannot be decoded "
                                          f"({type(exc).__name__}): a corrupt file") from None


def read_metadata(source: GGUFSource, *, skip_arrays_longer_than: int = 64) -> dict[str, Any]:
    """The key/value metadata of a GGUF file (path or reader), as Python values.

    Arrays longer than ``skip_arrays_longer_than`` (the tokenizer's 49152 tokens, ...) are
    replaced by a short description, ``"<array of N>"``.
    """
    reader, path = as_reader(source)
    out: dict[str, Any] = {}
    for key, fld in reader.fields.items():
        if len(fld.data) > skip_arrays_longer_than:
            out[key] = f"<array of {len(fld.data)}>"
        else:
            out[key] = field_value(fld, path)
    return out


def require_field(reader: Any, path: Path, key: str) -> Any:
    """The value of metadata ``key``; a :class:`GGUFError` if the file lacks it."""
    fld = reader.get_field(key)
    if fld is None:
        raise GGUFError(f"{path}: metadata key {key!r} is missing")
    return field_value(fld, path)


def tensor_infos(source: GGUFSource) -> list[tuple[str, str, tuple[int, ...]]]:
    """``(name, ggml type, numpy shape)`` of every tensor, without reading any data.

    For SmolLM2-135M, e.g. ``('blk.0.attn_q.weight', 'Q4_1', (576, 576))``.
    """
    reader, _ = as_reader(source)
    return [(t.name, t.tensor_type.name, tuple(int(d) for d in reversed(t.shape.tolist())))
            for t in reader.tensors]


def dequantize_tensor(path: Path, tensor: Any) -> np.ndarray:
    """One tensor of a reader as float32 in numpy order; a :class:`GGUFError` if it cannot be."""
    from gguf import quants

    try:
        with np.errstate(all="ignore"):  # a corrupt float16 scale: inf/NaN, reported below
            data = quants.dequantize(tensor.data, tensor.tensor_type)
    except (ValueError, NotImplementedError, TypeError) as exc:
        raise GGUFError(f"{path}: tensor {tensor.name!r} ({tensor.tensor_type.name}) could "
                        f"not be dequantized: {exc}") from exc
    shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
    data = np.ascontiguousarray(data, dtype=np.float32).reshape(shape)
    if not np.isfinite(data).all():
        raise GGUFError(f"{path}: tensor {tensor.name!r} ({tensor.tensor_type.name}) holds "
                        f"non-finite values: corrupt file?")
    return data


def iter_gguf_tensors(source: GGUFSource) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(name, float32 array)`` for each tensor of a GGUF file, one at a time.

    Quantized tensors (Q8_0, Q4_1, ...) are dequantized with ``gguf.quants.dequantize``;
    only one dequantized tensor is alive at a time unless the caller keeps them.

    Raises
    ------
    GGUFError
        If the file is truncated or malformed, or a tensor cannot be dequantized or holds
        non-finite values; the message names the file and the tensor.
    """
    reader, path = as_reader(source)
    for tensor in reader.tensors:
        yield tensor.name, dequantize_tensor(path, tensor)
