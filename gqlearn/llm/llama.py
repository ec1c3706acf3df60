"""A small numpy forward pass of the LLaMA decoder architecture, in float32.

One block, as the code below runs it (``x`` is the residual stream, one row per token)::

    h = rms_norm(x) * attn_norm
    q, k, v = h @ Wq.T, h @ Wk.T, h @ Wv.T           # 9 query heads, 3 key/value heads
    q, k = rope(q), rope(k)                           # rotate pairs by position
    x = x + attention(q, k, v, causal) @ Wo.T         # each K/V head serves 3 query heads
    h = rms_norm(x) * ffn_norm
    x = x + (silu(h @ Wgate.T) * (h @ Wup.T)) @ Wdown.T

and after the last block ``logits = rms_norm(x) * output_norm @ E.T`` with ``E`` the token
embedding (tied: the same matrix reads tokens in and scores them out).

Weights keep their GGUF names (``blk.0.attn_q.weight``, ``token_embd.weight``, ...) and the
``(out_features, in_features)`` layout, so a quantized copy is a dict with the same keys.

Rotary embeddings on adjacent pairs
-----------------------------------
Hugging Face's LLaMA rotates dimension ``i`` of each head with dimension ``i + head_dim/2``
("rotate_half").  llama.cpp's converter permutes the rows of ``Wq`` and ``Wk`` so that the same
rotation acts on *adjacent* dimensions ``(2i, 2i+1)``, which is what ggml's LLaMA RoPE does.
A GGUF checkpoint therefore needs adjacent-pair RoPE; ``tests/test_llm_llama.py`` checks it
against a Hugging Face-style reference on unpermuted weights, and on SmolLM2 the half-split
rotation gives a clearly worse perplexity (see the test).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..roles import LLAMA_BLOCK_ROLES, gguf_name, llama_block_shapes

__all__ = ["LlamaConfig", "Llama", "KVCache", "rms_norm", "rope", "silu",
           "permute_qk", "unpermute_qk", "unpermuted_qk_weights"]


@dataclass(frozen=True)
class LlamaConfig:
    """Shape and constants of a LLaMA-architecture decoder.

    Attributes
    ----------
    vocab_size, hidden_size, n_layers, n_heads, n_kv_heads, ffn_size : int
        Vocabulary, residual width, blocks, query heads, key/value heads (grouped-query
        attention when fewer than ``n_heads``), MLP width.
    rope_base : float
        RoPE frequency base (``theta``); 100000 for SmolLM2.
    rms_eps : float
        Epsilon inside RMSNorm's square root.
    context_length : int
        Longest sequence the model was trained for.
    """

    vocab_size: int
    hidden_size: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    ffn_size: int
    rope_base: float = 10000.0
    rms_eps: float = 1e-5
    context_length: int = 2048

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "n_layers", "n_heads", "n_kv_heads",
                     "ffn_size", "context_length"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.n_heads or (self.hidden_size // self.n_heads) % 2:
            raise ValueError(f"hidden_size {self.hidden_size} must split into {self.n_heads} "
                             f"heads of even size")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads {self.n_heads} must be a multiple of n_kv_heads "
                             f"{self.n_kv_heads}")

    @property
    def head_dim(self) -> int:
        """Width of one attention head, ``hidden_size // n_heads``."""
        return self.hidden_size // self.n_heads

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of every weight the model needs, by GGUF name."""
        d = self.hidden_size
        matrices = llama_block_shapes(d, self.ffn_size, self.n_kv_heads * self.head_dim)
        shapes: dict[str, tuple[int, ...]] = {"token_embd.weight": (self.vocab_size, d)}
        for i in range(self.n_layers):
            # in file order: each norm, then the matrices it feeds (attention 4, MLP 3)
            shapes[f"blk.{i}.attn_norm.weight"] = (d,)
            shapes.update({gguf_name(r, i): matrices[r] for r in LLAMA_BLOCK_ROLES[:4]})
            shapes[f"blk.{i}.ffn_norm.weight"] = (d,)
            shapes.update({gguf_name(r, i): matrices[r] for r in LLAMA_BLOCK_ROLES[4:]})
        shapes["output_norm.weight"] = (d,)
        return shapes


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """``x / sqrt(mean(x**2) + eps) * weight`` over the last axis, in float32."""
    inv = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + np.float32(eps))
    return (x * inv.astype(np.float32)) * weight


def silu(x: np.ndarray) -> np.ndarray:
    """``x * sigmoid(x)``, written with tanh so no exponential can overflow."""
    return x * (np.float32(0.5) + np.float32(0.5) * np.tanh(np.float32(0.5) * x))


def rope(x: np.ndarray, positions: np.ndarray, base: float) -> np.ndarray:
    """Rotary position embedding on adjacent pairs ``(2i, 2i+1)`` of each head.

    Parameters
    ----------
    x : numpy.ndarray
        ``(T, n_heads, head_dim)`` queries or keys.
    positions : numpy.ndarray
        ``(T,)`` integer positions of the tokens.
    base : float
        Frequency base: pair ``i`` turns by ``position * base**(-2i / head_dim)``.
    """
    t, h, hd = x.shape
    inv_freq = np.float32(base) ** (-np.arange(0, hd, 2, dtype=np.float32) / np.float32(hd))
    angle = positions.astype(np.float32)[:, None] * inv_freq[None, :]  # (T, hd/2)
    cos, sin = np.cos(angle)[:, None, :], np.sin(angle)[:, None, :]
    pairs = x.reshape(t, h, hd // 2, 2)
    x0, x1 = pairs[..., 0], pairs[..., 1]
    out = np.empty_like(pairs)
    out[..., 0] = x0 * cos - x1 * sin
    out[..., 1] = x0 * sin + x1 * cos
    return out.reshape(t, h, hd)


def permute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's converter permutation of a q or k weight (Hugging Face -> GGUF layout).

    Within each head, output row ``j`` (first half) and ``j + head_dim/2`` (second half)
    become rows ``2j`` and ``2j + 1``, so Hugging Face's rotate-half RoPE becomes RoPE on
    adjacent pairs.  ``n_heads`` is the number of heads of that matrix (key/value heads for k).

    >>> permute_qk(np.arange(4.0)[:, None], 1).ravel()
    array([0., 2., 1., 3.])
    """
    rows = w.shape[0]
    return (w.reshape(n_heads, 2, rows // n_heads // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def unpermute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Inverse of :func:`permute_qk` (GGUF -> Hugging Face layout).

    >>> unpermute_qk(permute_qk(np.arange(8.0)[:, None], 2), 2).ravel()
    array([0., 1., 2., 3., 4., 5., 6., 7.])
    """
    rows = w.shape[0]
    return (w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def unpermuted_qk_weights(model: Llama) -> dict[str, np.ndarray]:
    """Every q and k weight of ``model`` with the converter's permutation undone (GGUF ->
    Hugging Face layout), by name, for :meth:`Llama.with_weights`."""
    c = model.config
    return {f"blk.{i}.{kind}.weight": unpermute_qk(model.weights[f"blk.{i}.{kind}.weight"], heads)
            for i in range(c.n_layers)
            for kind, heads in (("attn_q", c.n_heads), ("attn_k", c.n_kv_heads))}


@dataclass
class KVCache:
    """Keys (after RoPE) and values of the tokens seen so far, one pair per block.

    Each array is ``(n_kv_heads, T, head_dim)``; :meth:`Llama.forward` appends to them.
    """

    keys: list[np.ndarray] = field(default_factory=list)
    values: list[np.ndarray] = field(default_factory=list)

    def __len__(self) -> int:
        """Number of cached tokens."""
        return self.keys[0].shape[1] if self.keys else 0


class Llama:
    """A LLaMA-architecture decoder with float32 numpy weights.

    Parameters
    ----------
    config : LlamaConfig
    weights : mapping of str to numpy.ndarray
        Every weight of :meth:`LlamaConfig.weight_shapes`, by GGUF name, in the
        ``(out_features, in_features)`` layout; converted to C-contiguous float32 once.

    Raises
    ------
    ValueError
        If a weight is missing or has the wrong shape.
    """

    def __init__(self, config: LlamaConfig, weights: Mapping[str, np.ndarray]) -> None:
        self.config = config
        expected = config.weight_shapes()
        missing = [name for name in expected if name not in weights]
        if missing:
            raise ValueError(f"missing weights: {missing[:5]}"
                             + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
        if "output.weight" in weights:  # an untied output matrix (SmolLM2 has none)
            expected["output.weight"] = expected["token_embd.weight"]
        self.weights: dict[str, np.ndarray] = {}
        for name, shape in expected.items():
            w = np.ascontiguousarray(weights[name], dtype=np.float32)
            if w.shape != shape:
                raise ValueError(f"{name} has shape {w.shape}, expected {shape}")
            self.weights[name] = w

    @property
    def output_name(self) -> str:
        """The output (logits) matrix: ``output.weight`` if present, else the tied embedding."""
        return "output.weight" if "output.weight" in self.weights else "token_embd.weight"

    @classmethod
    def random(cls, config: LlamaConfig, seed: int = 0) -> Llama:
        """A model with random weights (for tests and experiments), seeded.

        Matrices are normal with standard deviation ``1/sqrt(in_features)``, the embedding
        standard deviation 0.1, the norm weights ``1 + 0.1 * normal``.

        >>> cfg = LlamaConfig(vocab_size=50, hidden_size=16, n_layers=2, n_heads=4,
        ...                   n_kv_heads=2, ffn_size=32)
        >>> Llama.random(cfg).forward([1, 2, 3]).shape
        (3, 50)
        """
        rng = np.random.default_rng(seed)
        weights = {}
        for name, shape in config.weight_shapes().items():
            if len(shape) == 1:
                w = 1.0 + 0.1 * rng.standard_normal(shape)
            elif name == "token_embd.weight":
                w = 0.1 * rng.standard_normal(shape)
            else:
                w = rng.standard_normal(shape) / np.sqrt(shape[1])
            weights[name] = w.astype(np.float32)
        return cls(config, weights)

    def linear_names(self) -> list[str]:
        """GGUF names of the block matrices (7 per block; not the embedding, not the norms).

        In the order of :data:`gqlearn.roles.LLAMA_BLOCK_ROLES` within each block.
        """
        return [gguf_name(role, i) for i in range(self.config.n_layers)
                for role in LLAMA_BLOCK_ROLES]

    def with_weights(self, replacements: Mapping[str, np.ndarray]) -> Llama:
        """A model sharing this one's weights except ``replacements`` (e.g. quantized ones)."""
        unknown = set(replacements) - set(self.weights)
        if unknown:
            raise ValueError(f"unknown weight names: {sorted(unknown)[:5]}")
        return Llama(self.config, {**self.weights, **replacements})

    @property
    def n_parameters(self) -> int:
        """Number of weights (the tied embedding counted once)."""
        return sum(w.size for w in self.weights.values())

    def _linear(self, h: np.ndarray, name: str) -> np.ndarray:
        """``h @ W.T`` for the matrix ``name`` (a quantized model overrides this)."""
        return h @ self.weights[name].T

    def _embed(self, ids: np.ndarray) -> np.ndarray:
        """The embedding rows of ``ids``, a float32 copy."""
        return self.weights["token_embd.weight"][ids]

    def _attention(self, i: int, h: np.ndarray, positions: np.ndarray,
                   cache: KVCache | None) -> np.ndarray:
        c = self.config
        t, hd, n_kv = h.shape[0], c.head_dim, c.n_kv_heads
        rep = c.n_heads // n_kv  # query heads per key/value head
        q = self._linear(h, f"blk.{i}.attn_q.weight").reshape(t, c.n_heads, hd)
        k = self._linear(h, f"blk.{i}.attn_k.weight").reshape(t, n_kv, hd)
        v = self._linear(h, f"blk.{i}.attn_v.weight").reshape(t, n_kv, hd)
        q = rope(q, positions, c.rope_base) * np.float32(1.0 / np.sqrt(hd))
        k = rope(k, positions, c.rope_base).transpose(1, 0, 2)  # (n_kv, T, hd)
        v = v.transpose(1, 0, 2)
        if cache is not None:
            if len(cache.keys) > i:
                k = np.concatenate([cache.keys[i], k], axis=1)
                v = np.concatenate([cache.values[i], v], axis=1)
                cache.keys[i], cache.values[i] = k, v
            else:
                cache.keys.append(k)
                cache.values.append(v)
        # Group the query heads by the key/value head they share: (n_kv, rep * T, hd).
        q = q.reshape(t, n_kv, rep, hd).transpose(1, 2, 0, 3).reshape(n_kv, rep * t, hd)
        scores = (q @ k.transpose(0, 2, 1)).reshape(n_kv, rep, t, k.shape[1])
        if t > 1:  # causal mask: query at position p sees keys at positions <= p
            future = positions[:, None] < np.arange(k.shape[1])[None, :]
            scores[:, :, future] = -np.inf
        scores -= scores.max(axis=-1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=-1, keepdims=True)
        out = scores.reshape(n_kv, rep * t, -1) @ v  # (n_kv, rep * T, hd)
        out = out.reshape(n_kv, rep, t, hd).transpose(2, 0, 1, 3).reshape(t, c.hidden_size)
        return self._linear(out, f"blk.{i}.attn_output.weight")

    def _mlp(self, i: int, h: np.ndarray) -> np.ndarray:
        gate = silu(self._linear(h, f"blk.{i}.ffn_gate.weight"))
        gate *= self._linear(h, f"blk.{i}.ffn_up.weight")
        return self._linear(gate, f"blk.{i}.ffn_down.weight")

    def forward(self, ids: Sequence[int] | np.ndarray, cache: KVCache | None = None, *,
                last_only: bool = False) -> np.ndarray:
        """Logits for each position of ``ids``: row ``j`` scores the token after ``ids[j]``.

        Parameters
        ----------
        ids : sequence of int
            Token ids, continuing the tokens already in ``cache`` (if any).
        cache : KVCache, optional
            Keys and values of earlier tokens; extended in place with those of ``ids``.
        last_only : bool, default False
            Return only the last position's logits (shape ``(1, vocab)``), skipping the
            output matrix for the others.

        Returns
        -------
        numpy.ndarray
            float32 logits, ``(len(ids), vocab_size)`` (or ``(1, vocab_size)``).
        """
        c, w = self.config, self.weights
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size == 0:
            raise ValueError("ids must hold at least one token")
        if ids.min() < 0 or ids.max() >= c.vocab_size:
            raise ValueError(f"token ids must lie in [0, {c.vocab_size}), got {ids.min()}.."
                             f"{ids.max()}")
        start = len(cache) if cache is not None else 0
        positions = np.arange(start, start + ids.size)
        x = self._embed(ids)  # (T, d), a copy
        for i in range(c.n_layers):
            x += self._attention(i, rms_norm(x, w[f"blk.{i}.attn_norm.weight"], c.rms_eps),
                                 positions, cache)
            x += self._mlp(i, rms_norm(x, w[f"blk.{i}.ffn_norm.weight"], c.rms_eps))
        if last_only:
            x = x[-1:]
        return self._linear(rms_norm(x, w["output_norm.weight"], c.rms_eps), self.output_name)

    def generate(self, ids: Sequence[int], max_new_tokens: int, *,
                 stop_ids: Sequence[int] = ()) -> list[int]:
        """Greedy decoding with a KV cache: the new token ids (``stop_ids`` not included).

        Parameters
        ----------
        ids : sequence of int
            The prompt's token ids.
        max_new_tokens : int
            At most this many tokens are generated.
        stop_ids : sequence of int, optional
            Stop when one of these is the most likely next token (e.g. end of text).
        """
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        cache = KVCache()
        logits = self.forward(ids, cache, last_only=True)
        new: list[int] = []
        while len(new) < max_new_tokens:
            token = int(np.argmax(logits[-1]))
            if token in stop_ids:
                break
            new.append(token)
            if len(new) < max_new_tokens:
                logits = self.forward([token], cache, last_only=True)
        return new

    def __repr__(self) -> str:
        c = self.config
        return (f"Llama(layers={c.n_layers}, hidden={c.hidden_size}, heads={c.n_heads}, "
                f"kv_heads={c.n_kv_heads}, ffn={c.ffn_size}, vocab={c.vocab_size}, "
                f"parameters={self.n_parameters:,})")
