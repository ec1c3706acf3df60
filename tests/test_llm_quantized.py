import numpy as np
import pytest

import gqlearn
from gqlearn.llm import (
    KVCache,
    Llama,
    LlamaConfig,
    QuantizedLlama,
    fake_quantize_linear_weights,
    load_smollm2,
    perplexity,
)

CFG = LlamaConfig(vocab_size=64, hidden_size=48, n_layers=2, n_heads=6, n_kv_heads=2,
                  ffn_size=96)
EPS = float(np.finfo(np.float32).eps)


@pytest.fixture(scope="module")
def model():
    return Llama.random(CFG, seed=3)


def _fake(model, bits, g, include_embedding):
    qw = fake_quantize_linear_weights(model, bits, g, include_embedding=include_embedding)
    return model.with_weights(qw.weights), qw


@pytest.mark.parametrize("backend", gqlearn.available_backends())
@pytest.mark.parametrize("bits,g,emb", [(8, 32, False), (8, 16, True), (4, 32, True),
                                        (3, 48, False), (2, 16, True)])
def test_logits_match_fake_quantized_model(model, backend, bits, g, emb):
    q = QuantizedLlama.from_model(model, bits, g, include_embedding=emb, backend=backend)
    fake, qw = _fake(model, bits, g, emb)
    ids = [5, 17, 3, 60, 1, 9, 33]
    a, b = q.forward(ids), fake.forward(ids)
    assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max()
    assert len(q.quantized) == 14 + emb
    assert q.n_parameters == model.n_parameters
    # the quantized matrices hold what the fake-quantized model computes with
    for name, qt in q.quantized.items():
        assert np.array_equal(qt.dequantize(), qw.weights[name])


def test_decode_with_cache_matches_full_forward(model):
    q = QuantizedLlama.from_model(model, 4, 16, include_embedding=True, backend="numpy")
    ids = [2, 7, 1, 8, 2, 8]
    full = q.forward(ids)
    cache = KVCache()
    steps = [q.forward(ids[:3], cache)[-1]] + [q.forward([t], cache)[0] for t in ids[3:]]
    np.testing.assert_allclose(np.stack(steps), full[2:], rtol=1e-5, atol=1e-5)
    assert q.generate(ids, 4) == _fake(model, 4, 16, True)[0].generate(ids, 4)


def test_weight_nbytes_counts_packed_values_and_scales(model):
    q = QuantizedLlama.from_model(model, 4, 16, include_embedding=True)
    n_quantized = sum(qt.size for qt in q.quantized.values())
    assert n_quantized == sum(model.weights[n].size for n in q.quantized)
    floats = sum(w.nbytes for w in q.weights.values())
    assert q.weight_nbytes == floats + n_quantized // 2 + 4 * n_quantized // 16
    assert "token_embd.weight" not in q.weights


def test_errors(model):
    with pytest.raises(TypeError, match="per-tensor"):
        QuantizedLlama.from_model(model, 8, None)
    q = QuantizedLlama.from_model(model, 8, 16)
    with pytest.raises(TypeError, match="QuantizedLlama"):
        q.with_weights({})
    with pytest.raises(ValueError, match="missing weight"):
        QuantizedLlama(CFG, {}, {})


@pytest.fixture(scope="module")
def smollm2():
    return load_smollm2(quiet=True)


@pytest.mark.slow
@pytest.mark.parametrize("bits", [8, 4])
def test_smollm2_quantized_logits_and_perplexity_match_fake_quantization(smollm2, bits):
    model, tok = smollm2
    ids = tok.encode("The capital of France is Paris, and the capital of Italy is").ids
    q = QuantizedLlama.from_model(model, bits, 32, include_embedding=True)
    fake, _ = _fake(model, bits, 32, True)
    a, b = q.forward(ids), fake.forward(ids)
    assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max()
    assert perplexity(a, ids) == pytest.approx(perplexity(b, ids), rel=1e-5)
    # one token at a time: the numba matvec path
    cache = KVCache()
    steps = np.concatenate([q.forward([t], cache) for t in ids[:6]])
    assert np.abs(steps - b[:6]).max() <= 1e-4 * np.abs(b).max()
