"""The byte-level BPE tokenizer rebuilt from GGUF metadata: exact round trips, digit splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gqlearn.io import GGUFError, fetch_model
from gqlearn.llm import Llama, LlamaConfig, load_sample_text
from gqlearn.llm.tokenizer import tokenizer_from_gguf

from gguf_writer import save_llama_gguf

TEXTS = [
    "The capital of France is",
    "In 1865, Lewis Carroll published 2 books; π ≈ 3.14159.",
    "  leading spaces,\ttabs\tand\nnew\n\nlines  \n",
    "naïve café, Straße, 東京, Ελληνικά, emoji 🐇⌚ and combining e\u0301",
    "def f(x):\n    return x ** 2  # comment\n",
    "",
    "<|im_start|>user\nHi<|im_end|>",
]


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    return tokenizer_from_gguf(fetch_model("smollm2", quiet=True))


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip_is_exact(smollm2_tokenizer, text: str) -> None:
    ids = smollm2_tokenizer.encode(text).ids
    assert smollm2_tokenizer.decode(ids, skip_special_tokens=False) == text


def test_sample_text_round_trips(smollm2_tokenizer) -> None:
    text = load_sample_text()
    ids = smollm2_tokenizer.encode(text).ids
    assert 300 <= len(ids) <= 450
    assert smollm2_tokenizer.decode(ids, skip_special_tokens=False) == text


def test_known_ids_and_pieces(smollm2_tokenizer) -> None:
    enc = smollm2_tokenizer.encode("The capital of France is")
    assert enc.tokens == ["The", "Ġcapital", "Ġof", "ĠFrance", "Ġis"]
    assert enc.ids == [504, 3575, 282, 4649, 314]


def test_digits_are_split_individually(smollm2_tokenizer) -> None:
    assert smollm2_tokenizer.encode("In 2024").tokens == ["In", "Ġ", "2", "0", "2", "4"]
    assert smollm2_tokenizer.encode("12345").tokens == ["1", "2", "3", "4", "5"]


def test_control_tokens_are_single_tokens(smollm2_tokenizer) -> None:
    ids = smollm2_tokenizer.encode("<|im_start|>").ids
    assert ids == [1]
    assert smollm2_tokenizer.encode("<|endoftext|>").ids == [0]
    assert smollm2_tokenizer.get_vocab_size() == 49152


def test_tiny_tokenizer_written_and_read_back(tmp_path: Path) -> None:
    from tokenizers import pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())  # the 256 byte symbols
    tokens = ["<|endoftext|>", *alphabet, "Ġt", "he", "Ġthe"]
    merges = ["Ġ t", "h e", "Ġt he"]
    cfg = LlamaConfig(vocab_size=len(tokens), hidden_size=8, n_layers=1, n_heads=2,
                      n_kv_heads=1, ffn_size=8)
    path = save_llama_gguf(tmp_path / "tok.gguf", cfg, Llama.random(cfg).weights,
                           tokenizer={"tokens": tokens, "merges": merges,
                                      "token_types": [3] + [1] * (len(tokens) - 1)})
    tok = tokenizer_from_gguf(path)
    enc = tok.encode("say the 42")
    assert enc.tokens == ["s", "a", "y", "Ġthe", "Ġ", "4", "2"]
    for text in TEXTS:
        assert tok.decode(tok.encode(text).ids, skip_special_tokens=False) == text
    assert tok.encode("<|endoftext|>").ids == [0]
    assert np.all(np.array(tok.encode("abc").ids) > 0)


def test_file_without_bpe_tokenizer(tmp_path: Path) -> None:
    cfg = LlamaConfig(vocab_size=10, hidden_size=8, n_layers=1, n_heads=2, n_kv_heads=1,
                      ffn_size=8)
    path = save_llama_gguf(tmp_path / "notok.gguf", cfg, Llama.random(cfg).weights)
    with pytest.raises(GGUFError, match=r"notok\.gguf.*only byte-level BPE"):
        tokenizer_from_gguf(path)


def test_token_types_must_match_tokens(tmp_path: Path) -> None:
    """One type per token: a shorter list would silently leave later tokens unmarked."""
    from tokenizers import pre_tokenizers

    tokens = ["<|endoftext|>", *sorted(pre_tokenizers.ByteLevel.alphabet())]
    cfg = LlamaConfig(vocab_size=len(tokens), hidden_size=8, n_layers=1, n_heads=2,
                      n_kv_heads=1, ffn_size=8)
    path = save_llama_gguf(tmp_path / "tok.gguf", cfg, Llama.random(cfg).weights,
                           tokenizer={"tokens": tokens, "merges": ["h e"], "token_types": [3, 1]})
    with pytest.raises(GGUFError, match="257 tokens but 2 token types"):
        tokenizer_from_gguf(path)
