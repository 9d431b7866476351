import pytest
from django.core.exceptions import ValidationError

from members.phones import normalize_mobile


@pytest.mark.parametrize(
    "raw",
    [
        "13812345678",
        "138 1234 5678",
        "138-1234-5678",
        "+86 138 1234 5678",
        "8613812345678",
        "008613812345678",
        "１３８１２３４５６７８",
        " 13812345678\t",
        13812345678,
    ],
)
def test_mainland_mobiles_in_every_common_shape_normalise_to_e164(raw):
    assert normalize_mobile(raw) == "+8613812345678"


@pytest.mark.parametrize("raw", ["", "12345", "010-12345678", "1381234567", "23812345678", "abc"])
def test_what_is_not_a_mainland_mobile_is_refused(raw):
    with pytest.raises(ValidationError):
        normalize_mobile(raw)


def test_another_region_is_accepted_when_given_or_when_the_number_carries_its_code():
    assert normalize_mobile("9123 4567", region="HK") == "+85291234567"
    assert normalize_mobile("+852 9123 4567") == "+85291234567"
