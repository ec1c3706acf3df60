"""Shared helpers for the model tests: generated checkpoints.

The real MiniLM fixture, ``minilm_dir``, is in conftest.py, where pytest finds it without an
import.
"""

import json

import ml_dtypes
import numpy as np
from safetensors.numpy import save_file


def make_sharded_bf16(directory, rng, n_layers=4, shards=2):
    """A LLaMA-named bf16 checkpoint split over ``shards`` files with an index."""
    tensors = {"model.embed_tokens.weight": rng.normal(size=(32, 64))}
    for i in range(n_layers):
        p = f"model.layers.{i}."
        tensors[p + "self_attn.q_proj.weight"] = rng.normal(size=(64, 64))
        tensors[p + "mlp.down_proj.weight"] = rng.normal(size=(64, 96))
        tensors[p + "input_layernorm.weight"] = rng.normal(size=64)
    tensors["model.norm.weight"] = np.ones(64)
    tensors = {k: v.astype(ml_dtypes.bfloat16) for k, v in tensors.items()}
    names = list(tensors)
    weight_map = {}
    for s in range(shards):
        shard = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[s::shards]}
        save_file(part, str(directory / shard), metadata={"format": "pt"})
        weight_map.update({n: shard for n in part})
    index = {"metadata": {"total_size": sum(v.nbytes for v in tensors.values())},
             "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    return tensors
