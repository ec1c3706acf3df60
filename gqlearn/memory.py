"""Memory accounting for group-wise quantized models: bits per weight, scale overhead, model sizes.

Conventions
-----------
* **GB means 10**9 bytes** (as model cards and download pages count), not GiB (2**30).
* Quantized values are counted packed at ``bits`` bits each; every group stores one scale of
  ``scale_bits`` bits (float32 by default, as :class:`gqlearn.QuantizedTensor` does), so a
  quantized weight costs ``bits + scale_bits / group_size`` bits (:func:`bits_per_weight`).
* In :func:`memory_table` only the linear layers of the transformer blocks are quantized (the
  seven projections of each LLaMA layer: 96.1 % of LLaMA-2 7B's parameters, 97.5 % of 13B's,
  99.2 % of 70B's, as :class:`ModelShape` computes; nearly all the rest is the two vocabulary
  matrices, a larger share in a smaller model).  The token embedding, the
  output projection (``lm_head``) and the RMSNorm weights stay in the baseline dtype, as
  GPTQ, AWQ and bitsandbytes do by default; ``quantize_embeddings=True`` quantizes the two
  vocabulary matrices too (as llama.cpp's Q8_0 files do).

The LLaMA-2 shapes are the published configurations (Touvron et al. 2023, and the
``config.json`` of the released checkpoints).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

from ._checks import baseline_bits, positive_int
from .roles import LLAMA_BLOCK_ROLES, llama_block_shapes

__all__ = ["GB", "bits_per_weight", "ModelShape", "LLAMA2_CONFIGS", "memory_table"]

GB = 1e9  # bytes in a GB, as model sizes are quoted (not GiB)


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def bits_per_weight(bits: float, group_size: int, scale_bits: float = 32) -> float:
    """Storage cost of one quantized weight: ``bits + scale_bits / group_size``.

    Parameters
    ----------
    bits : float
        Bits of each quantized value (8 for int8).
    group_size : int
        Weights sharing one scale.
    scale_bits : float, default 32
        Bits of each scale (32 for float32, 16 for float16).

    Examples
    --------
    >>> bits_per_weight(8, 32), bits_per_weight(8, 256), bits_per_weight(4, 128, scale_bits=16)
    (9.0, 8.125, 4.125)
    """
    return _positive("bits", bits) + _positive("scale_bits", scale_bits) / positive_int(
        "group_size", group_size)


@dataclass(frozen=True)
class ModelShape:
    """The shape of a LLaMA-style decoder: what memory accounting needs to know.

    Each of the ``n_layers`` blocks has attention projections ``q, k, v, o`` (``k`` and ``v``
    have ``n_kv_heads * head_dim`` outputs: fewer than ``hidden`` with grouped-query
    attention), a SwiGLU MLP ``gate, up`` (hidden -> intermediate) and ``down``
    (intermediate -> hidden), and two RMSNorm weight vectors; then a final norm, the token
    embedding and the output projection (one shared matrix if ``tied_embeddings``).  No
    biases.

    Attributes
    ----------
    name : str
    hidden, intermediate : int
        Model width and MLP width.
    n_layers, n_heads, n_kv_heads : int
    vocab : int
    tied_embeddings : bool
        Whether the output projection reuses the embedding matrix.

    Examples
    --------
    >>> m = LLAMA2_CONFIGS["LLaMA-2 7B"]
    >>> m.n_params, m.n_linear_params
    (6738415616, 6476005376)
    >>> [f"{s.n_linear_params / s.n_params:.1%}" for s in LLAMA2_CONFIGS.values()]  # 7B 13B 70B
    ['96.1%', '97.5%', '99.2%']
    """

    name: str
    hidden: int
    intermediate: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab: int
    tied_embeddings: bool = False

    def __post_init__(self) -> None:
        for f in ("hidden", "intermediate", "n_layers", "n_heads", "n_kv_heads", "vocab"):
            positive_int(f, getattr(self, f))
        if self.hidden % self.n_heads:
            raise ValueError(f"hidden ({self.hidden}) must be a multiple of n_heads "
                             f"({self.n_heads})")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads "
                             f"({self.n_kv_heads})")

    @property
    def head_dim(self) -> int:
        """Width of one attention head, ``hidden // n_heads``."""
        return self.hidden // self.n_heads

    def linear_shapes(self) -> list[tuple[str, tuple[int, int], int]]:
        """The linear layers of the transformer blocks.

        Returns
        -------
        list of (role, (out_features, in_features), count)
            One entry per projection, named by its role (:data:`gqlearn.roles.LLAMA_BLOCK_ROLES`:
            ``attn_q`` ... ``mlp_down``); ``count`` is how many such matrices the model has
            (one per layer).  Groups run along ``in_features``.  The vocabulary matrices are
            not included (see :attr:`n_embedding_params`).

        Examples
        --------
        >>> [(r, s) for r, s, _ in LLAMA2_CONFIGS["LLaMA-2 70B"].linear_shapes()][1:3]
        [('attn_k', (1024, 8192)), ('attn_v', (1024, 8192))]
        """
        shapes = llama_block_shapes(self.hidden, self.intermediate,
                                    self.n_kv_heads * self.head_dim)
        return [(role, shapes[role], self.n_layers) for role in LLAMA_BLOCK_ROLES]

    @property
    def n_linear_params(self) -> int:
        """Parameters in the linear layers of :meth:`linear_shapes`."""
        return sum(o * i * c for _, (o, i), c in self.linear_shapes())

    @property
    def n_embedding_params(self) -> int:
        """Parameters of the token embedding and output projection (one matrix if tied)."""
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    @property
    def n_norm_params(self) -> int:
        """RMSNorm weights: two per layer plus the final norm."""
        return (2 * self.n_layers + 1) * self.hidden

    @property
    def n_params(self) -> int:
        """All parameters: linear layers, embeddings and norms."""
        return self.n_linear_params + self.n_embedding_params + self.n_norm_params

    def check_group_size(self, group_size: int) -> int:
        """Return ``group_size`` if it divides the ``in_features`` of every linear layer."""
        g = positive_int("group_size", group_size)
        widths = sorted({i for _, (_, i), _ in self.linear_shapes()})
        bad = [w for w in widths if w % g]
        if bad:
            raise ValueError(f"group_size {g} does not divide the input width(s) {bad} of "
                             f"{self.name}; see gqlearn.choose_group_size")
        return g


