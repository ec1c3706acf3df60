"""The numpy BERT sentence encoder against sentence-transformers' own embeddings."""

import math

import numpy as np
import pytest

from gqlearn.models import SentenceEncoder, load_reference_embeddings, load_sentences
from gqlearn.models.bert import BertConfig, cosine_similarity, erf, gelu, layer_norm


@pytest.fixture(scope="module")
def encoder(minilm_dir):
    return SentenceEncoder.from_pretrained(minilm_dir)


def test_erf_and_gelu():
    xs = np.linspace(-6, 6, 2001)
    assert np.abs(erf(xs) - np.array([math.erf(v) for v in xs])).max() < 1.5e-7
    assert abs(erf(np.array([0.0]))[0]) < 1e-8 and erf(np.array([-1.0]))[0] < 0
    g = gelu(np.array([-1.0, 0.0, 1.0], np.float32))
    assert g.dtype == np.float32
    assert g[1] == 0 and g[2] == pytest.approx(0.8413447, abs=1e-6)


def test_layer_norm():
    x = np.array([[1.0, 2.0, 3.0, 6.0]], np.float32)
    y = layer_norm(x, np.ones(4, np.float32), np.zeros(4, np.float32), 1e-12)
    assert y.mean() == pytest.approx(0, abs=1e-6) and y.std() == pytest.approx(1, abs=1e-5)


def test_config_checks():
    base = dict(hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=16, vocab_size=10)
    assert BertConfig.from_dict(base).head_dim == 4
    with pytest.raises(ValueError, match="gelu"):
        BertConfig.from_dict({**base, "hidden_act": "relu"})
    with pytest.raises(ValueError, match="multiple"):
        BertConfig.from_dict({**base, "num_attention_heads": 3})


def test_matches_sentence_transformers(encoder):
    """The float32 forward agrees with sentence-transformers to within 1e-4 cosine distance."""
    sentences, reference, info = load_reference_embeddings()
    assert info["generated_with"]["sentence_transformers"]
    ours = encoder.encode(sentences)
    distance = 1 - cosine_similarity(ours, reference)
    assert distance.max() < 1e-4
    assert distance.max() < 1e-6  # in fact float32 round-off only
    assert np.allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-6)


def test_tokenization_and_truncation(encoder):
    sentences, _, info = load_reference_embeddings()
    ids, types, mask = encoder.tokenize(sentences)
    assert mask.sum(axis=1).tolist() == info["n_tokens"]
    assert ids.shape == (8, 256) and ids[0, 0] == 101  # [CLS]
    assert (types == 0).all()
    with pytest.raises(TypeError, match="list of sentences"):
        encoder.tokenize("one string")


def test_batching_does_not_change_results(encoder):
    texts = [c["text"] for c in load_sentences()["corpus"]][:10]
    together = encoder.encode(texts)
    alone = np.concatenate([encoder.encode([t]) for t in texts])
    assert np.allclose(together, alone, atol=2e-6)
    assert encoder.encode([]).shape == (0, 384)
    raw = encoder.encode(texts[:2], normalize=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1)


def test_with_weights(encoder):
    name = "encoder.layer.0.attention.self.query.weight"
    w = encoder.weights[name]
    same = encoder.with_weights({name: w.copy()})
    assert np.array_equal(same.encode(["a test"]), encoder.encode(["a test"]))
    noisy = encoder.with_weights({"bert." + name: w + 0.05})
    assert cosine_similarity(noisy.encode(["a test"]), encoder.encode(["a test"]))[0] < 0.9999
    with pytest.raises(KeyError, match="no tensor"):
        encoder.with_weights({"nope": w})
    with pytest.raises(ValueError, match="shape"):
        encoder.with_weights({name: w[:3]})
    with pytest.raises(KeyError, match="lack"):
        SentenceEncoder({}, encoder.config, encoder.tokenizer)


def test_semantic_search_finds_the_topic(encoder):
    data = load_sentences()
    corpus = encoder.encode([c["text"] for c in data["corpus"]])
    queries = encoder.encode([q["text"] for q in data["queries"]])
    best = (queries @ corpus.T).argmax(axis=1)
    hits = [data["corpus"][b]["topic"] == q["topic"]
            for b, q in zip(best, data["queries"], strict=True)]
    assert all(hits)
