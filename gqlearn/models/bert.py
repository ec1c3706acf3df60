"""A BERT sentence encoder in numpy: enough to run all-MiniLM-L6-v2 without torch.

The forward pass is the standard BERT encoder (post-LayerNorm, exact erf GELU), followed by
what sentence-transformers does for all-MiniLM-L6-v2 (its ``modules.json``): mean pooling over
the real (non-padding) tokens, then L2 normalisation.  Tokenization uses the model's own
``tokenizer.json`` through the ``tokenizers`` package, truncated to the model's
``max_seq_length`` (256 word pieces).

Everything is float32 unless float64 is asked for.  :meth:`SentenceEncoder.with_weights`
swaps in other weights (for example quantized-then-dequantized ones) to see what quantization
does to the embeddings.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io.fetch import fetch_model
from ..io.safetensors import open_checkpoint

__all__ = ["BertConfig", "SentenceEncoder", "gelu", "erf", "layer_norm", "cosine_similarity"]


@dataclass(frozen=True)
class BertConfig:
    """The fields of a BERT ``config.json`` the forward pass needs."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> BertConfig:
        fields = cls.__dataclass_fields__
        config = cls(**{k: d[k] for k in fields if k in d})  # type: ignore[arg-type]  # JSON values
        if config.hidden_act != "gelu":
            raise ValueError(f"only hidden_act='gelu' (exact erf GELU) is implemented, "
                             f"got {config.hidden_act!r}")
        if config.hidden_size % config.num_attention_heads:
            raise ValueError("hidden_size must be a multiple of num_attention_heads")
        return config

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> BertConfig:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


# Abramowitz & Stegun 7.1.26: |error| < 1.5e-7, about float32's resolution near 1.
_AS_P = 0.3275911
_AS_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def erf(x: np.ndarray) -> np.ndarray:
    """Error function, vectorized (numpy has none), accurate to 1.5e-7.

    >>> import math
    >>> xs = np.linspace(-4, 4, 81)
    >>> bool(np.abs(erf(xs) - [math.erf(v) for v in xs]).max() < 1.5e-7)
    True
    """
    x = np.asarray(x, dtype=np.float64)
    a = np.abs(x)
    t = 1.0 / (1.0 + _AS_P * a)
    poly = t * (_AS_A[0] + t * (_AS_A[1] + t * (_AS_A[2] + t * (_AS_A[3] + t * _AS_A[4]))))
    return np.copysign(1.0 - poly * np.exp(-a * a), x)


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact GELU, ``x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))``, as BERT's ``"gelu"``."""
    return (0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))).astype(x.dtype, copy=False)


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    """LayerNorm over the last axis, in the dtype of ``x``."""
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    var = (centred * centred).mean(axis=-1, keepdims=True)
    return centred / np.sqrt(var + x.dtype.type(eps)) * weight + bias


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two ``(n, d)`` arrays, computed in float64."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


_MAX_BATCH_TOKENS = 2048


