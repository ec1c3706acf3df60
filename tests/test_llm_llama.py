"""The numpy LLaMA forward pass: against an independent reference, KV cache, and SmolLM2."""

from __future__ import annotations

import numpy as np
import pytest

from gqlearn.llm import KVCache, Llama, LlamaConfig, load_sample_text, load_smollm2, perplexity
from gqlearn.llm.llama import permute_qk, rms_norm, rope, silu, unpermute_qk, unpermuted_qk_weights
from gqlearn.roles import LLAMA_BLOCK_ROLES, classify

TINY = LlamaConfig(vocab_size=64, hidden_size=48, n_layers=2, n_heads=6, n_kv_heads=2,
                   ffn_size=80, rope_base=100.0, rms_eps=1e-5, context_length=64)


def hf_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf permutation of q/k rows (rotate_half -> adjacent pairs),
    written out here independently of gqlearn.llm.llama.permute_qk."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def test_permute_qk_matches_converter_and_inverts() -> None:
    w = np.random.default_rng(0).standard_normal((24, 5)).astype(np.float32)
    np.testing.assert_array_equal(permute_qk(w, 3), hf_permute(w, 3))
    np.testing.assert_array_equal(unpermute_qk(permute_qk(w, 3), 3), w)
    np.testing.assert_array_equal(permute_qk(unpermute_qk(w, 2), 2), w)


