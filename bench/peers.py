"""The peers the benchmarks time gqlearn against, written as their projects write them.

``quantize_q80_llama2c`` is a line-by-line numpy transcription of llama2.c's
``export.py:quantize_q80`` (torch there: float32 division, ``torch.round`` = half to even).
The tests check gqlearn against it too (``tests/reference.py`` imports it); the benchmarks never
import the tests.
"""

import numpy as np


def quantize_q80_llama2c(w: np.ndarray, group_size: int):
    assert w.size % group_size == 0
    w = w.astype(np.float32)  # w.float()
    w = w.reshape(-1, group_size)
    # find the max in each group
    wmax = np.abs(w).max(axis=1)
    # calculate the scaling factor such that float = quant * scale
    scale = wmax / np.float32(127.0)
    # scale into range [-127, 127]
    quant = w / scale[:, None]
    # round to nearest integer
    int8val = np.round(quant).astype(np.int8)
    # dequantize by rescaling
    fp32val = (int8val.astype(np.float32) * scale[:, None]).reshape(-1)
    fp32valr = fp32val.reshape(-1, group_size)
    # calculate the max error in each group
    err = np.abs(fp32valr - w).max(axis=1)
    # find the max error across all groups
    maxerr = float(err.max())
    return int8val, scale, maxerr
