"""Link each chapter's first use of a term or method to docs/glossary.md or docs/references.md.

``python teach/link_glossary.py`` (re-runnable: a term already linked in a notebook is left
alone; new chapters are found by glob). In each chapter and the appendix (``notebooks/*.ipynb``)
it finds, for every entry of ``TERMS``, the first Markdown occurrence outside headings, code
spans, math and existing links, and turns it into a link: ``[SQNR](../docs/glossary.md#SQNR)``.
Only the link is added; the words, and so the prose word counts, stay the same. Anchors are
Jupyter's (heading text, spaces as ``-``), which the book uses too (book/jupyter_slug.py).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
GLOSSARY, REFERENCES = "../docs/glossary.md", "../docs/references.md"

# (pattern, document, anchor); longer phrases before the words they contain.
TERMS: list[tuple[str, str, str]] = [
    # methods, formats, models, tools: the references
    (r"LLM\.int8\(\)", REFERENCES, "LLM.int8"),
    (r"\bSmoothQuant\b", REFERENCES, "SmoothQuant"),
    (r"\bGPTQ\b", REFERENCES, "GPTQ"),
    (r"\bAWQ\b", REFERENCES, "AWQ"),
    (r"\bHQQ\b", REFERENCES, "HQQ"),
    (r"\bQLoRA\b", REFERENCES, "QLoRA"),
    (r"\btorchao\b", REFERENCES, "torchao"),
    (r"\bbitsandbytes\b", REFERENCES, "bitsandbytes"),
    (r"\bllama\.cpp\b", REFERENCES, "llama.cpp"),
    (r"\bllama2\.c\b", REFERENCES, "llama2.c"),
    (r"\bnumba\b", REFERENCES, "numba"),
    (r"\bSentence-BERT\b", REFERENCES, "Sentence-BERT"),
    (r"\bBERT Busters\b", REFERENCES, "BERT-Busters"),
    (r"(?<![-\w])BERT\b(?!-)", REFERENCES, "BERT"),
    (r"(?<!-)\bMiniLM\b(?!-)", REFERENCES, "MiniLM"),
    (r"\bLLaMA-2\b", REFERENCES, "Llama-2"),
    (r"\bLLaMA\b(?!-2)", REFERENCES, "LLaMA"),
    (r"\bSmolLM2\b", REFERENCES, "SmolLM2"),
    (r"\bGoldberg\b", REFERENCES, "Goldberg-1991"),
    # terms: the glossary
    (r"\bk-quants?\b", GLOSSARY, "k-quants"),
    (r"\bGGUF\b", GLOSSARY, "GGUF"),
    (r"\bQ8_0\b", GLOSSARY, "Q8_0"),
    (r"\bQ4_0\b", GLOSSARY, "Q4_0"),
    (r"\bQ4_1\b", GLOSSARY, "Q4_1"),
    (r"\bNF4\b", GLOSSARY, "NF4"),
    (r"\bRoPE\b", GLOSSARY, "RoPE"),
    (r"\bsafetensors\b", GLOSSARY, "safetensors"),
    (r"(?i)\babsmax\b", GLOSSARY, "absmax"),
    (r"(?i)\bgroup sizes?\b", GLOSSARY, "group-size"),
    (r"(?i)\bbits per weight\b|\bbits/weight\b", GLOSSARY, "bits-per-weight"),
    (r"(?i)\bper-row\b", GLOSSARY, "per-row"),
    (r"(?i)\bper-tensor\b", GLOSSARY, "per-tensor"),
    (r"(?i)\bzero[- ]point\b", GLOSSARY, "zero-point"),
    (r"(?i)\b(?<!a)symmetric\b", GLOSSARY, "symmetric"),
    (r"\bSQNR\b", GLOSSARY, "SQNR"),
    (r"\bMSE\b", GLOSSARY, "MSE"),
    (r"\bKL\b", GLOSSARY, "KL"),
    (r"(?i)\bperplexity\b", GLOSSARY, "perplexity"),
    (r"(?i)\bmax(?:imum)? error\b", GLOSSARY, "max-error"),
    (r"(?i)\bdequantiz\w*", GLOSSARY, "dequantization"),
    (r"(?i)\boutliers?\b", GLOSSARY, "outlier"),
    (r"(?i)\bzeroed\b", GLOSSARY, "zeroed-weights"),
    (r"(?i)\bback-off\b|\bbacks? off\b", GLOSSARY, "back-off"),
    (r"(?i)\bcompression ratio\b", GLOSSARY, "compression-ratio"),
    (r"(?i)\bcosine\b", GLOSSARY, "cosine-similarity"),
    (r"(?i)\btop-1 agreement\b|\bagreement\b", GLOSSARY, "agreement"),
    (r"(?i)\blogits\b", GLOSSARY, "logits"),
    (r"(?i)\bsoftmax\b", GLOSSARY, "softmax"),
    (r"(?i)\bembeddings?\b", GLOSSARY, "embedding"),
    (r"(?i)\btokens?\b", GLOSSARY, "token"),
    (r"(?i)\bactivations?\b(?!-aware)", GLOSSARY, "activation"),
    (r"\bbfloat16\b", GLOSSARY, "bfloat16"),
    (r"\bfloat32\b", GLOSSARY, "float32"),
    (r"(?i)\bsubnormal\b", GLOSSARY, "subnormal"),
    (r"(?i)\breciprocal\b", GLOSSARY, "reciprocal"),
    (r"(?i)\bexact ties?\b|\brounding ties\b|\bties?(?= (?:away|to even|such as|go))", GLOSSARY,
     "rounding"),
    (r"\bint8\b|\bint4\b", GLOSSARY, "int8-and-int4"),
    (r"(?i)\bquantization\b", GLOSSARY, "quantization"),
    (r"(?i)\bgroups?\b(?!-wise)", GLOSSARY, "group"),
    (r"(?i)\bscales?\b", GLOSSARY, "scale"),
]

# Regions a link must not go into: code spans, math, links, autolinks, HTML tags.
_PROTECTED = re.compile(r"`[^`\n]*`|\$\$.*?\$\$|\$[^$\n]*\$|!?\[[^\]\n]*\]\([^)\n]*\)"
                        r"|<https?://[^>\n]*>|<[^>\n]*>|https?://\S+", re.S)


def _src(cell: dict) -> str:
    s = cell["source"]
    return "".join(s) if isinstance(s, list) else s


def _first_match(text: str, pattern: re.Pattern) -> re.Match | None:
    protected = [m.span() for m in _PROTECTED.finditer(text)]
    offset = 0
    for line in text.splitlines(keepends=True):
        if not line.lstrip().startswith("#"):
            for m in pattern.finditer(line):
                a, b = offset + m.start(), offset + m.end()
                if not any(s <= a < e or s < b <= e for s, e in protected):
                    return re.match(r"(?s).*", text[a:b]) and _Span(a, b)
        offset += len(line)
    return None


class _Span:
    def __init__(self, a: int, b: int) -> None:
        self.a, self.b = a, b


def link_notebook(nb: dict) -> list[str]:
    """Link the first use of each term; return the anchors linked now."""
    cells = [c for c in nb["cells"] if c["cell_type"] == "markdown"]
    done = []
    for pattern, doc, anchor in TERMS:
        target = f"{doc}#{anchor}"
        if any(f"]({target})" in _src(c) for c in cells):
            continue
        rx = re.compile(pattern)
        for cell in cells:
            text = _src(cell)
            span = _first_match(text, rx)
            if span is None:
                continue
            word = text[span.a:span.b]
            text = f"{text[:span.a]}[{word}]({target}){text[span.b:]}"
            cell["source"] = text.splitlines(keepends=True)
            done.append(anchor)
            break
    return done


def main() -> int:
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        done = link_notebook(nb)
        if done:
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"{path.relative_to(ROOT)}: {len(done)} links added")
    return 0


if __name__ == "__main__":
    sys.exit(main())
