import pickle

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import gqlearn
from gqlearn import QuantizedTensor, dequantize, quantize
from gqlearn.packing import check_packed, pack, packed_row_bytes, packed_shape, unpack


def _values(rng, shape, bits):
    q = 2 ** (bits - 1) - 1
    return rng.integers(-q, q + 1, size=shape).astype(np.int8)


@given(bits=st.integers(2, 8), rows=st.integers(1, 5), n=st.integers(1, 70),
       seed=st.integers(0, 2**32 - 1))
def test_pack_unpack_round_trip(bits, rows, n, seed):
    v = _values(np.random.default_rng(seed), (rows, n), bits)
    p = pack(v, bits)
    assert p.shape == packed_shape(v.shape, bits) == (rows, packed_row_bytes(n, bits))
    assert p.dtype == (np.int8 if bits == 8 else np.uint8)
    assert np.array_equal(unpack(p, bits, n), v)
    check_packed(p, bits, n)


def _bit_reference(v, bits):
    """Independent reference: a string of bits, value i at bits [i*bits, (i+1)*bits) of its row
    read little-endian, field q + 2**(bits-1), each row padded with zero values to 8."""
    out = []
    for row in v.reshape(-1, v.shape[-1]):
        fields = [int(q) + (1 << (bits - 1)) for q in row]
        fields += [1 << (bits - 1)] * (-len(fields) % 8)
        acc = sum(f << (i * bits) for i, f in enumerate(fields))
        out.append(list(acc.to_bytes(len(fields) * bits // 8, "little")))
    return np.array(out, dtype=np.uint8)


@pytest.mark.parametrize("bits", range(2, 8))
def test_pack_layout_matches_bit_string_reference(bits):
    v = _values(np.random.default_rng(bits), (3, 21), bits)
    assert np.array_equal(pack(v, bits), _bit_reference(v, bits))


def test_pack_4bit_is_two_nibbles_per_byte_low_first():
    v = np.array([-7, 7, 0, 1, -1, 3, -3, 2], np.int8)
    # fields q + 8: 1, 15, 8, 9, 7, 11, 5, 10
    assert pack(v, 4).tolist() == [1 | 15 << 4, 8 | 9 << 4, 7 | 11 << 4, 5 | 10 << 4]


def test_pack_2bit_is_four_values_per_byte():
    v = np.array([-1, 0, 1, 1, 0, 0, 0, -1], np.int8)  # fields 1, 2, 3, 3, 2, 2, 2, 1
    assert pack(v, 2).tolist() == [1 | 2 << 2 | 3 << 4 | 3 << 6, 2 | 2 << 2 | 2 << 4 | 1 << 6]


def test_check_packed_rejects_zero_field_and_nonzero_padding():
    p = pack(np.zeros((1, 6), np.int8), 4)
    bad = p.copy()
    bad[0, 0] &= 0xF0  # field 0 means -8, outside ±7
    with pytest.raises(ValueError, match="outside"):
        check_packed(bad, 4, 6)
    bad = p.copy()
    bad[0, 3] = 0x99  # padding values 6, 7 set to 1
    with pytest.raises(ValueError, match="padding"):
        check_packed(bad, 4, 6)


@pytest.mark.parametrize("bits", range(2, 9))
def test_quantized_tensor_stores_packed_bytes(bits):
    w = np.random.default_rng(0).standard_normal((16, 64)).astype(np.float32)
    qt = quantize(w, 32, bits=bits)
    assert qt.values_nbytes == qt.packed.nbytes == 16 * 64 * bits // 8
    assert qt.nbytes == 16 * 64 * bits // 8 + 4 * 32
    assert qt.bits_per_weight == bits + 32 / 32
    assert qt.values.shape == (16, 64) and qt.values.dtype == np.int8
    assert np.abs(qt.values).max() == qt.qmax


def test_row_padding_is_counted():
    qt = quantize(np.ones((3, 10), np.float32), 5, bits=4)  # rows of 10 values take 8 bytes
    assert qt.values_nbytes == 3 * 8
    assert qt.bits_per_weight == 8 * (24 + 4 * 6) / 30


@given(bits=st.integers(2, 8), seed=st.integers(0, 2**32 - 1),
       shape=st.sampled_from([(7,), (3, 12), (2, 3, 20), (5, 9)]),
       backend=st.sampled_from(gqlearn.available_backends()))
def test_dequantize_packed_equals_int8_arithmetic(bits, seed, shape, backend):
    w = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    g = {7: 7, 12: 4, 20: 10, 9: 3}[shape[-1]]
    qt = quantize(w, g, bits=bits)
    ref = (qt.values.reshape(-1, g).astype(np.float32) * qt.scales.reshape(-1, 1)).reshape(shape)
    assert np.array_equal(dequantize(qt, backend=backend), ref)
    assert np.array_equal(dequantize(qt, backend=backend, chunk_elements=5), ref)


def test_from_packed_round_trip_and_errors():
    w = np.random.default_rng(1).standard_normal((4, 24)).astype(np.float32)
    qt = quantize(w, 8, bits=3)
    back = QuantizedTensor.from_packed(qt.packed, qt.shape, qt.scales, 8, bits=3)
    assert np.array_equal(back.values, qt.values) and back.nbytes == qt.nbytes
    with pytest.raises(ValueError, match=r"stored as uint8 \(4, 9\)"):
        QuantizedTensor.from_packed(qt.packed[:, :8], qt.shape, qt.scales, 8, bits=3)
    with pytest.raises(ValueError, match="stored as"):
        QuantizedTensor.from_packed(qt.packed.view(np.int8), qt.shape, qt.scales, 8, bits=3)


def test_quantized_tensor_is_immutable_and_pickles():
    qt = quantize(np.linspace(-1, 1, 32, dtype=np.float32), 16, bits=4)
    with pytest.raises(AttributeError):
        qt.bits = 8
    back = pickle.loads(pickle.dumps(qt))
    assert np.array_equal(back.values, qt.values) and back.bits == 4
    assert np.array_equal(back.scales, qt.scales)


def test_values_range_checked_before_packing():
    with pytest.raises(ValueError, match=r"\[-7, 7\]"):
        QuantizedTensor(np.array([8, 0], np.int8), np.ones(1, np.float32), 2, bits=4)