class SentenceEncoder:
    """BERT encoder + mean pooling + L2 normalisation, in numpy.

    Parameters
    ----------
    weights : mapping of str to numpy.ndarray
        The checkpoint's tensors by name (a ``bert.`` prefix is accepted); converted to ``dtype``.
    config : BertConfig
    tokenizer : tokenizers.Tokenizer
    max_seq_length : int, default 256
        Longer inputs are truncated to this many word pieces (including [CLS] and [SEP]).
    dtype : {numpy.float32, numpy.float64}, default float32
        Arithmetic precision.  float32 is what the model runs in; float64 makes the last digits
        independent of the machine's BLAS, so small differences caused by quantized weights can
        be printed reproducibly.

    Examples
    --------
    Use :meth:`from_pretrained` to load all-MiniLM-L6-v2 (fetching it on first use)::

        enc = SentenceEncoder.from_pretrained()
        emb = enc.encode(["A sentence.", "Another one."])   # (2, 384), unit rows
    """

    def __init__(self, weights: Mapping[str, np.ndarray], config: BertConfig, tokenizer,
                 max_seq_length: int = 256, dtype: type = np.float32):
        self.config = config
        self.tokenizer = tokenizer
        self.max_seq_length = int(max_seq_length)
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype}")
        self.weights = {self._strip(k): np.asarray(v, dtype=self.dtype)
                        for k, v in weights.items() if np.asarray(v).dtype.kind == "f"
                        or np.asarray(v).dtype.name == "bfloat16"}
        missing = [n for n in self.required_weights() if n not in self.weights]
        if missing:
            raise KeyError(f"weights lack {len(missing)} tensors the encoder needs, "
                           f"e.g. {missing[0]!r}")

    @staticmethod
    def _strip(name: str) -> str:
        return name[len("bert."):] if name.startswith("bert.") else name

    def required_weights(self) -> list[str]:
        """Names of the tensors the forward pass reads."""
        names = ["embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
                 "embeddings.token_type_embeddings.weight", "embeddings.LayerNorm.weight",
                 "embeddings.LayerNorm.bias"]
        for i in range(self.config.num_hidden_layers):
            p = f"encoder.layer.{i}."
            for m in ("attention.self.query", "attention.self.key", "attention.self.value",
                      "attention.output.dense", "attention.output.LayerNorm",
                      "intermediate.dense", "output.dense", "output.LayerNorm"):
                names += [p + m + ".weight", p + m + ".bias"]
        return names

    @classmethod
    def from_pretrained(cls, model_dir: str | os.PathLike[str] | None = None, *,
                        dtype: type = np.float32) -> SentenceEncoder:
        """Load ``config.json``, ``tokenizer.json`` and the safetensors weights of a directory.

        Parameters
        ----------
        model_dir : path-like, optional
            Default: all-MiniLM-L6-v2, ``gqlearn.io.fetch_model("minilm")``.
        dtype : {numpy.float32, numpy.float64}, default float32
        """
        from tokenizers import Tokenizer

        model_dir = Path(model_dir) if model_dir is not None else fetch_model("minilm")
        config = BertConfig.from_json(model_dir / "config.json")
        tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        max_len = 256
        st_config = model_dir / "sentence_bert_config.json"
        if st_config.is_file():
            max_len = int(json.loads(st_config.read_text())["max_seq_length"])
        with open_checkpoint(model_dir) as ckpt:
            weights = {name: ckpt[name] for name in ckpt if ckpt.info(name).is_float}
        return cls(weights, config, tokenizer, max_seq_length=max_len, dtype=dtype)

    def with_weights(self, replacements: Mapping[str, np.ndarray]) -> SentenceEncoder:
        """A copy of this encoder with some tensors replaced (e.g. dequantized weights)."""
        weights = dict(self.weights)
        for name, value in replacements.items():
            key = self._strip(name)
            if key not in weights:
                raise KeyError(f"no tensor {name!r} to replace")
            if np.shape(value) != weights[key].shape:
                raise ValueError(f"{name}: shape {np.shape(value)} != {weights[key].shape}")
            weights[key] = value
        return SentenceEncoder(weights, self.config, self.tokenizer, self.max_seq_length,
                               self.dtype.type)

    def tokenize(self, sentences: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Token ids, token type ids and attention mask, padded to the longest sentence.

        Returns
        -------
        ids, type_ids, mask : numpy.ndarray
            int64 arrays of shape ``(len(sentences), longest)``; ``mask`` is 1 for real tokens.
        """
        if isinstance(sentences, str):
            raise TypeError("pass a list of sentences, not a single string")
        tok = self.tokenizer
        tok.no_padding()
        tok.enable_truncation(max_length=self.max_seq_length)
        encodings = tok.encode_batch(list(sentences))
        longest = max((len(e.ids) for e in encodings), default=0)
        shape = (len(encodings), longest)
        ids, types, mask = (np.zeros(shape, np.int64) for _ in range(3))
        for row, e in enumerate(encodings):
            n = len(e.ids)
            ids[row, :n] = e.ids
            types[row, :n] = e.type_ids
            mask[row, :n] = 1
        return ids, types, mask

    def forward(self, ids: np.ndarray, type_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Last hidden states, ``(batch, seq, hidden)``, in the encoder's dtype."""
        c, w = self.config, self.weights
        batch, seq = ids.shape
        x = (w["embeddings.word_embeddings.weight"][ids]
             + w["embeddings.position_embeddings.weight"][np.arange(seq)][None]
             + w["embeddings.token_type_embeddings.weight"][type_ids])
        x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"],
                       c.layer_norm_eps)
        heads, hd = c.num_attention_heads, c.head_dim
        # Padding positions get -inf-like scores, so softmax gives them weight exactly 0.
        bias = np.where(mask[:, None, None, :] > 0, 0.0, np.finfo(np.float32).min)
        bias = bias.astype(self.dtype)
        scale = self.dtype.type(1.0 / math.sqrt(hd))

        def linear(h: np.ndarray, name: str) -> np.ndarray:
            # One 2-D matmul per layer lets numpy hand the work to BLAS in a single call.
            out = h.reshape(-1, h.shape[-1]) @ w[name + ".weight"].T + w[name + ".bias"]
            return out.reshape(*h.shape[:-1], -1)

        def split(h: np.ndarray) -> np.ndarray:  # (b, s, H*d) -> (b, H, s, d)
            return h.reshape(batch, seq, heads, hd).transpose(0, 2, 1, 3)

        for i in range(c.num_hidden_layers):
            p = f"encoder.layer.{i}."
            q = split(linear(x, p + "attention.self.query"))
            k = split(linear(x, p + "attention.self.key"))
            v = split(linear(x, p + "attention.self.value"))
            # einsum, not @: many small matmuls are slow in multithreaded BLAS on busy machines.
            scores = np.einsum("bhsd,bhtd->bhst", q, k) * scale + bias
            scores -= scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            ctx = np.einsum("bhst,bhtd->bshd", probs, v).reshape(batch, seq, heads * hd)
            x = layer_norm(linear(ctx, p + "attention.output.dense") + x,
                           w[p + "attention.output.LayerNorm.weight"],
                           w[p + "attention.output.LayerNorm.bias"], c.layer_norm_eps)
            h = gelu(linear(x, p + "intermediate.dense"))
            x = layer_norm(linear(h, p + "output.dense") + x, w[p + "output.LayerNorm.weight"],
                           w[p + "output.LayerNorm.bias"], c.layer_norm_eps)
        return x

    def encode(self, sentences: Sequence[str], *, batch_size: int = 32,
               normalize: bool = True) -> np.ndarray:
        """Sentence embeddings: mean of the token states over real tokens, L2-normalised.

        Parameters
        ----------
        sentences : sequence of str
        batch_size : int, default 32
            Most sentences per forward pass (they are sorted by length first and batches are
            also capped at 2048 tokens, so little padding is done).
        normalize : bool, default True
            Divide each embedding by its L2 norm, as all-MiniLM-L6-v2's ``Normalize`` module does.

        Returns
        -------
        numpy.ndarray
            ``(len(sentences), hidden_size)``, in the encoder's dtype.
        """
        sentences = list(sentences)
        if isinstance(sentences, str) or not all(isinstance(s, str) for s in sentences):
            raise TypeError("sentences must be a list of str")
        out = np.zeros((len(sentences), self.config.hidden_size), self.dtype)
        if not sentences:
            return out
        # Batch sentences of similar length, so little work is spent on padding.
        tok = self.tokenizer
        tok.no_padding()
        tok.enable_truncation(max_length=self.max_seq_length)
        lengths = [len(e.ids) for e in tok.encode_batch(sentences)]
        order = sorted(range(len(sentences)), key=lambda i: lengths[i])
        batches: list[list[int]] = [[]]
        for i in order:
            if batches[-1] and (len(batches[-1]) >= batch_size
                                or (len(batches[-1]) + 1) * lengths[i] > _MAX_BATCH_TOKENS):
                batches.append([])
            batches[-1].append(i)
        for rows in batches:
            ids, types, mask = self.tokenize([sentences[i] for i in rows])
            hidden = self.forward(ids, types, mask)
            m = mask[..., None].astype(self.dtype)
            pooled = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
            out[rows] = pooled
        if normalize:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out /= np.maximum(norms, 1e-12)
        return out
