"""Heading anchors as Jupyter makes them, so the notebooks' own links work in the book.

JupyterLab and Notebook give a heading the id of its text with each space replaced by ``-``
(``## 7. Model size`` becomes ``#7.-Model-size``); the chapters link to each other that way.
"""


def jupyter_slug(text: str) -> str:
    """Jupyter's heading id for ``text``.

    >>> jupyter_slug("7. Model size and the memory rules")
    '7.-Model-size-and-the-memory-rules'
    """
    return text.strip().replace(" ", "-")
