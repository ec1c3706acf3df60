"""The command line: python -m gqlearn explore / fetch."""

import json
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import save_file

import gqlearn
from gqlearn.__main__ import main
from gqlearn.models import load_quantized
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


def test_fetch_command(monkeypatch, tmp_path, capsys):
    from gqlearn.models import fetch

    monkeypatch.setattr(fetch, "fetch_default_model", lambda quiet, force: tmp_path)
    assert main(["fetch", "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path)


def test_python_dash_m(model_file):
    proc = subprocess.run([sys.executable, "-m", "gqlearn", "--version"], capture_output=True,
                          text=True, check=True)
    assert proc.stdout.strip() == f"gqlearn {gqlearn.__version__}"
    proc = subprocess.run([sys.executable, "-m", "gqlearn", "explore", str(model_file), "--json"],
                          capture_output=True, text=True, check=True)
    assert json.loads(proc.stdout)["totals"]["n_tensors"] == 2
    assert proc.stderr == ""  # no progress bar when stderr is not a terminal
