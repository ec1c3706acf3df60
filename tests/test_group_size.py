import pytest

from gqlearn import choose_group_size, halving_sequence
from gqlearn.group_size import parse_group_size, resolve_group_size, setting_label

WIDTHS = [288, 384, 576, 768, 896, 2048, 4096, 4864, 5120, 11008, 13824, 14336, 28672]


def test_classic_halving_turns_300_into_4():
    assert halving_sequence(4096, 300) == [300, 150, 75, 37, 18, 9, 4]
    assert choose_group_size(4096, 300, "halve") == 4
    assert choose_group_size(4096, 300) == 256
    assert choose_group_size(4096, 300, "divisor") == 256


@pytest.mark.parametrize("policy", ["pow2", "divisor", "halve"])
@pytest.mark.parametrize("dim", WIDTHS)
@pytest.mark.parametrize("requested", [32, 64, 100, 128, 256, 300, 1024])
def test_result_divides_and_never_exceeds_request(policy, dim, requested):
    g = choose_group_size(dim, requested, policy)
    assert dim % g == 0 and 1 <= g <= requested


@pytest.mark.parametrize("dim", WIDTHS)
def test_pow2_on_real_widths(dim):
    # every width listed is a multiple of 32, so a power-of-two request of 32+ never drops below 32
    for requested in (32, 64, 128, 256):
        g = choose_group_size(dim, requested)
        assert g & (g - 1) == 0 and g >= 32
    for requested in (100, 300, 1000):
        g = choose_group_size(dim, requested)
        assert g >= 32 and g >= choose_group_size(dim, requested, "halve")


@pytest.mark.parametrize("dim, requested, pow2, divisor, halve", [
    (384, 256, 128, 192, 128), (576, 256, 64, 192, 64), (288, 256, 32, 144, 32),
    (896, 256, 128, 224, 128), (11008, 256, 256, 256, 256), (4096, 100, 64, 64, 1),
    (28672, 300, 256, 256, 4), (288, 1024, 32, 288, 32),
])
def test_policies_on_known_cases(dim, requested, pow2, divisor, halve):
    assert choose_group_size(dim, requested) == pow2
    assert choose_group_size(dim, requested, "divisor") == divisor
    assert choose_group_size(dim, requested, "halve") == halve


def test_halving_can_be_much_worse_than_pow2():
    worse = [d for d in WIDTHS if choose_group_size(d, 300, "halve") < choose_group_size(d, 300)]
    assert worse == WIDTHS  # 300 halves to 4 or 9 or 18 ... for every real width


@pytest.mark.parametrize("args, match", [((0, 32), "dim"), ((4096, 0), "requested"),
                                         ((4096, 2.5), "requested"),
                                         ((4096, 32, "best"), "policy")])
def test_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        choose_group_size(*args)


def test_parse_and_resolve_group_size():
    assert parse_group_size(" 64 ") == 64 and parse_group_size("per_channel") == "row"
    for bad in ("0", "-4", "big", 0):
        with pytest.raises(ValueError, match="group size"):
            parse_group_size(bad)
    assert resolve_group_size((384, 384), 256) == 128
    assert resolve_group_size((384, 384), 256, "divisor") == 192
    assert resolve_group_size((384, 384), 300, "halve") == 4  # 300, 150, 75, 37, 18, 9, 4
    assert resolve_group_size((7, 384), "tensor") == 7 * 384


def test_setting_label_names_every_kind_of_setting():
    assert setting_label(8, 32) == "int8 g=32" and setting_label(8, "32") == "int8 g=32"
    assert setting_label(4, "per_channel") == "int4 per-row"
    assert setting_label(3, "tensor") == "int3 per-tensor"
    assert setting_label(4, 64, asymmetric=True) == "int4 asym g=64"
    assert setting_label(4, "row") == "int4 per-row"
    assert setting_label(8, "per-tensor") == "int8 per-tensor"
    with pytest.raises(ValueError, match="group size"):
        setting_label(8, 0)
