"""The encoder family: BERT (all-MiniLM-L6-v2) in numpy, and the model explorer.

Files are read and written by :mod:`gqlearn.io`, tensor roles come from :mod:`gqlearn.roles`, and
group sizes from :mod:`gqlearn.group_size`.

>>> from gqlearn.models import explore
>>> import numpy as np
>>> explore({"layers.0.mlp.up_proj.weight": np.ones((4, 64), np.float32)}, 32).totals["n_quantized"]
1
"""

import numpy as np

from .bert import BertConfig, SentenceEncoder, cosine_similarity
from .explorer import (
    ExploreReport,
    TensorResult,
    explore,
    fake_quantize,
    quantize_tensor,
    save_quantized,
)

__all__ = ["explore", "ExploreReport", "TensorResult", "quantize_tensor", "fake_quantize",
           "save_quantized", "SentenceEncoder", "BertConfig", "cosine_similarity",
           "load_sentences", "load_reference_embeddings"]


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
