"""Rebuild a GPT-2-style byte-level BPE tokenizer from a GGUF file's vocabulary and merges.

A GGUF checkpoint carries its tokenizer as metadata: ``tokenizer.ggml.tokens`` (the vocabulary,
one string per id), ``tokenizer.ggml.merges`` (``"Ġ t"``-style pairs, highest priority first)
and ``tokenizer.ggml.token_type`` (1 = normal, 3 = control tokens such as ``<|im_end|>``).
:func:`tokenizer_from_gguf` turns them back into a ``tokenizers.Tokenizer`` with SmolLM2's
pre-tokenizer: every digit is its own piece, then GPT-2's byte-level split (``"Ġ"`` stands for
a space).  Byte-level BPE covers every byte, so ``decode(encode(text)) == text`` for any text
(``tests/test_llm_tokenizer.py`` checks this).

Only the pre-tokenizers ``smollm`` and ``gpt2`` (``tokenizer.ggml.pre``) are supported; other
models split text differently (Llama 3's regex groups digits in threes, for example).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..io.gguf import GGUFError, GGUFSource, as_reader

__all__ = ["tokenizer_from_gguf", "SUPPORTED_PRE_TOKENIZERS"]

SUPPORTED_PRE_TOKENIZERS = ("smollm", "gpt2", "default")
_CONTROL = 3  # llama.cpp's LLAMA_TOKEN_TYPE_CONTROL
_USER_DEFINED = 4


def _strings(reader: Any, path: Path, key: str) -> list[str]:
    fld = reader.get_field(key)
    if fld is None:
        raise GGUFError(f"{path}: metadata key {key!r} is missing")
    return [bytes(fld.parts[i]).decode("utf-8") for i in fld.data]


def tokenizer_from_gguf(source: GGUFSource) -> Any:
    """A ``tokenizers.Tokenizer`` rebuilt from the vocabulary and merges in a GGUF file.

    Parameters
    ----------
    source : path or reader
        A GGUF file (or a reader from :func:`gqlearn.io.open_gguf`) with
        ``tokenizer.ggml.model == "gpt2"`` (byte-level BPE).

    Returns
    -------
    tokenizers.Tokenizer
        ``encode(text).ids`` gives token ids, ``decode(ids, skip_special_tokens=False)``
        the text back.  No BOS token is added (SmolLM2's ``add_bos_token`` is false).

    Raises
    ------
    GGUFError
        If the file has no byte-level BPE tokenizer, an unsupported pre-tokenizer, or token
        types that do not match its tokens one to one.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    reader, path = as_reader(source)
    kind = reader.get_field("tokenizer.ggml.model")
    if kind is None or kind.contents() != "gpt2":
        found = None if kind is None else kind.contents()
        raise GGUFError(f"{path}: tokenizer.ggml.model is {found!r}; only byte-level BPE "
                        f"('gpt2') can be rebuilt")
    pre_field = reader.get_field("tokenizer.ggml.pre")
    pre = pre_field.contents() if pre_field is not None else "default"
    if pre not in SUPPORTED_PRE_TOKENIZERS:
        raise GGUFError(f"{path}: pre-tokenizer {pre!r} is not supported "
                        f"(supported: {SUPPORTED_PRE_TOKENIZERS})")
    tokens = _strings(reader, path, "tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in _strings(reader, path, "tokenizer.ggml.merges")]
    types_field = reader.get_field("tokenizer.ggml.token_type")
    types = ([int(types_field.parts[i][0]) for i in types_field.data]
             if types_field is not None else [1] * len(tokens))
    if len(types) != len(tokens):  # a truncated list would mark the wrong tokens special
        raise GGUFError(f"{path}: {len(tokens)} tokens but {len(types)} token types")

    vocab = {tok: i for i, tok in enumerate(tokens)}
    tokenizer = Tokenizer(models.BPE(vocab, merges))
    steps = [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    if pre == "smollm":
        steps.insert(0, pre_tokenizers.Digits(individual_digits=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(steps)
    tokenizer.decoder = decoders.ByteLevel()
    specials = [AddedToken(tok, special=True, normalized=False)
                for tok, kind_ in zip(tokens, types, strict=True)
                if kind_ in (_CONTROL, _USER_DEFINED)]
    tokenizer.add_special_tokens(specials)
    return tokenizer
