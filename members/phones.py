"""Mobile numbers: parse what people type, store E.164, refuse what is not a mobile."""

import unicodedata

import phonenumbers
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

DEFAULT_REGION = "CN"


def normalize_mobile(raw: str | int, region: str = DEFAULT_REGION) -> str:
    """``'138 1234-5678'``, ``'+86 13812345678'``, ``'８６13812345678'`` → ``'+8613812345678'``.

    A number is read as a mainland number unless it carries a country code or ``region`` says
    otherwise; it must be a mobile (or fixed-or-mobile) number of that region.
    """
    text = unicodedata.normalize("NFKC", str(raw)).strip()
    if not text:
        raise ValidationError(_("Enter a mobile number."), code="required")
    digits = "".join(ch for ch in text if ch.isdigit() or ch == "+")
    # People write the mainland code without a plus: 8613812345678 or 008613812345678.
    if region == DEFAULT_REGION and not digits.startswith("+"):
        if digits.startswith("0086"):
            digits = "+" + digits[2:]
        elif digits.startswith("86") and len(digits) == 13:
            digits = "+" + digits
    try:
        number = phonenumbers.parse(digits, region)
    except phonenumbers.NumberParseException:
        raise ValidationError(
            _("“%(value)s” is not a phone number."), code="invalid", params={"value": text}
        ) from None
    kind = phonenumbers.number_type(number)
    if not phonenumbers.is_valid_number(number) or kind not in (
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
    ):
        raise ValidationError(
            _("“%(value)s” is not a valid mobile number."), code="invalid", params={"value": text}
        )
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
