"""A GGUF writer for the tests: small LLaMA-architecture files that gqlearn.io.gguf reads.

The library only reads GGUF; tests need files with known weights, in several ggml types, with
or without a tokenizer.  Test modules import it by name (``from gguf_writer import
save_llama_gguf``), like ``models_helpers``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from gqlearn.llm.llama import LlamaConfig

__all__ = ["save_llama_gguf"]


def save_llama_gguf(path: str | os.PathLike[str], config: LlamaConfig,
                    weights: dict[str, np.ndarray], *, matrix_type: str = "F32",
                    tokenizer: dict[str, list[Any]] | None = None) -> Path:
    """Write a LLaMA-architecture GGUF file (small random models for the tests).

    Parameters
    ----------
    path : path
    config : LlamaConfig
    weights : dict of str to numpy.ndarray
        By GGUF name, numpy layout; 1-D tensors are stored as F32.
    matrix_type : str, default "F32"
        ggml type of the 2-D tensors: ``"F32"``, ``"F16"``, ``"Q8_0"``, ``"Q4_1"``, ...
        (quantized with ``gguf.quants.quantize``; their last axis must be a multiple of the
        format's block size).
    tokenizer : dict, optional
        ``{"tokens": [...], "merges": [...], "token_types": [...]}`` for a byte-level BPE
        tokenizer (``tokenizer.ggml.model = "gpt2"``, pre-tokenizer ``"smollm"``).

    Returns
    -------
    pathlib.Path
    """
    import gguf
    from gguf import quants

    path = Path(path)
    qtype = gguf.GGMLQuantizationType[matrix_type]
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        _write_llama_gguf(gguf, quants, qtype, Path(tmp), config, weights, tokenizer)
        os.replace(tmp, path)  # readers see the old file or the whole new one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _write_llama_gguf(gguf: Any, quants: Any, qtype: Any, path: Path, config: LlamaConfig,
                      weights: dict[str, np.ndarray],
                      tokenizer: dict[str, list[Any]] | None) -> None:
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_vocab_size(config.vocab_size)
    writer.add_context_length(config.context_length)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.n_layers)
    writer.add_feed_forward_length(config.ffn_size)
    writer.add_head_count(config.n_heads)
    writer.add_head_count_kv(config.n_kv_heads)
    writer.add_rope_freq_base(config.rope_base)
    writer.add_layer_norm_rms_eps(config.rms_eps)
    if tokenizer is not None:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("smollm")
        writer.add_token_list(tokenizer["tokens"])
        writer.add_token_merges(tokenizer["merges"])
        writer.add_token_types(tokenizer.get("token_types", [1] * len(tokenizer["tokens"])))
    for name, w in weights.items():
        w = np.ascontiguousarray(w, dtype=np.float32)
        if w.ndim == 1 or qtype == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(name, w)
        elif qtype == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(name, w.astype(np.float16))
        else:
            writer.add_tensor(name, quants.quantize(w, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
