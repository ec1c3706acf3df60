import dataclasses

import pytest

import gqlearn
from gqlearn.memory import GB, LLAMA2_CONFIGS, ModelShape, bits_per_weight, memory_table
from gqlearn.roles import LLAMA_BLOCK_ROLES

PUBLISHED = {"LLaMA-2 7B": 6.74e9, "LLaMA-2 13B": 13.0e9, "LLaMA-2 70B": 69.0e9}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_counts_match_published(name):
    m = LLAMA2_CONFIGS[name]
    assert m.n_params == pytest.approx(PUBLISHED[name], rel=5e-3)
    assert m.n_params == m.n_linear_params + m.n_embedding_params + m.n_norm_params


def test_exact_counts():
    # the parameter counts of the released checkpoints (sum of all tensor sizes)
    assert LLAMA2_CONFIGS["LLaMA-2 7B"].n_params == 6_738_415_616
    assert LLAMA2_CONFIGS["LLaMA-2 13B"].n_params == 13_015_864_320
    assert LLAMA2_CONFIGS["LLaMA-2 70B"].n_params == 68_976_648_192


def test_linear_shapes_70b_gqa():
    m = LLAMA2_CONFIGS["LLaMA-2 70B"]
    shapes = {role: (shape, count) for role, shape, count in m.linear_shapes()}
    assert shapes["attn_k"] == ((1024, 8192), 80)  # 8 kv heads of 128
    assert shapes["attn_q"] == ((8192, 8192), 80)
    assert shapes["mlp_down"] == ((8192, 28672), 80)
    assert m.head_dim == 128
    assert m.n_linear_params == sum(o * i * c for _, (o, i), c in m.linear_shapes())
    assert [role for role, _, _ in m.linear_shapes()] == list(LLAMA_BLOCK_ROLES)


def test_linear_share_stated_in_the_docstring():
    # memory.py's docstring: "96.1 % of LLaMA-2 7B's parameters, 99.2 % of 70B's"
    share = {k: m.n_linear_params / m.n_params for k, m in LLAMA2_CONFIGS.items()}
    assert round(100 * share["LLaMA-2 7B"], 1) == 96.1
    assert round(100 * share["LLaMA-2 70B"], 1) == 99.2


def test_model_shape_is_frozen_and_validated():
    m = LLAMA2_CONFIGS["LLaMA-2 7B"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.hidden = 1  # type: ignore[misc]  # the assignment must raise
    with pytest.raises(ValueError, match="n_heads"):
        ModelShape("x", 100, 200, 1, 3, 3, 10, False)
    with pytest.raises(ValueError, match="n_kv_heads"):
        ModelShape("x", 96, 200, 1, 4, 3, 10, False)
    with pytest.raises(ValueError, match="hidden"):
        ModelShape("x", 0, 200, 1, 4, 4, 10, False)


def test_tied_embeddings_count_once():
    a = ModelShape("a", 64, 128, 2, 4, 4, 100, tied_embeddings=False)
    b = dataclasses.replace(a, tied_embeddings=True)
    assert a.n_params - b.n_params == 100 * 64


@pytest.mark.parametrize("bits, g, sb, expected", [(8, 32, 32, 9.0), (8, 4, 32, 16.0),
                                                   (4, 128, 16, 4.125), (8, 4096, 32, 8.0078125)])
def test_bits_per_weight(bits, g, sb, expected):
    assert bits_per_weight(bits, g, sb) == expected


def test_bits_per_weight_agrees_with_quantized_tensor():
    import numpy as np
    w = np.ones((4, 256), np.float32)
    for g in (4, 32, 256):
        assert gqlearn.quantize(w, g).bits_per_weight == bits_per_weight(8, g)


@pytest.mark.parametrize("args", [(0, 32), (8, 0), (8, 2.5), (8, 32, -1), (True, 32)])
def test_bits_per_weight_errors(args):
    with pytest.raises(ValueError):
        bits_per_weight(*args)


def test_memory_table_7b():
    m = LLAMA2_CONFIGS["LLaMA-2 7B"]
    rows = memory_table(m, [32, 64, 128, 256])
    assert [r["group_size"] for r in rows] == [32, 64, 128, 256]
    n = m.n_linear_params
    for r in rows:
        g = r["group_size"]
        assert r["scale_gb"] == pytest.approx(n / g * 4 / GB)
        assert r["values_gb"] == pytest.approx(n / GB)
        assert r["kept_gb"] == pytest.approx((m.n_params - n) * 2 / GB)
        assert r["quantized_gb"] == pytest.approx(r["values_gb"] + r["scale_gb"] + r["kept_gb"])
        assert r["baseline_gb"] == pytest.approx(m.n_params * 2 / GB)
        assert r["ratio"] == pytest.approx(r["baseline_gb"] / r["quantized_gb"])
        assert r["bits_per_weight"] == 8 + 32 / g
    assert [r["scale_gb"] for r in rows] == sorted((r["scale_gb"] for r in rows), reverse=True)


def test_overhead_fraction_of_linear_layers_is_model_independent():
    for g in (32, 64, 128, 256):
        fracs = []
        for m in LLAMA2_CONFIGS.values():
            r = memory_table(m, [g])[0]
            fracs.append(r["scale_gb"] / (r["values_gb"] + r["scale_gb"]))
        assert max(fracs) == pytest.approx(min(fracs), rel=1e-12)
        assert fracs[0] == pytest.approx((32 / g) / (8 + 32 / g))


def test_70b_float32_with_embeddings_is_275_9_gb():
    m = LLAMA2_CONFIGS["LLaMA-2 70B"]
    r = memory_table(m, [256], baseline="float32", quantize_embeddings=True)[0]
    assert r["baseline_gb"] == pytest.approx(275.9, abs=0.1)
    assert r["quantized_gb"] == pytest.approx(m.n_params * (1 + 4 / 256) / GB, rel=1e-3)
    bf16 = memory_table(m, [256])[0]
    assert bf16["baseline_gb"] == pytest.approx(137.95, abs=0.01)


def test_memory_table_4_bits_and_fp16_scales():
    m = LLAMA2_CONFIGS["LLaMA-2 13B"]
    r = memory_table(m, [128], bits=4, scale_bits=16)[0]
    assert r["values_gb"] == pytest.approx(m.n_linear_params / 2 / GB)
    assert r["scale_gb"] == pytest.approx(m.n_linear_params / 128 * 2 / GB)
    assert r["bits_per_weight"] == 4.125


def test_memory_table_errors():
    m = LLAMA2_CONFIGS["LLaMA-2 7B"]
    with pytest.raises(ValueError, match="choose_group_size"):
        memory_table(m, [512])  # 11008 = 2**8 * 43
    with pytest.raises(ValueError, match="baseline"):
        memory_table(m, [128], baseline="int8")
    with pytest.raises(TypeError):
        memory_table("LLaMA-2 7B", [128])  # type: ignore[arg-type]  # a name, not a shape
    with pytest.raises(ValueError, match="group_size"):
        memory_table(m, [0])
