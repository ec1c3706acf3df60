"""Real models: tensor roles, the model explorer, and BERT (all-MiniLM-L6-v2) in numpy.

The file readers and writers live in :mod:`gqlearn.io`; the ones the chapters use are
re-exported here (``models.open_checkpoint``, ``models.load_quantized``, ...).

>>> from gqlearn.models import classify, resolve_group_size
>>> classify("model.layers.0.self_attn.q_proj.weight"), resolve_group_size((384, 384), 256)
('attn_q', 128)
"""

import numpy as np

from ..group_size import parse_group_size, resolve_group_size
from ..io.safetensors import (
    Checkpoint,
    ModelFileError,
    PickleRefusedError,
    TensorInfo,
    open_checkpoint,
    read_header,
)
from ..io.safetensors_writer import SaveError
from ..io.saved import QuantizedModel, load_quantized
from ..roles import LINEAR_ROLES, ROLES, classify, layer_index, short_name, should_quantize
from .bert import BertConfig, SentenceEncoder, cosine_similarity
from .explorer import (
    ExploreReport,
    TensorResult,
    explore,
    fake_quantize,
    quantize_tensor,
    save_quantized,
)

__all__ = ["open_checkpoint", "read_header", "Checkpoint", "TensorInfo", "ModelFileError",
           "PickleRefusedError", "classify", "layer_index", "should_quantize", "short_name",
           "ROLES", "LINEAR_ROLES", "explore", "ExploreReport", "TensorResult",
           "quantize_tensor", "resolve_group_size", "parse_group_size", "fake_quantize",
           "save_quantized", "load_quantized", "QuantizedModel", "SentenceEncoder",
           "BertConfig", "cosine_similarity", "load_sentences", "load_reference_embeddings",
           "SaveError"]


def load_sentences() -> dict:
    """The course's semantic-search sentences: ``{"corpus": [...], "queries": [...]}``.

    Each item is ``{"topic": str, "text": str}``.

    >>> d = load_sentences()
    >>> len(d["corpus"]), len(d["queries"])
    (32, 8)
    """
    import json
    from importlib.resources import files

    return json.loads((files("gqlearn") / "data" / "sentences.json").read_text("utf-8"))


def load_reference_embeddings() -> tuple[list[str], np.ndarray, dict]:
    """Reference embeddings of all-MiniLM-L6-v2 computed with sentence-transformers itself.

    Returns
    -------
    sentences : list of str
    embeddings : numpy.ndarray
        float32, ``(len(sentences), 384)``, unit rows.
    info : dict
        Provenance: library versions and the recipe used.

    >>> sentences, emb, info = load_reference_embeddings()
    >>> emb.shape, info["generated_with"]["torch"]
    ((8, 384), '2.13.0+cpu')
    """
    import json
    from importlib.resources import files

    doc = json.loads((files("gqlearn") / "data" / "minilm_reference_embeddings.json")
                     .read_text("utf-8"))
    emb = np.array(doc.pop("embeddings"), dtype=np.float32)
    return doc.pop("sentences"), emb, doc
