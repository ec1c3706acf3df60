"""Build a :class:`~gqlearn.llm.llama.Llama` from a GGUF file: its config and float32 weights.

:mod:`gqlearn.io.gguf` reads the file (metadata, tensors dequantized one at a time); this module
knows what a LLaMA model needs from it: the ``llama.*`` metadata keys and the weights by GGUF name.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ..io.fetch import fetch_model
from ..io.gguf import (
    GGUFError,
    GGUFSource,
    as_reader,
    field_value,
    iter_gguf_tensors,
    open_gguf,
    require_field,
)
from .llama import Llama, LlamaConfig
from .tokenizer import tokenizer_from_gguf

__all__ = ["read_llama_config", "load_gguf", "load_llama", "load_smollm2"]


def read_llama_config(source: GGUFSource) -> LlamaConfig:
    """The :class:`LlamaConfig` in a GGUF file's metadata (``llama.*`` keys).

    Parameters
    ----------
    source : path or reader
        A GGUF file, or a reader from :func:`open_gguf`.

    Raises
    ------
    GGUFError
        If the architecture is not ``llama`` or a required key is missing.
    """
    reader, path = as_reader(source)
    arch = require_field(reader, path, "general.architecture")
    if arch != "llama":
        raise GGUFError(f"{path}: architecture is {arch!r}, not 'llama'")
    vocab = reader.get_field("llama.vocab_size")
    tokens = reader.get_field("tokenizer.ggml.tokens")
    if vocab is not None:
        try:
            vocab_size = int(field_value(vocab, path))
        except (TypeError, ValueError, OverflowError) as exc:
            if isinstance(exc, GGUFError):
                raise
            raise GGUFError(path, f"llama.vocab_size is not a number: {exc}") from None
    elif tokens is not None:
        vocab_size = len(tokens.data)
    else:
        raise GGUFError(f"{path}: neither llama.vocab_size nor tokenizer.ggml.tokens is present")
    ctx = reader.get_field("llama.context_length")

    def num(key: str) -> int:
        return int(require_field(reader, path, key))

    def f32(key: str) -> float:  # the shortest decimal that is the stored float32
        return float(str(np.float32(require_field(reader, path, key))))

    try:
        return LlamaConfig(
            vocab_size=vocab_size, hidden_size=num("llama.embedding_length"),
            n_layers=num("llama.block_count"), n_heads=num("llama.attention.head_count"),
            n_kv_heads=num("llama.attention.head_count_kv"),
            ffn_size=num("llama.feed_forward_length"), rope_base=f32("llama.rope.freq_base"),
            rms_eps=f32("llama.attention.layer_norm_rms_epsilon"),
            context_length=int(field_value(ctx, path)) if ctx is not None else 2048)
    except GGUFError:
        raise
    except (ValueError, TypeError, OverflowError) as exc:  # a string or array where a number
        raise GGUFError(path, f"the llama.* metadata is not a valid configuration: "
                              f"{exc}") from None


def load_gguf(source: GGUFSource) -> tuple[LlamaConfig, dict[str, np.ndarray]]:
    """The config and all tensors (float32) of a LLaMA-architecture GGUF file (or reader)."""
    reader, _ = as_reader(source)
    return read_llama_config(reader), dict(iter_gguf_tensors(reader))


def load_llama(source: GGUFSource) -> Llama:
    """A :class:`Llama` with the float32 (dequantized) weights of a GGUF file.

    Raises
    ------
    GGUFError
        If the file is malformed, or lacks a tensor the model needs or has one of the wrong
        shape.
    """
    reader, path = as_reader(source)
    config, weights = load_gguf(reader)
    try:
        return Llama(config, weights)
    except ValueError as exc:
        raise GGUFError(f"{path}: {exc}") from exc


def load_smollm2(*, quiet: bool = False) -> tuple[Llama, Any]:
    """SmolLM2-135M-Instruct with float32 weights, and its tokenizer; loaded once per process.

    The first call fetches the GGUF file if needed (``fetch_model("smollm2")``; ``quiet``
    silences its one-line message) and dequantizes its weights (about 540 MB of float32);
    later calls return the same objects, so treat the model's weights as read-only (quantized
    copies come from :meth:`Llama.with_weights`).
    """
    return _load_cached(str(fetch_model("smollm2", quiet=quiet)))


@functools.lru_cache(maxsize=1)
def _load_cached(path: str) -> tuple[Llama, Any]:
    reader = open_gguf(path)
    return load_llama(reader), tokenizer_from_gguf(reader)