LLAMA2_CONFIGS: dict[str, ModelShape] = {
    "LLaMA-2 7B": ModelShape("LLaMA-2 7B", hidden=4096, intermediate=11008, n_layers=32,
                             n_heads=32, n_kv_heads=32, vocab=32000, tied_embeddings=False),
    "LLaMA-2 13B": ModelShape("LLaMA-2 13B", hidden=5120, intermediate=13824, n_layers=40,
                              n_heads=40, n_kv_heads=40, vocab=32000, tied_embeddings=False),
    "LLaMA-2 70B": ModelShape("LLaMA-2 70B", hidden=8192, intermediate=28672, n_layers=80,
                              n_heads=64, n_kv_heads=8, vocab=32000, tied_embeddings=False),
}


def memory_table(shape: ModelShape, group_sizes: list[int] | tuple[int, ...], bits: int = 8,
                 baseline: str = "bfloat16", *, scale_bits: int = 32,
                 quantize_embeddings: bool = False) -> list[dict]:
    """Size of ``shape`` quantized at each group size, against the whole model in ``baseline``.

    Parameters
    ----------
    shape : ModelShape
    group_sizes : sequence of int
        Each must divide the input width of every quantized matrix.
    bits : int, default 8
        Bits per quantized value (values counted packed).
    baseline : str, default "bfloat16"
        dtype of the unquantized model and of the parts kept unquantized: ``"bfloat16"``,
        ``"float16"`` or ``"float32"`` (or ``"bf16"``, ``"fp16"``, ``"fp32"``).
    scale_bits : int, default 32
        Bits per scale (float32).
    quantize_embeddings : bool, default False
        Also quantize the embedding and output matrices (groups along ``hidden``).

    Returns
    -------
    list of dict
        One row per group size with keys ``model``, ``group_size``, ``bits_per_weight`` (of the
        quantized matrices), ``values_gb``, ``scale_gb`` (the scales' overhead),
        ``kept_gb`` (parameters left in ``baseline``), ``quantized_gb`` (the total),
        ``baseline_gb`` (the whole model in ``baseline``), ``ratio`` (``baseline_gb /
        quantized_gb``) and ``overhead_fraction`` (``scale_gb / quantized_gb``).  GB = 1e9
        bytes.

    Raises
    ------
    ValueError
        If a group size does not divide a quantized matrix's input width, or ``baseline`` is
        unknown.

    Examples
    --------
    >>> row = memory_table(LLAMA2_CONFIGS["LLaMA-2 7B"], [128])[0]
    >>> row["bits_per_weight"], round(row["scale_gb"], 3), round(row["quantized_gb"], 2)
    (8.25, 0.202, 7.2)
    """
    if not isinstance(shape, ModelShape):
        raise TypeError(f"shape must be a ModelShape, got {type(shape).__name__}")
    base_bits = baseline_bits(baseline)
    bits = positive_int("bits", bits)
    scale_bits = positive_int("scale_bits", scale_bits)
    n_quant = shape.n_linear_params
    n_kept = shape.n_norm_params
    if quantize_embeddings:
        n_quant += shape.n_embedding_params
    else:
        n_kept += shape.n_embedding_params
    baseline_gb = shape.n_params * base_bits / 8 / GB
    kept_gb = n_kept * base_bits / 8 / GB
    values_gb = n_quant * bits / 8 / GB
    rows = []
    for g in group_sizes:
        g = shape.check_group_size(g)
        if quantize_embeddings and shape.hidden % g:
            raise ValueError(f"group_size {g} does not divide hidden ({shape.hidden})")
        scale_gb = n_quant // g * scale_bits / 8 / GB
        total = values_gb + scale_gb + kept_gb
        rows.append({"model": shape.name, "group_size": g,
                     "bits_per_weight": bits_per_weight(bits, g, scale_bits),
                     "values_gb": values_gb, "scale_gb": scale_gb, "kept_gb": kept_gb,
                     "quantized_gb": total, "baseline_gb": baseline_gb,
                     "ratio": baseline_gb / total, "overhead_fraction": scale_gb / total})
    return rows
