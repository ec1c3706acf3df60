"""The decoder running quantized: matrices held as :class:`~gqlearn.QuantizedTensor`, applied
with :func:`gqlearn.qmatmul`.

:func:`gqlearn.llm.fake_quantize_linear_weights` (the decoder chapter's "fake quantization")
rounds each matrix and dequantizes it back to float32: the outputs are those of the quantized
model, but the memory and the speed are the float model's.  :class:`QuantizedLlama` keeps the
quantized values (packed below 8 bits) and the scales, and multiplies by them directly, so the
resident weights shrink (int8 g=32: 8 + 1 bits per weight instead of 32) and decoding, which
reads every weight once per token, reads fewer bytes.  It computes with the same float32
weights as the fake-quantized model, so its logits agree to float32 rounding.

Example::

    model, tok = load_smollm2()
    qmodel = QuantizedLlama.from_model(model, bits=8, group_size=32)
    tok.decode(qmodel.generate(tok.encode("The capital of France is").ids, 1))  # ' Paris'
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .. import packing
from ..core import QuantizedTensor, quantize
from ..group_size import Policy, resolve_group_size
from ..qmatmul import qmatmul
from .llama import Llama, LlamaConfig

__all__ = ["QuantizedLlama"]


class QuantizedLlama(Llama):
    """A :class:`~gqlearn.llm.Llama` whose matrices are quantized tensors.

    Parameters
    ----------
    config : LlamaConfig
    weights : mapping of str to numpy.ndarray
        The float32 weights that stay float (norms; the embedding unless it is quantized).
    quantized : mapping of str to QuantizedTensor
        Quantized matrices by GGUF name, ``(out, in)`` and quantized along ``in``.  A quantized
        ``token_embd.weight`` serves both the embedding lookup (rows dequantized as read) and
        the tied output matrix.
    backend : {"auto", "numpy", "numba"}, default "auto"
        Passed to :func:`gqlearn.qmatmul`.

    Use :meth:`from_model` to quantize a float model.
    """

    def __init__(self, config: LlamaConfig, weights: Mapping[str, np.ndarray],
                 quantized: Mapping[str, QuantizedTensor], *, backend: str = "auto") -> None:
        expected = config.weight_shapes()
        if "output.weight" in weights or "output.weight" in quantized:
            expected["output.weight"] = expected["token_embd.weight"]
        self.config = config
        self.backend = backend
        self.weights = {}
        self.quantized: dict[str, QuantizedTensor] = {}
        for name, shape in expected.items():
            if name in quantized:
                qt = quantized[name]
                if not isinstance(qt, QuantizedTensor) or qt.shape != shape:
                    raise ValueError(f"{name} must be a QuantizedTensor of shape {shape}, got "
                                     f"{getattr(qt, 'shape', type(qt).__name__)}")
                self.quantized[name] = qt
            elif name in weights:
                w = np.ascontiguousarray(weights[name], dtype=np.float32)
                if w.shape != shape:
                    raise ValueError(f"{name} has shape {w.shape}, expected {shape}")
                self.weights[name] = w
            elif name != "output.weight":
                raise ValueError(f"missing weight {name}")
        unknown = set(quantized) - set(expected)
        if unknown:
            raise ValueError(f"unknown quantized weight names: {sorted(unknown)[:5]}")

    @classmethod
    def from_model(cls, model: Llama, bits: int, group_size: int, *,
                   include_embedding: bool = False, policy: Policy = "pow2",
                   backend: str = "auto") -> QuantizedLlama:
        """Quantize every block matrix of ``model`` (and optionally the tied embedding).

        Matrices and group sizes are those of
        :func:`gqlearn.llm.fake_quantize_linear_weights` with the same arguments (a group size
        that does not divide a width is reduced with :func:`gqlearn.choose_group_size`), so the
        two models compute with the same weights.

        Parameters
        ----------
        model : Llama
            The float model (not modified; the new model does not share its matrices).
        bits : int
            2 to 8.
        group_size : int
            Requested group size along each matrix's input axis (per-tensor is not supported:
            the product needs groups along the input axis).
        include_embedding : bool, default False
            Quantize the token embedding (the tied output matrix) too.
        policy : {"pow2", "divisor", "halve"}, default "pow2"
        backend : {"auto", "numpy", "numba"}, default "auto"

        Examples
        --------
        >>> from gqlearn.llm import Llama, LlamaConfig
        >>> cfg = LlamaConfig(vocab_size=50, hidden_size=16, n_layers=2, n_heads=4,
        ...                   n_kv_heads=2, ffn_size=32)
        >>> model = Llama.random(cfg)
        >>> q = QuantizedLlama.from_model(model, bits=4, group_size=8)
        >>> q.forward([1, 2, 3]).shape, len(q.quantized)
        ((3, 50), 14)
        """
        if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)):
            raise TypeError(f"group_size must be an integer (per-tensor scales are not "
                            f"supported by qmatmul), got {group_size!r}")
        names = model.linear_names()
        if include_embedding:
            names = ["token_embd.weight", *names]
        quantized = {}
        for name in names:
            w = model.weights[name]
            gs = resolve_group_size(w.shape, int(group_size), policy)
            quantized[name] = quantize(w, gs, bits=bits)
        rest = {k: v for k, v in model.weights.items() if k not in quantized}
        return cls(model.config, rest, quantized, backend=backend)

    def _linear(self, h: np.ndarray, name: str) -> np.ndarray:
        qt = self.quantized.get(name)
        if qt is None:
            return h @ self.weights[name].T
        return qmatmul(h, qt, backend=self.backend)

    def _embed(self, ids: np.ndarray) -> np.ndarray:
        qt = self.quantized.get("token_embd.weight")
        if qt is None:
            return self.weights["token_embd.weight"][ids]
        n = qt.shape[-1]
        q = packing.unpack(qt.packed[ids], qt.bits, n) if qt.bits < 8 else qt.packed[ids]
        scales = qt.scales[ids]
        return (q.reshape(len(ids), -1, qt.group_size).astype(np.float32)
                * scales[:, :, None]).reshape(len(ids), n)

    @property
    def output_name(self) -> str:
        """The output (logits) matrix: ``output.weight`` if present, else the tied embedding."""
        return ("output.weight" if "output.weight" in self.weights
                or "output.weight" in self.quantized else "token_embd.weight")

    @property
    def n_parameters(self) -> int:
        """Number of weights (the tied embedding counted once)."""
        return (sum(w.size for w in self.weights.values())
                + sum(qt.size for qt in self.quantized.values()))

    @property
    def weight_nbytes(self) -> int:
        """Bytes of every array holding weights: float32 arrays, packed values and scales."""
        return (sum(w.nbytes for w in self.weights.values())
                + sum(qt.packed.nbytes + qt.scales.nbytes for qt in self.quantized.values()))

    def with_weights(self, replacements: Mapping[str, np.ndarray]) -> Llama:
        raise TypeError("with_weights replaces float matrices; a QuantizedLlama holds quantized "
                        "ones: build a new QuantizedLlama (or use the float model)")

    def __repr__(self) -> str:
        bits = sorted({qt.bits for qt in self.quantized.values()})
        return (super().__repr__()[:-1] + f", quantized={len(self.quantized)} matrices at "
                f"{'/'.join(map(str, bits))} bits, weights={self.weight_nbytes / 2**20:.1f} MiB)")
