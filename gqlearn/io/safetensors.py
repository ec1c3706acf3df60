"""Read model weights from safetensors files and sharded checkpoints, one tensor at a time.

A checkpoint is opened with :func:`open_checkpoint`, given

* a ``.safetensors`` file,
* a sharded checkpoint's ``model.safetensors.index.json`` (its ``weight_map`` names the shard
  holding each tensor), or
* a directory holding either of those (or several ``.safetensors`` files).

Every file's header is checked first, so a damaged file fails with a :class:`ModelFileError`
naming the file and the tensor: a truncated file, a header whose shape and offsets disagree,
overlapping or missing byte ranges, an unknown dtype, a shard the index lists but that is not
there.  The tensors themselves are read by the ``safetensors`` package (``framework="numpy"``)
from a memory map, one at a time, in their stored dtype: float32, float16, or bfloat16 as
``ml_dtypes.bfloat16``.

Pickle-based files (``.bin``, ``.pt``, ``.pth``, ``.ckpt``) are refused: unpickling a file can
run arbitrary code.  Convert them to safetensors first.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ModelFileError

try:
    import ml_dtypes
except ImportError:  # pragma: no cover - a declared dependency
    ml_dtypes = None

__all__ = ["Checkpoint", "TensorInfo", "PickleRefusedError", "open_checkpoint",
           "read_header", "parse_json", "check_shape", "INDEX_NAME", "SAFETENSORS_DTYPES",
           "NUMPY_DTYPES", "MAX_DIMS"]

INDEX_NAME = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
# Largest header we accept (the safetensors package's own limit is 100 MB).
_MAX_HEADER = 100_000_000
# Most axes a tensor may have: numpy 1.x's limit (numpy 2 allows 64); real weights have <= 5.
MAX_DIMS = 32

# Every dtype the safetensors format defines, with its width in bits.
SAFETENSORS_DTYPES = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "I16": 16, "U16": 16, "F16": 16,
    "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64, "I64": 64, "U64": 64,
}
# The dtypes gqlearn reads into numpy.
NUMPY_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "I64": np.dtype(np.int64), "I32": np.dtype(np.int32), "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
}
if ml_dtypes is not None:
    NUMPY_DTYPES["BF16"] = np.dtype(ml_dtypes.bfloat16)
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")


class PickleRefusedError(ModelFileError):
    """A pickle-based checkpoint (``.bin``, ``.pt``, ...), which gqlearn never loads."""

    def __init__(self, file: str | os.PathLike[str]):
        super().__init__(
            file, "gqlearn does not read pickle-based checkpoints, because unpickling a file "
                  "can run arbitrary code. Convert it to safetensors first, e.g. in an "
                  "environment with torch: safetensors.torch.save_file(torch.load(path, "
                  "weights_only=True), 'model.safetensors'), or use the safetensors version "
                  "most model hubs publish next to it.")


@dataclass(frozen=True)
class TensorInfo:
    """What a safetensors header says about one tensor.

    Attributes
    ----------
    name : str
    dtype : str
        safetensors dtype code: ``"F32"``, ``"F16"``, ``"BF16"``, ``"I64"``, ...
    shape : tuple of int
    file : pathlib.Path
        The file (shard) holding it.
    nbytes : int
        Bytes it occupies in the file.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    file: Path
    nbytes: int

    @property
    def size(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def is_float(self) -> bool:
        """Whether the tensor holds float16, bfloat16, float32 or float64 numbers."""
        return self.dtype in FLOAT_DTYPES


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _short(x: object, limit: int = 60) -> str:
    """``repr(x)``, cut to about ``limit`` characters: a hostile field can be megabytes long."""
    if isinstance(x, (list, dict, str)) and len(x) > limit:
        x = x[:limit] if not isinstance(x, dict) else dict(list(x.items())[:4])
        return repr(x)[:limit] + f"... ({type(x).__name__} too long)"
    text = repr(x)
    return text if len(text) <= limit else text[:limit] + "..."


def parse_json(file: str | os.PathLike[str], text: str | bytes, what: str) -> object:
    """``json.loads(text)``, or a :class:`ModelFileError` naming ``file`` and ``what`` was
    parsed (invalid UTF-8 or JSON, or nesting deeper than Python's recursion limit)."""
    try:
        return json.loads(text.decode("utf-8") if isinstance(text, bytes) else text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(file, f"{what} is not valid JSON ({exc}); a corrupt or foreign "
                                   "file") from None
    except RecursionError:
        raise ModelFileError(file, f"{what} is JSON nested too deeply to be a model's: a "
                                   "corrupt or hostile file") from None


def check_shape(file: Path, shape: object, name: str | None) -> tuple[int, ...]:
    """``shape`` as a tuple if it is a list of at most :data:`MAX_DIMS` non-negative ints."""
    if not isinstance(shape, list) or len(shape) > MAX_DIMS or not all(
            _is_int(d) and d >= 0 for d in shape):
        why = (f"{len(shape)} axes, more than {MAX_DIMS}"
               if isinstance(shape, list) and len(shape) > MAX_DIMS else
               "it must be a list of non-negative integers")
        raise ModelFileError(file, f"invalid shape {_short(shape)}: {why}", name)
    return tuple(shape)


def read_header(path: str | os.PathLike[str]) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Read and check the header of a safetensors file, without reading any tensor data.

    The format is an 8-byte little-endian header length, a JSON header mapping each tensor name
    to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets into the data that
    follows the header), and the data.

    Parameters
    ----------
    path : path-like
        A ``.safetensors`` file.

    Returns
    -------
    tensors : dict of str to TensorInfo
        In the header's order.
    metadata : dict of str to str
        The header's ``__metadata__`` (empty if absent).

    Raises
    ------
    ModelFileError
        If the file is too short, truncated, its header is not valid JSON, names an unknown
        dtype, or gives offsets that do not match the shapes, overlap, leave gaps or run past
        the end of the file.
    FileNotFoundError
        If the file does not exist.
    """
    # The safetensors library checks these things too when it opens a file, and it stays the
    # authority: Checkpoint.get reads every tensor through it.  We check them first, without
    # mapping the file, because its errors are unclear for a learner.  They name neither the
    # file nor, mostly, the tensor ("MetadataIncompleteBuffer", "InvalidOffset"), and they
    # cannot say which of a sharded checkpoint's files is damaged.  Two checks are ours
    # alone: refusing pickles, and the bounds on shapes (MAX_DIMS) that keep a hostile header
    # from costing memory.
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise PickleRefusedError(path)
    size = path.stat().st_size
    if size < 8:
        raise ModelFileError(path, f"only {size} bytes long: not a safetensors file (which "
                                   "starts with an 8-byte header length)")
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > _MAX_HEADER:
            raise ModelFileError(path, f"claims a {n}-byte header: not a safetensors file, "
                                       "or a corrupt one")
        if 8 + n > size:
            raise ModelFileError(path, f"truncated: the header should be {n} bytes but the file "
                                       f"ends {size - 8} bytes after the length prefix")
        raw = f.read(n)
    header = parse_json(path, raw, "the header")
    del raw
    if not isinstance(header, dict):
        raise ModelFileError(path, "the header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise ModelFileError(path, "__metadata__ must map strings to strings")

    data_size = size - 8 - n
    tensors: dict[str, TensorInfo] = {}
    spans = []
    for name, entry in header.items():
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
            raise ModelFileError(path, "header entry needs dtype, shape and data_offsets", name)
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(dtype, str) or dtype not in SAFETENSORS_DTYPES:
            raise ModelFileError(path, f"unknown dtype {_short(dtype)} (safetensors defines "
                                       f"{', '.join(SAFETENSORS_DTYPES)})", name)
        shape = check_shape(path, shape, name)
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(_is_int(o) for o in offsets) or not 0 <= offsets[0] <= offsets[1]):
            raise ModelFileError(path, f"invalid data_offsets {_short(offsets)}", name)
        begin, end = offsets
        bits = math.prod(shape) * SAFETENSORS_DTYPES[dtype]
        expected = -(-bits // 8)
        if end - begin != expected:
            raise ModelFileError(
                path, f"the header is inconsistent: shape {tuple(shape)} of {dtype} needs "
                      f"{expected} bytes but data_offsets {offsets} span {end - begin}", name)
        if end > data_size:
            raise ModelFileError(
                path, f"truncated: the tensor's data runs to byte {end} of the data section, "
                      f"which holds only {data_size} bytes (file size {size})", name)
        tensors[name] = TensorInfo(name, dtype, shape, path, end - begin)
        spans.append((begin, end, name))

    # The data section must be covered exactly: no overlaps, no gaps, nothing after the end.
    position, previous = 0, None
    for begin, end, name in sorted(spans):
        if begin < position:
            raise ModelFileError(path, f"the header is inconsistent: bytes [{begin}, {end}) "
                                       f"overlap tensor {previous!r}", name)
        if begin > position:
            raise ModelFileError(path, f"the header is inconsistent: {begin - position} bytes "
                                       f"before the tensor belong to no tensor", name)
        position, previous = end, name
    if position != data_size:
        raise ModelFileError(path, f"{data_size - position} bytes after the last tensor belong "
                                   "to no tensor: the header does not describe this file")
    return tensors, metadata


class Checkpoint:
    """A model's tensors, from one safetensors file or several shards, read on demand.

    Use :func:`open_checkpoint` to make one.  Tensors are read one at a time with
    :meth:`get` (or ``checkpoint[name]``), so a checkpoint larger than memory can be
    processed tensor by tensor.

    Attributes
    ----------
    path : pathlib.Path
        What was opened (file, index or directory).
    files : list of pathlib.Path
        The safetensors files (shards).
    metadata : dict
        ``__metadata__`` of the first file; for a sharded checkpoint also the index's
        ``metadata`` under the key ``"index"`` (as JSON text).
    """

    def __init__(self, path: Path, infos: dict[str, TensorInfo], files: list[Path],
                 metadata: dict[str, str]):
        self.path = path
        self.files = files
        self.metadata = metadata
        self._infos = infos
        self._handles: dict[Path, object] = {}

    # mapping-like access ------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._infos)

    def __iter__(self) -> Iterator[str]:
        return iter(self._infos)

    def __contains__(self, name: object) -> bool:
        return name in self._infos

    def keys(self) -> list[str]:
        """Tensor names, in file order."""
        return list(self._infos)

    def info(self, name: str) -> TensorInfo:
        """Header information of one tensor (no data is read)."""
        try:
            return self._infos[name]
        except KeyError:
            raise KeyError(f"no tensor {name!r} in {self.path}") from None

    def infos(self) -> list[TensorInfo]:
        """Header information of every tensor."""
        return list(self._infos.values())

    def __getitem__(self, name: str) -> np.ndarray:
        return self.get(name)

    def items(self) -> Iterator[tuple[str, np.ndarray]]:
        """``(name, array)`` pairs, reading one tensor at a time."""
        for name in self._infos:
            yield name, self.get(name)

    @property
    def n_parameters(self) -> int:
        """Total number of elements over all tensors."""
        return sum(i.size for i in self._infos.values())

    @property
    def nbytes(self) -> int:
        """Total bytes of tensor data in the files."""
        return sum(i.nbytes for i in self._infos.values())

    # reading ------------------------------------------------------------------------------
    def _handle(self, file: Path):
        handle = self._handles.get(file)
        if handle is None:
            from safetensors import SafetensorError, safe_open
            try:
                handle = safe_open(str(file), framework="numpy")
            except SafetensorError as exc:
                raise ModelFileError(file, f"safetensors cannot open it: {exc}") from None
            self._handles[file] = handle
        return handle

    def get(self, name: str) -> np.ndarray:
        """Read one tensor into a numpy array of its stored dtype.

        float32, float16 and float64 tensors come back as those numpy dtypes, bfloat16 ones as
        ``ml_dtypes.bfloat16``; integer and bool tensors as numpy integers and bools.

        Raises
        ------
        KeyError
            If there is no such tensor.
        ModelFileError
            If its dtype cannot be represented in numpy (float8, float4, complex, ...) or the
            file cannot be read.
        """
        info = self.info(name)
        dtype = NUMPY_DTYPES.get(info.dtype)
        if dtype is None:
            raise ModelFileError(info.file, f"dtype {info.dtype} is not supported by gqlearn "
                                            f"(it reads {', '.join(NUMPY_DTYPES)})", name)
        from safetensors import SafetensorError
        try:
            array = self._handle(info.file).get_tensor(name)
        except SafetensorError as exc:
            raise ModelFileError(info.file, f"safetensors cannot read it: {exc}", name) from None
        except TypeError as exc:  # old safetensors without numpy bfloat16 support
            raise ModelFileError(info.file, f"this safetensors version cannot give {info.dtype} "
                                            f"as numpy ({exc}); upgrade it: "
                                            "pip install -U safetensors", name) from None
        array = np.asarray(array)
        if array.dtype != dtype and array.dtype.itemsize == dtype.itemsize:
            array = array.view(dtype)
        if array.dtype != dtype or array.shape != info.shape:
            raise ModelFileError(info.file, f"read {array.dtype}{array.shape}, header says "
                                            f"{info.dtype}{info.shape}", name)
        return array

    def close(self) -> None:
        """Release the memory maps."""
        self._handles.clear()

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        shards = f", {len(self.files)} shards" if len(self.files) > 1 else ""
        return (f"Checkpoint({str(self.path)!r}, {len(self)} tensors, "
                f"{self.n_parameters:,} parameters{shards})")


def _confined_shard(index: Path, shard: str, names: list[str]) -> Path:
    """The shard's path, if it stays inside the index's folder once symlinks are resolved.

    An index is data: a ``weight_map`` naming ``../../x`` or ``/etc/passwd`` must not make
    gqlearn read files elsewhere.  The folder is the index's, or, when the index itself is a
    symlink (the Hugging Face cache links ``snapshots/REV/*`` to ``blobs/``), the folder it
    resolves into.
    """
    file = index.parent / shard
    real = file.resolve()
    folders = {index.parent.resolve(), index.resolve().parent}
    if (Path(shard).is_absolute() or ".." in Path(shard).parts
            or not any(real.is_relative_to(folder) for folder in folders)):
        raise ModelFileError(index, f"weight_map names shard {_short(shard)}, which is outside "
                                    "the index's folder; refusing to read it (shards must be "
                                    "files beside the index)", names[0])
    return file


def _open_index(index: Path) -> Checkpoint:
    doc = parse_json(index, index.read_bytes(), "the index")
    weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(weight_map, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
        raise ModelFileError(index, "needs a \"weight_map\" object mapping tensor names to "
                                    "shard file names")
    shards: dict[str, list[str]] = {}
    for name, shard in weight_map.items():
        shards.setdefault(shard, []).append(name)
    headers = {}
    for shard, names in shards.items():
        file = _confined_shard(index, shard, names)
        if Path(shard).suffix.lower() in PICKLE_SUFFIXES:
            raise PickleRefusedError(file)
        if not file.is_file():
            raise ModelFileError(file, f"missing shard: {index.name} lists it for "
                                       f"{len(names)} tensors", names[0])
        headers[shard] = read_header(file)
    infos: dict[str, TensorInfo] = {}
    for name, shard in weight_map.items():
        tensors = headers[shard][0]
        if name not in tensors:
            raise ModelFileError(index.parent / shard, f"{index.name} says this shard holds "
                                                       "the tensor, but it does not", name)
        infos[name] = tensors[name]
    metadata = dict(headers[next(iter(shards))][1]) if shards else {}
    if isinstance(doc.get("metadata"), dict):
        try:
            metadata["index"] = json.dumps(doc["metadata"])
        except RecursionError:  # pragma: no cover - parse_json refuses deeper nesting first
            raise ModelFileError(index, "metadata nested too deeply") from None
    return Checkpoint(index, infos, [index.parent / s for s in shards], metadata)


def _open_files(path: Path, files: list[Path]) -> Checkpoint:
    infos: dict[str, TensorInfo] = {}
    metadata: dict[str, str] = {}
    for file in files:
        tensors, meta = read_header(file)
        metadata = metadata or meta
        for name, info in tensors.items():
            if name in infos:
                raise ModelFileError(file, f"also in {infos[name].file.name}: tensor names "
                                           "must be unique across files", name)
            infos[name] = info
    return Checkpoint(path, infos, files, metadata)


def open_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Open a safetensors model: a file, a sharded checkpoint's index, or a directory.

    Parameters
    ----------
    path : path-like
        A ``.safetensors`` file; a ``model.safetensors.index.json``; or a directory holding
        ``model.safetensors.index.json``, ``model.safetensors`` or other ``.safetensors`` files.

    Returns
    -------
    Checkpoint

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist or a directory holds no model file.
    PickleRefusedError
        If ``path`` is (or a directory holds only) pickle-based checkpoints.
    ModelFileError
        If a file is damaged or a shard is missing (see :func:`read_header`).

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> from safetensors.numpy import save_file
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> save_file({"w": np.ones((2, 4), np.float32)}, str(d / "model.safetensors"))
    >>> ckpt = open_checkpoint(d)
    >>> ckpt.info("w").shape, ckpt["w"].dtype
    ((2, 4), dtype('float32'))
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such model file or directory: {path}")
    if path.is_dir():
        if (path / INDEX_NAME).is_file():
            return _open_index(path / INDEX_NAME)
        if (path / "model.safetensors").is_file():
            return _open_files(path, [path / "model.safetensors"])
        files = sorted(path.glob("*.safetensors"))
        if files:
            return _open_files(path, files)
        pickles = sorted(p for p in path.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
        if pickles:
            raise PickleRefusedError(pickles[0])
        raise FileNotFoundError(f"{path} holds no .safetensors file or {INDEX_NAME}")
    if path.name.endswith(".index.json"):
        return _open_index(path)
    return _open_files(path, [path])
