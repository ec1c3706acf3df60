"""The one error every model-file reader raises: it names the file, and the tensor if any."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ModelFileError"]


class ModelFileError(ValueError):
    """A model file is missing, damaged or of a kind gqlearn will not read.

    Attributes
    ----------
    file : pathlib.Path
        The file at fault.
    tensor : str or None
        The tensor at fault, when there is one.
    """

    file: Path | None  # None only for a GGUFError whose message already names the file
    tensor: str | None

    def __init__(self, file: str | os.PathLike[str], message: str, tensor: str | None = None):
        self.file = Path(file)
        self.tensor = tensor
        where = f"{self.file}" + (f", tensor {tensor!r}" if tensor is not None else "")
        super().__init__(f"{where}: {message}")
