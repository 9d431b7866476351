"""The batch fast path never accepts what the serializer refuses, and returns what it would."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework import serializers

from api.fastpath import plain_order
from api.serializers import OrderSerializer

TEXT = st.one_of(
    st.text(max_size=70),
    st.sampled_from(
        ["S0001", " S0001", "A1", "", "  ", "a\x00b", "\t", "x" * 64, "x" * 65, "+8613800138000"]
    ),
)
MONEY = st.one_of(
    st.sampled_from(
        ["100.00", "0", "1.5", "-1", "1e3", "12345678901.00", "1234567890.12", "1.234", "NaN", " 1"]
    ),
    st.decimals(allow_nan=False, allow_infinity=False, places=2).map(str),
    st.integers(),
    st.floats(allow_nan=True),
)
WHEN = st.one_of(
    st.sampled_from(
        [
            "2026-11-20T10:00:00+08:00",
            "2026-11-20T10:00:00Z",
            "2026-11-20T10:00:00",
            "2026-11-20 10:00:00+08:00",
            "0001-01-01T00:00:00+08:00",
            "2026-13-01T00:00:00Z",
            "tomorrow",
        ]
    ),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
)
LINE = st.fixed_dictionaries(
    {
        "sku": TEXT,
        "quantity": st.one_of(st.integers(-2, 2_000_000), st.just("2"), st.just(True)),
        "amount": MONEY,
    },
    optional={"name": TEXT, "category": TEXT, "extra": st.integers()},
)
BUYER = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {},
        optional={
            "mobile": TEXT,
            "platform": st.sampled_from(["jd_pin", "tmall_ouid", "x"]),
            "external_id": TEXT,
        },
    ),
)
ORDER = st.fixed_dictionaries(
    {
        "channel": st.sampled_from(["store", "tmall", "jd", "nope", ""]),
        "order_no": TEXT,
        "paid_at": WHEN,
        "amount": MONEY,
    },
    optional={"store": TEXT, "guide": TEXT, "member": BUYER, "items": st.lists(LINE, max_size=3)},
)


def plain(value):
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(ORDER)
def test_the_fast_path_agrees_with_the_serializer(order):
    fast = plain_order(order)
    if fast is None:
        return
    try:
        slow = OrderSerializer().run_validation(order)
    except serializers.ValidationError as error:  # pragma: no cover - the failure this test exists for
        pytest.fail(f"fast path accepted what the serializer refuses: {order!r}: {error.detail}")
    assert plain(fast) == plain(slow)


def test_the_usual_order_takes_the_fast_path():
    order = {
        "channel": "store",
        "order_no": "A1",
        "paid_at": "2026-11-20T10:00:00+08:00",
        "amount": "100.00",
        "store": "S0001",
        "member": {"mobile": "+8613800138000"},
        "items": [{"sku": "SKU1", "category": "护肤", "quantity": 2, "amount": "100.00"}],
    }
    assert plain_order(order) is not None
