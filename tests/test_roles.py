"""Tensor roles from names, for BERT, LLaMA (Hugging Face and Meta) and GPT-2 naming."""

import pytest

from gqlearn.roles import (
    GGUF_NAMES,
    KEPT_ROLES,
    LINEAR_ROLES,
    LLAMA_BLOCK_ROLES,
    ROLES,
    classify,
    gguf_name,
    layer_index,
    short_name,
    should_quantize,
)

BERT = {
    "embeddings.word_embeddings.weight": "embedding",
    "embeddings.position_embeddings.weight": "embedding",
    "embeddings.token_type_embeddings.weight": "embedding",
    "embeddings.LayerNorm.weight": "norm",
    "embeddings.LayerNorm.bias": "norm",
    "embeddings.position_ids": "other",
    "encoder.layer.3.attention.self.query.weight": "attn_q",
    "encoder.layer.3.attention.self.query.bias": "bias",
    "encoder.layer.3.attention.self.key.weight": "attn_k",
    "encoder.layer.3.attention.self.value.weight": "attn_v",
    "encoder.layer.3.attention.output.dense.weight": "attn_o",
    "encoder.layer.3.attention.output.dense.bias": "bias",
    "encoder.layer.3.attention.output.LayerNorm.weight": "norm",
    "encoder.layer.3.intermediate.dense.weight": "mlp_up",
    "encoder.layer.3.output.dense.weight": "mlp_down",
    "encoder.layer.3.output.LayerNorm.bias": "norm",
    "bert.encoder.layer.0.attention.self.query.weight": "attn_q",
    "pooler.dense.weight": "other",
    "pooler.dense.bias": "bias",
}
LLAMA = {
    "model.embed_tokens.weight": "embedding",
    "model.layers.7.self_attn.q_proj.weight": "attn_q",
    "model.layers.7.self_attn.k_proj.weight": "attn_k",
    "model.layers.7.self_attn.v_proj.weight": "attn_v",
    "model.layers.7.self_attn.o_proj.weight": "attn_o",
    "model.layers.7.mlp.gate_proj.weight": "mlp_gate",
    "model.layers.7.mlp.up_proj.weight": "mlp_up",
    "model.layers.7.mlp.down_proj.weight": "mlp_down",
    "model.layers.7.input_layernorm.weight": "norm",
    "model.layers.7.post_attention_layernorm.weight": "norm",
    "model.layers.7.self_attn.rotary_emb.inv_freq": "other",
    "model.norm.weight": "norm",
    "lm_head.weight": "lm_head",
    # Meta's original checkpoint names
    "tok_embeddings.weight": "embedding",
    "layers.7.attention.wq.weight": "attn_q",
    "layers.7.attention.wk.weight": "attn_k",
    "layers.7.attention.wv.weight": "attn_v",
    "layers.7.attention.wo.weight": "attn_o",
    "layers.7.feed_forward.w1.weight": "mlp_gate",
    "layers.7.feed_forward.w2.weight": "mlp_down",
    "layers.7.feed_forward.w3.weight": "mlp_up",
    "layers.7.attention_norm.weight": "norm",
    "layers.7.ffn_norm.weight": "norm",
    "norm.weight": "norm",
    "output.weight": "lm_head",
}
GPT2 = {
    "wte.weight": "embedding",
    "wpe.weight": "embedding",
    "h.2.ln_1.weight": "norm",
    "h.2.ln_1.bias": "norm",
    "h.2.attn.c_attn.weight": "attn_qkv",
    "h.2.attn.c_attn.bias": "bias",
    "h.2.attn.c_proj.weight": "attn_o",
    "h.2.ln_2.weight": "norm",
    "h.2.mlp.c_fc.weight": "mlp_up",
    "h.2.mlp.c_proj.weight": "mlp_down",
    "h.2.mlp.c_proj.bias": "bias",
    "transformer.h.2.attn.c_attn.weight": "attn_qkv",
    "transformer.ln_f.weight": "norm",
    "ln_f.bias": "norm",
}


@pytest.mark.parametrize("name, role", [*BERT.items(), *LLAMA.items(), *GPT2.items()])
def test_classify(name, role):
    assert classify(name) == role
    assert role in ROLES


@pytest.mark.parametrize("name, layer", [
    ("encoder.layer.3.output.dense.weight", 3), ("model.layers.31.mlp.up_proj.weight", 31),
    ("layers.0.attention.wq.weight", 0), ("h.11.attn.c_attn.weight", 11),
    ("transformer.h.2.ln_1.weight", 2), ("model.norm.weight", None), ("wte.weight", None),
])
def test_layer_index(name, layer):
    assert layer_index(name) == layer


def test_linear_roles_are_quantized_and_norms_biases_kept():
    for name, role in {**BERT, **LLAMA, **GPT2}.items():
        if role in LINEAR_ROLES:
            assert should_quantize(name, (8, 8)), name
        if role in KEPT_ROLES:
            assert not should_quantize(name, (8, 8)), name


def test_should_quantize_rules():
    name = "model.layers.0.self_attn.q_proj.weight"
    assert should_quantize(name, (64, 64))
    assert not should_quantize(name, (64,))  # 1-D
    assert not should_quantize(name, (64, 64), is_float=False)
    assert not should_quantize(name, (64, 64), roles=["mlp_up"])
    assert should_quantize(name, (64, 64), roles=["attn_q"])


def test_short_name():
    assert short_name("model.layers.12.mlp.down_proj.weight") == "L12.mlp_down"
    assert short_name("lm_head.weight") == "lm_head.weight"


def test_gguf_names_speak_the_roles_vocabulary():
    assert set(LLAMA_BLOCK_ROLES) <= set(LINEAR_ROLES) and set(GGUF_NAMES) == set(LLAMA_BLOCK_ROLES)
    for layer in (0, 29):
        for role in LLAMA_BLOCK_ROLES:
            assert classify(gguf_name(role, layer)) == role
            assert layer_index(gguf_name(role, layer)) == layer
    assert gguf_name("attn_o", 2) == "blk.2.attn_output.weight"
    with pytest.raises(ValueError, match="attn_qkv"):
        gguf_name("attn_qkv", 0)

