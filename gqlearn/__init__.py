"""gqlearn: group-wise int8 quantization of LLM weights, the library behind the course."""

from . import metrics
from ._parallel import default_threads, set_num_threads
from .core import QuantizedTensor, available_backends, dequantize, qmax_for_bits, quantize
from .group_size import choose_group_size, halving_sequence
from .metrics import error_report
from .qmatmul import qmatmul

__version__ = "0.2.0"

__all__ = ["QuantizedTensor", "quantize", "dequantize", "qmax_for_bits", "choose_group_size",
           "halving_sequence", "error_report", "qmatmul", "available_backends", "metrics",
           "default_threads", "set_num_threads", "__version__"]
