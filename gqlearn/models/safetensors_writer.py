"""Write a safetensors file one tensor at a time, atomically.

The ``safetensors`` package writes a file from a dict holding every tensor in memory; to
quantize a model larger than memory we must write each tensor as soon as it is ready.  The
format allows that once every tensor's dtype and shape is known: an 8-byte little-endian header
length, a JSON header giving each tensor's dtype, shape and byte range (padded with spaces to a
multiple of 8), then the bytes.  The file is read back with the ``safetensors`` package itself
(tests check it does).

Data goes to a temporary file beside the destination, renamed into place only when every
tensor has been written; on any error the temporary file is removed.
"""

from __future__ import annotations

import json
import math
import os
import struct
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = ["StreamingSafetensorsWriter", "safetensors_dtype"]

_DTYPES = {"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16",
           "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8", "uint64": "U64",
           "uint32": "U32", "uint16": "U16", "uint8": "U8", "bool": "BOOL"}
_WIDTH = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
          "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1}


def safetensors_dtype(dtype: np.dtype | type) -> str:
    """The safetensors name of a numpy dtype (``float32`` → ``"F32"``, bfloat16 → ``"BF16"``)."""
    name = np.dtype(dtype).name
    try:
        return _DTYPES[name]
    except KeyError:
        raise TypeError(f"safetensors cannot store dtype {name}") from None


class StreamingSafetensorsWriter:
    """Write the tensors of ``layout`` to ``path``, in order, as they arrive.

    Parameters
    ----------
    path : path-like
        Destination ``.safetensors`` file.
    layout : sequence of (name, dtype, shape)
        Every tensor the file will hold, in the order they will be written.
    metadata : mapping of str to str, optional
        The header's ``__metadata__``.

    Examples
    --------
    >>> import tempfile, os
    >>> from safetensors.numpy import load_file
    >>> path = os.path.join(tempfile.mkdtemp(), "a.safetensors")
    >>> a, b = np.arange(6, dtype=np.int8).reshape(2, 3), np.ones(2, np.float32)
    >>> with StreamingSafetensorsWriter(path, [("a", a.dtype, a.shape), ("b", b.dtype, b.shape)]) as out:
    ...     out.write("a", a)
    ...     out.write("b", b)
    >>> sorted(load_file(path))
    ['a', 'b']
    """

    def __init__(self, path: str | os.PathLike[str],
                 layout: Sequence[tuple[str, np.dtype | type, Sequence[int]]],
                 metadata: Mapping[str, str] | None = None):
        self.path = Path(path)
        names = [name for name, _, _ in layout]
        if len(set(names)) != len(names):
            raise ValueError("tensor names in a safetensors file must be unique")
        if "__metadata__" in names:
            raise ValueError("'__metadata__' cannot be a tensor name")
        header: dict[str, object] = {}
        if metadata:
            header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
        self._expected: list[tuple[str, str, tuple[int, ...]]] = []
        offset = 0
        for name, dtype, shape in layout:
            code = safetensors_dtype(dtype)
            shape = tuple(int(d) for d in shape)
            end = offset + math.prod(shape) * _WIDTH[code]
            header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, end]}
            self._expected.append((name, code, shape))
            offset = end
        self._total = offset
        text = json.dumps(header, separators=(",", ":")).encode("utf-8")
        text += b" " * (-len(text) % 8)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp",
                                         dir=self.path.parent)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self._tmp, 0o666 & ~umask)  # mkstemp's files are private; use the usual mode
        self._file = os.fdopen(fd, "wb")
        self._next = 0
        try:
            self._file.write(struct.pack("<Q", len(text)))
            self._file.write(text)
        except BaseException:
            self.abort()
            raise

    def write(self, name: str, array: np.ndarray) -> None:
        """Append the next tensor; its name, dtype and shape must be the layout's next ones."""
        if self._next >= len(self._expected):
            raise ValueError(f"{name!r}: every tensor of the layout is already written")
        want_name, want_code, want_shape = self._expected[self._next]
        array = np.asarray(array)
        got = (name, safetensors_dtype(array.dtype), tuple(array.shape))
        if got != (want_name, want_code, want_shape):
            raise ValueError(f"expected tensor {want_name!r} {want_code}{list(want_shape)} next, "
                             f"got {name!r} {got[1]}{list(got[2])}")
        self._file.write(memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8)))
        self._next += 1

    def close(self) -> Path:
        """Check every tensor was written, flush to disk and rename into place."""
        if self._file.closed:
            return self.path
        if self._next != len(self._expected):
            missing = [n for n, _, _ in self._expected[self._next:]]
            self.abort()
            raise ValueError(f"file not written: {len(missing)} tensors never arrived "
                             f"(first: {missing[0]!r})")
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Discard the temporary file; the destination is left as it was."""
        if not self._file.closed:
            self._file.close()
        try:
            os.unlink(self._tmp)
        except FileNotFoundError:
            pass

    def __enter__(self) -> StreamingSafetensorsWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
