"""What each tensor of a transformer checkpoint does, read from its name.

This is gqlearn's one vocabulary for what a weight matrix does (``attn_q`` ... ``mlp_down``):
the explorer, the memory accounting (:mod:`gqlearn.memory`) and the numpy LLaMA
(:mod:`gqlearn.llm.llama`, through :data:`GGUF_NAMES`) all speak it.  Checkpoints name their
tensors after the module that owns them, and three naming schemes cover most models:

=========  ===========================  ===========================  ============================
role       BERT (``encoder.layer.N.``)  LLaMA (``model.layers.N.``)  GPT-2 (``h.N.``)
=========  ===========================  ===========================  ============================
attn_q     ``attention.self.query``     ``self_attn.q_proj``         (fused: attn_qkv)
attn_k     ``attention.self.key``       ``self_attn.k_proj``
attn_v     ``attention.self.value``     ``self_attn.v_proj``
attn_qkv                                                             ``attn.c_attn``
attn_o     ``attention.output.dense``   ``self_attn.o_proj``         ``attn.c_proj``
mlp_gate                                ``mlp.gate_proj``
mlp_up     ``intermediate.dense``       ``mlp.up_proj``              ``mlp.c_fc``
mlp_down   ``output.dense``             ``mlp.down_proj``            ``mlp.c_proj``
embedding  ``*_embeddings``             ``embed_tokens``             ``wte``, ``wpe``
norm       ``LayerNorm``                ``*_layernorm``, ``norm``    ``ln_1``, ``ln_2``, ``ln_f``
lm_head                                 ``lm_head``                  ``lm_head``
=========  ===========================  ===========================  ============================

Meta's original LLaMA names (``attention.wq`` ... ``feed_forward.w1/w2/w3``,
``tok_embeddings``, ``output``) are recognised too, and so are llama.cpp's GGUF names
(``blk.N.attn_q`` ... ``attn_output``, ``ffn_gate/up/down``, ``token_embd``, ``output``;
:data:`GGUF_NAMES` maps the seven :data:`LLAMA_BLOCK_ROLES` to them, since a GGUF file is
keyed by those names).

Biases of linear layers get the role ``bias``, a norm's weight and bias the role ``norm``;
anything else (BERT's pooler, buffers such as ``position_ids``) is ``other``.  GPT-2's
``attn.bias`` causal-mask buffer ends in ``.bias`` and is reported as a bias, which keeps it
unquantized as it should be.

Quantizers in practice keep norms and biases in float: they are tiny (a vector per layer) and
errors in them shift every activation.  :func:`should_quantize` encodes that policy.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["ROLES", "LINEAR_ROLES", "KEPT_ROLES", "LLAMA_BLOCK_ROLES", "GGUF_NAMES", "gguf_name",
           "llama_block_shapes", "keep_reason", "classify", "layer_index", "should_quantize",
           "short_name"]

LINEAR_ROLES = ("attn_q", "attn_k", "attn_v", "attn_qkv", "attn_o", "mlp_gate", "mlp_up",
                "mlp_down")
KEPT_ROLES = ("norm", "bias")
ROLES = (*LINEAR_ROLES, "embedding", "lm_head", "norm", "bias", "other")

# The seven matrices of a LLaMA block (separate q, k, v; a SwiGLU MLP), in forward-pass order.
LLAMA_BLOCK_ROLES = ("attn_q", "attn_k", "attn_v", "attn_o", "mlp_gate", "mlp_up", "mlp_down")
# llama.cpp's GGUF tensor name of each (blk.{i}.{name}.weight).  GGUF files are keyed by these
# names, so the numpy LLaMA keeps them as its weight keys and lists its matrices through here.
GGUF_NAMES = {"attn_q": "attn_q", "attn_k": "attn_k", "attn_v": "attn_v", "attn_o": "attn_output",
              "mlp_gate": "ffn_gate", "mlp_up": "ffn_up", "mlp_down": "ffn_down"}

# Checked in order against the dotted name with its final ".weight" / ".bias" removed;
# the first match wins.  Each pattern must match at the end of the module path.
_RAW_PATTERNS = [
    ("norm", r"(^|\.)([a-z_]*norm[a-z_0-9]*|ln_[a-z0-9]+|ln)"),
    ("embedding", r"(^|\.)(word_embeddings|position_embeddings|token_type_embeddings|"
                  r"embed_tokens|embed_positions|wte|wpe|tok_embeddings|token_embd|embeddings?)"),
    ("lm_head", r"(^|\.)(lm_head|output|embed_out)"),
    ("attn_q", r"(attention\.self\.query|\.q_proj|attention\.wq|\.query|\.attn_q)"),
    ("attn_k", r"(attention\.self\.key|\.k_proj|attention\.wk|\.key|\.attn_k)"),
    ("attn_v", r"(attention\.self\.value|\.v_proj|attention\.wv|\.value|\.attn_v)"),
    ("attn_qkv", r"(\.c_attn|\.qkv_proj|\.query_key_value|\.wqkv|\.qkv)"),
    ("attn_o", r"(attention\.output\.dense|\.o_proj|attn\.c_proj|attention\.wo|\.out_proj|"
               r"attention\.dense|\.attn_output)"),
    ("mlp_gate", r"(\.gate_proj|feed_forward\.w1|\.ffn_gate)"),
    ("mlp_up", r"(intermediate\.dense|\.up_proj|mlp\.c_fc|feed_forward\.w3|\.fc1|"
               r"dense_h_to_4h|\.ffn_up)"),
    ("mlp_down", r"(^|\.)(output\.dense|down_proj|c_proj|w2|fc2|dense_4h_to_h|ffn_down)"),
]
_PATTERNS = [(role, re.compile(p + r"$", re.IGNORECASE)) for role, p in _RAW_PATTERNS]

_LAYER = re.compile(r"(?:^|\.)(?:layers?|h|blocks?|blk)\.(\d+)\.")


def classify(name: str) -> str:
    """The role of a tensor, from its name.

    Parameters
    ----------
    name : str
        Tensor name as stored in the checkpoint.

    Returns
    -------
    str
        One of :data:`ROLES`.

    Examples
    --------
    >>> classify("encoder.layer.0.attention.self.query.weight")
    'attn_q'
    >>> classify("encoder.layer.0.output.dense.weight")
    'mlp_down'
    >>> classify("model.layers.3.mlp.gate_proj.weight")
    'mlp_gate'
    >>> [classify(n) for n in ("h.11.attn.c_attn.weight", "h.11.ln_1.bias", "h.0.mlp.c_fc.bias")]
    ['attn_qkv', 'norm', 'bias']
    """
    module, _, leaf = name.rpartition(".")  # "a.b.weight" -> "a.b", "weight"
    if not module:
        module, leaf = name, ""
    if leaf not in ("weight", "bias", ""):
        return "other"  # buffers such as position_ids or rotary inv_freq
    for role, pattern in _PATTERNS:
        if pattern.search(module) or (role == "norm" and pattern.search(name)):
            return "bias" if role != "norm" and leaf == "bias" else role
    return "bias" if leaf == "bias" else "other"


def llama_block_shapes(hidden: int, ffn: int, kv: int) -> dict[str, tuple[int, int]]:
    """``(out_features, in_features)`` of each LLaMA block matrix, by role.

    ``kv`` is ``n_kv_heads * head_dim``: the width of ``attn_k`` and ``attn_v``, narrower than
    ``hidden`` with grouped-query attention.

    >>> llama_block_shapes(576, 1536, 192)["attn_k"], llama_block_shapes(576, 1536, 192)["mlp_down"]
    ((192, 576), (576, 1536))
    """
    return {"attn_q": (hidden, hidden), "attn_k": (kv, hidden), "attn_v": (kv, hidden),
            "attn_o": (hidden, hidden), "mlp_gate": (ffn, hidden), "mlp_up": (ffn, hidden),
            "mlp_down": (hidden, ffn)}


def gguf_name(role: str, layer: int) -> str:
    """The GGUF tensor name of a LLaMA block matrix: ``blk.{layer}.{GGUF_NAMES[role]}.weight``.

    Raises
    ------
    ValueError
        If ``role`` is not one of :data:`LLAMA_BLOCK_ROLES`.

    Examples
    --------
    >>> gguf_name("attn_o", 3), gguf_name("mlp_gate", 0)
    ('blk.3.attn_output.weight', 'blk.0.ffn_gate.weight')
    >>> classify(gguf_name("mlp_down", 1))
    'mlp_down'
    """
    if role not in GGUF_NAMES:
        raise ValueError(f"a LLaMA block has no {role!r} matrix; roles are {LLAMA_BLOCK_ROLES}")
    return f"blk.{layer}.{GGUF_NAMES[role]}.weight"


def layer_index(name: str) -> int | None:
    """The transformer block a tensor belongs to, or None outside the blocks.

    >>> layer_index("encoder.layer.5.intermediate.dense.weight")
    5
    >>> layer_index("model.layers.31.mlp.up_proj.weight"), layer_index("h.2.ln_1.weight")
    (31, 2)
    >>> layer_index("embeddings.word_embeddings.weight") is None
    True
    """
    match = _LAYER.search(name)
    return int(match.group(1)) if match else None


def keep_reason(name: str, shape: Sequence[int], is_float: bool = True,
                roles: Sequence[str] | None = None) -> str | None:
    """Why a tensor stays unquantized, or None if it gets quantized.

    A tensor is quantized when it is a float matrix whose role is not a norm or a bias (and,
    if ``roles`` is given, one of those roles).

    Parameters
    ----------
    name : str
    shape : sequence of int
    is_float : bool, default True
        Integer buffers (e.g. BERT's ``position_ids``) are never quantized.
    roles : sequence of str, optional
        Quantize only these roles (default: every role except ``norm`` and ``bias``).

    Returns
    -------
    str or None
        ``"integer buffer"``, ``"norm"``, ``"bias"``, ``"1-D"`` or ``"role not selected"``.

    >>> keep_reason("encoder.layer.0.attention.self.query.weight", (384, 384)) is None
    True
    >>> keep_reason("encoder.layer.0.attention.self.query.bias", (384,))
    'bias'
    >>> keep_reason("embeddings.word_embeddings.weight", (30522, 384), roles=["attn_q"])
    'role not selected'
    """
    role = classify(name)
    if not is_float:
        return "integer buffer"
    if role in KEPT_ROLES:
        return role
    if len(shape) < 2:
        return "1-D"
    return None if roles is None or role in roles else "role not selected"


def should_quantize(name: str, shape: Sequence[int], is_float: bool = True,
                    roles: Sequence[str] | None = None) -> bool:
    """Whether a tensor gets quantized: :func:`keep_reason` gives no reason to keep it.

    >>> should_quantize("encoder.layer.0.attention.self.query.weight", (384, 384))
    True
    >>> should_quantize("encoder.layer.0.output.LayerNorm.weight", (384,))
    False
    """
    return keep_reason(name, shape, is_float, roles) is None


def short_name(name: str) -> str:
    """A compact label for plots: ``L3.attn_q`` for block tensors, else the name.

    >>> short_name("encoder.layer.3.attention.self.query.weight")
    'L3.attn_q'
    """
    layer = layer_index(name)
    return name if layer is None else f"L{layer}.{classify(name)}"