def hf_reference(cfg: LlamaConfig, w: dict[str, np.ndarray], ids: list[int]) -> np.ndarray:
    """A deliberately plain float64 LLaMA in Hugging Face's convention (rotate_half RoPE,
    repeat_kv), one query and one head at a time; ``w`` holds *unpermuted* q/k weights."""
    w = {k: v.astype(np.float64) for k, v in w.items()}
    t_len, hd, rep = len(ids), cfg.head_dim, cfg.n_heads // cfg.n_kv_heads

    def norm(x, g):
        return x / np.sqrt((x ** 2).mean(-1, keepdims=True) + cfg.rms_eps) * g

    def rotate_half(v):
        return np.concatenate([-v[..., hd // 2:], v[..., :hd // 2]], axis=-1)

    inv = cfg.rope_base ** (-np.arange(0, hd, 2) / hd)
    ang = np.arange(t_len)[:, None] * inv[None, :]
    cos = np.cos(np.concatenate([ang, ang], -1))[:, None, :]
    sin = np.sin(np.concatenate([ang, ang], -1))[:, None, :]
    x = w["token_embd.weight"][ids]
    for i in range(cfg.n_layers):
        p = f"blk.{i}."
        h = norm(x, w[p + "attn_norm.weight"])
        q = (h @ w[p + "attn_q.weight"].T).reshape(t_len, cfg.n_heads, hd)
        k = (h @ w[p + "attn_k.weight"].T).reshape(t_len, cfg.n_kv_heads, hd)
        v = (h @ w[p + "attn_v.weight"].T).reshape(t_len, cfg.n_kv_heads, hd)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        out = np.zeros((t_len, cfg.n_heads, hd))
        for head in range(cfg.n_heads):
            kvh = head // rep
            for t in range(t_len):
                s = k[:t + 1, kvh] @ q[t, head] / np.sqrt(hd)
                pr = np.exp(s - s.max())
                out[t, head] = (pr / pr.sum()) @ v[:t + 1, kvh]
        x = x + out.reshape(t_len, -1) @ w[p + "attn_output.weight"].T
        h = norm(x, w[p + "ffn_norm.weight"])
        g = h @ w[p + "ffn_gate.weight"].T
        x = x + (((g / (1 + np.exp(-g))) * (h @ w[p + "ffn_up.weight"].T))
                 @ w[p + "ffn_down.weight"].T)
    return norm(x, w["output_norm.weight"]) @ w["token_embd.weight"].T


@pytest.fixture(scope="module")
def tiny() -> Llama:
    return Llama.random(TINY, seed=1)


def to_gguf_layout(model: Llama) -> Llama:
    """The same model as llama.cpp's converter would store it (q/k rows permuted)."""
    c = model.config
    perm = {}
    for i in range(c.n_layers):
        perm[f"blk.{i}.attn_q.weight"] = hf_permute(model.weights[f"blk.{i}.attn_q.weight"],
                                                    c.n_heads)
        perm[f"blk.{i}.attn_k.weight"] = hf_permute(model.weights[f"blk.{i}.attn_k.weight"],
                                                    c.n_kv_heads)
    return model.with_weights(perm)


def test_matches_hugging_face_reference_after_converter_permutation(tiny: Llama) -> None:
    ids = [3, 17, 5, 60, 0, 22, 9, 41, 13]
    ref = hf_reference(TINY, tiny.weights, ids)
    ours = to_gguf_layout(tiny).forward(ids)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)


def test_adjacent_pair_rope_needs_the_permutation(tiny: Llama) -> None:
    # Without the converter's permutation the adjacent-pair rotation is a different model.
    ids = [3, 17, 5, 60, 0, 22, 9, 41, 13]
    ref = hf_reference(TINY, tiny.weights, ids)
    assert np.abs(tiny.forward(ids) - ref).max() > 1e-2


def test_first_position_ignores_rope(tiny: Llama) -> None:
    # Position 0 rotates by angle 0, so the permutation does not matter there.
    ids = [7]
    np.testing.assert_allclose(tiny.forward(ids), to_gguf_layout(tiny).forward(ids), rtol=1e-5,
                               atol=1e-5)


def test_causal_prefix_logits_do_not_depend_on_later_tokens(tiny: Llama) -> None:
    a = tiny.forward([1, 2, 3, 4, 5])
    b = tiny.forward([1, 2, 3, 9, 9])
    np.testing.assert_allclose(a[:3], b[:3], rtol=1e-5, atol=1e-5)
    assert not np.allclose(a[3:], b[3:])


def test_kv_cache_matches_full_forward(tiny: Llama) -> None:
    ids = [5, 8, 13, 21, 34, 55, 2, 1]
    full = tiny.forward(ids)
    cache = KVCache()
    parts = [tiny.forward(ids[:3], cache)]
    parts += [tiny.forward([t], cache) for t in ids[3:]]
    assert len(cache) == len(ids)
    np.testing.assert_allclose(np.concatenate(parts), full, rtol=1e-4, atol=1e-4)
    last = tiny.forward(ids, last_only=True)
    np.testing.assert_allclose(last, full[-1:], rtol=1e-5, atol=1e-5)


def test_generate_is_greedy_argmax_rerun(tiny: Llama) -> None:
    ids = [1, 2, 3]
    new = tiny.generate(ids, 5)
    seq = list(ids)
    for _ in range(5):  # re-running the whole prefix must give the same tokens
        seq.append(int(np.argmax(tiny.forward(seq)[-1])))
    assert new == seq[len(ids):]
    assert tiny.generate(ids, 0) == []
    assert tiny.generate(ids, 5, stop_ids=[new[0]]) == []
    k = next(j for j in range(1, 5) if new[j] not in new[:j])  # first new distinct token
    assert tiny.generate(ids, 5, stop_ids=[new[k]]) == new[:k]


def test_helpers() -> None:
    x = np.array([[3.0, 4.0]], dtype=np.float32)
    np.testing.assert_allclose(rms_norm(x, np.ones(2, np.float32), 0.0),
                               x / np.sqrt(12.5), rtol=1e-6)
    z = np.array([-1000.0, -1.0, 0.0, 2.0, 1000.0], dtype=np.float32)
    with np.errstate(all="raise"):  # no overflow for large |x|
        got = silu(z)
    np.testing.assert_allclose(got, [0.0, -1 / (1 + np.e), 0.0, 2 / (1 + np.exp(-2)), 1000.0],
                               rtol=1e-6, atol=1e-6)
    # rope at position p turns each adjacent pair by p * base**(-2i/hd)
    v = np.zeros((1, 1, 4), dtype=np.float32)
    v[0, 0, 0] = 1.0
    r = rope(v, np.array([2]), base=100.0)
    np.testing.assert_allclose(r[0, 0], [np.cos(2.0), np.sin(2.0), 0, 0], atol=1e-6)


def test_config_and_weight_errors(tiny: Llama) -> None:
    with pytest.raises(ValueError, match="multiple of n_kv_heads"):
        LlamaConfig(vocab_size=8, hidden_size=12, n_layers=1, n_heads=3, n_kv_heads=2, ffn_size=4)
    with pytest.raises(ValueError, match="even size"):
        LlamaConfig(vocab_size=8, hidden_size=9, n_layers=1, n_heads=3, n_kv_heads=1, ffn_size=4)
    with pytest.raises(ValueError, match="positive integer"):
        LlamaConfig(vocab_size=0, hidden_size=8, n_layers=1, n_heads=2, n_kv_heads=1, ffn_size=4)
    weights = dict(tiny.weights)
    del weights["blk.1.ffn_up.weight"]
    with pytest.raises(ValueError, match="missing weights.*blk.1.ffn_up"):
        Llama(TINY, weights)
    with pytest.raises(ValueError, match="shape"):
        tiny.with_weights({"blk.0.attn_q.weight": np.zeros((3, 3), np.float32)})
    with pytest.raises(ValueError, match="unknown weight"):
        tiny.with_weights({"nope": np.zeros(3)})
    with pytest.raises(ValueError, match="token ids"):
        tiny.forward([TINY.vocab_size])
    with pytest.raises(ValueError, match="at least one"):
        tiny.forward([])


def test_linear_names_and_with_weights_shares_arrays(tiny: Llama) -> None:
    names = tiny.linear_names()
    assert len(names) == 7 * TINY.n_layers
    assert names[0] == "blk.0.attn_q.weight" and names[-1] == "blk.1.ffn_down.weight"
    assert [classify(n) for n in names] == list(LLAMA_BLOCK_ROLES) * TINY.n_layers
    zero = np.zeros_like(tiny.weights["blk.0.ffn_up.weight"])
    m2 = tiny.with_weights({"blk.0.ffn_up.weight": zero})
    assert m2.weights["blk.0.attn_q.weight"] is tiny.weights["blk.0.attn_q.weight"]
    assert m2.weights["blk.0.ffn_up.weight"] is not tiny.weights["blk.0.ffn_up.weight"]
    assert "parameters=" in repr(tiny)


# --- the real model -------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2():
    return load_smollm2(quiet=True)


def test_smollm2_says_paris(smollm2) -> None:
    model, tok = smollm2
    ids = tok.encode("The capital of France is").ids
    assert tok.decode(model.generate(ids, 1)) == " Paris"


def test_smollm2_logits_stable_run_to_run(smollm2) -> None:
    model, tok = smollm2
    ids = tok.encode("Alice was beginning to get very tired").ids
    a, b = model.forward(ids), model.forward(ids)
    assert a.shape == (len(ids), 49152) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)


def test_smollm2_config(smollm2) -> None:
    model, _ = smollm2
    c = model.config
    assert (c.n_layers, c.hidden_size, c.n_heads, c.n_kv_heads, c.head_dim, c.ffn_size,
            c.vocab_size) == (30, 576, 9, 3, 64, 1536, 49152)
    assert c.rope_base == 100000.0
    assert model.n_parameters == 134_515_008
    assert model.output_name == "token_embd.weight"  # tied


def test_smollm2_adjacent_rope_beats_half_split(smollm2) -> None:
    # Empirical check of the RoPE layout on the real weights: undoing the converter's
    # permutation of q/k (so that adjacent pairs act like Hugging Face's half split on the
    # wrong dimensions) makes the text far less likely.
    model, tok = smollm2
    ids = tok.encode(load_sample_text()).ids[:80]
    inv = unpermuted_qk_weights(model)
    good = perplexity(model.forward(ids), ids)
    bad = perplexity(model.with_weights(inv).forward(ids), ids)
    assert good < 60 and bad > 2 * good
