"""Write a safetensors file one tensor at a time, atomically.

The ``safetensors`` package writes a file from a dict holding every tensor in memory; to
quantize a model larger than memory we must write each tensor as soon as it is ready.  The
format allows that once every tensor's dtype and shape is known: an 8-byte little-endian header
length, a JSON header giving each tensor's dtype, shape and byte range (padded with spaces to a
multiple of 8), then the bytes.  The file is read back with the ``safetensors`` package itself
(tests check it does).

Data goes to a temporary file beside the destination, ``.NAME.gqlearn-RANDOM.tmp``, renamed
into place only when every tensor has been written; on any error (and on Ctrl-C, or SIGTERM in
the command line) the temporary file is removed.  A process killed outright (SIGKILL, a power
cut) cannot clean up: its temporary file stays, and the next save to the same destination
removes it.  The writer holds an exclusive ``flock`` on its temporary file while it writes, so a
leftover is told from a file another live process is writing by trying that lock: the lock is
released by the kernel when its holder dies.  Only files named ``.NAME.gqlearn-*.tmp`` for
that destination are ever removed.

OS errors (disk full, a directory or an unwritable folder as destination) are raised as
:class:`SaveError`, a one-line message naming the destination; the destination is checked, and
the temporary file created, before any tensor is written.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import stat
import struct
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: leftovers are not recognised
    fcntl = None

__all__ = ["StreamingSafetensorsWriter", "SaveError", "safetensors_dtype", "temp_prefix",
           "remove_leftovers"]


class SaveError(OSError):
    """A quantized model could not be written: the destination and the OS's reason."""

    def __init__(self, path: str | os.PathLike[str], cause: OSError | str):
        reason = cause if isinstance(cause, str) else (cause.strerror or str(cause))
        super().__init__(getattr(cause, "errno", None), reason)
        self.filename = str(path)
        self.message = f"cannot write {path}: {reason}"

    def __str__(self) -> str:
        return self.message


def temp_prefix(path: Path) -> str:
    """Name prefix of the temporary files a save to ``path`` writes beside it."""
    return f".{path.name}.gqlearn-"


def _try_lock(fd: int) -> bool:
    """Whether this process could lock ``fd`` (callers check first that fcntl exists)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def remove_leftovers(path: str | os.PathLike[str]) -> list[Path]:
    """Remove what killed saves to ``path`` left beside it; return the files removed.

    Only regular files named ``.NAME.gqlearn-*.tmp`` (``NAME`` being ``path``'s name) whose
    lock no live writer holds are removed.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / ".q.safetensors.gqlearn-x1y2.tmp").write_bytes(b"partial")
    >>> _ = (d / ".other.safetensors.gqlearn-x1y2.tmp").write_bytes(b"not ours")
    >>> [p.name for p in remove_leftovers(d / "q.safetensors")]
    ['.q.safetensors.gqlearn-x1y2.tmp']
    """
    path = Path(path)
    if fcntl is None:  # pragma: no cover
        return []
    prefix, removed = temp_prefix(path), []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return []
    for entry in entries:
        if not (entry.name.startswith(prefix) and entry.name.endswith(".tmp")):
            continue
        try:
            if not stat.S_ISREG(entry.stat(follow_symlinks=False).st_mode):
                continue
            fd = os.open(entry.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            if _try_lock(fd):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


_DTYPES = {"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16",
           "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8", "uint64": "U64",
           "uint32": "U32", "uint16": "U16", "uint8": "U8", "bool": "BOOL"}


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
    >>> layout = [("a", a.dtype, a.shape), ("b", b.dtype, b.shape)]
    >>> with StreamingSafetensorsWriter(path, layout) as out:
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
            end = offset + math.prod(shape) * np.dtype(dtype).itemsize
            header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, end]}
            self._expected.append((name, code, shape))
            offset = end
        self._total = offset
        text = json.dumps(header, separators=(",", ":")).encode("utf-8")
        text += b" " * (-len(text) % 8)
        if self.path.is_dir():
            raise SaveError(self.path, "it is a directory; give a file name such as "
                                       f"{self.path / 'model-q8.safetensors'}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SaveError(self.path, f"cannot create its folder {self.path.parent}: "
                                       f"{exc.strerror or exc}") from None
        remove_leftovers(self.path)
        self._tmp = self._create_temp()
        self._file = os.fdopen(self._fd, "wb")
        self._next = 0
        try:
            self._file.write(struct.pack("<Q", len(text)))
            self._file.write(text)
        except BaseException as exc:
            self.abort()
            if isinstance(exc, OSError):
                raise SaveError(self.path, exc) from None
            raise

    def _create_temp(self) -> str:
        """Create the temporary file, locked, under its ``.tmp`` name (see the module doc).

        It is created as ``....init`` and renamed to ``....tmp`` once locked, so that a
        concurrent :func:`remove_leftovers` never sees an unlocked ``.tmp`` of a live writer.
        """
        try:
            fd, init = tempfile.mkstemp(prefix=temp_prefix(self.path), suffix=".init",
                                        dir=self.path.parent)
        except OSError as exc:
            raise SaveError(self.path, exc) from None
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(init, 0o666 & ~umask)  # mkstemp's files are private; use the usual mode
            tmp = init[:-len(".init")] + ".tmp"
            os.rename(init, tmp)
        except BaseException as exc:
            os.close(fd)
            os.unlink(init)
            if isinstance(exc, OSError):
                raise SaveError(self.path, exc) from None
            raise
        self._fd = fd
        return tmp

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
        try:
            self._file.write(memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8)))
        except OSError as exc:  # disk full (ENOSPC), file too large (EFBIG), I/O error
            self.abort()
            raise SaveError(self.path, exc) from None
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
            os.replace(self._tmp, self.path)
            self._file.close()  # releases the lock, after the rename
        except BaseException as exc:
            self.abort()
            if isinstance(exc, OSError):
                raise SaveError(self.path, exc) from None
            raise
        return self.path

    def abort(self) -> None:
        """Discard the temporary file; the destination is left as it was."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp)  # before closing: the lock is held until the file is gone
        if not self._file.closed:
            with contextlib.suppress(OSError):  # flushing the buffer of a full disk fails again
                self._file.close()

    def __enter__(self) -> StreamingSafetensorsWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
