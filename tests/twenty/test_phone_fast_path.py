"""The bare `+<digits>` shortcut of phone parsing gives phonenumbers.parse's own answer, or steps aside.

`shapes._read_plain_e164` skips `phonenumbers.parse` for the commonest form of a stored number. A
mistake there would send Twenty another national number or country than before (and make every
stored phone look edited), so it is held to parse's answer over every calling code the library
knows: its example numbers, random digits of every length, and the forms parse treats specially.
"""

from __future__ import annotations

import random

import phonenumbers
import pytest

from truth_forge.twenty import shapes


def _numbers() -> list[str]:
    rng = random.Random(22)
    out: list[str] = []
    for code, regions in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.items():
        for region in regions:
            for kind in (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE,
                         phonenumbers.PhoneNumberType.TOLL_FREE):
                example = phonenumbers.example_number_for_type(region if region != "001" else None, kind) \
                    if region != "001" else phonenumbers.example_number_for_non_geo_entity(code)
                if example is not None:
                    out.append(phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164))
        for length in range(4, 15 - len(str(code)) + 1):
            for _ in range(3):
                national = str(rng.randint(1, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(length - 1))
                out.append(f"+{code}{national}")
                out.append(f"+{code}0{national[1:]}")  # a national prefix (or Italy's zero) kept after the code
                out.append(f"+{code}1{national[1:]}")  # NANP's prefix, Argentina's 15...
    return out


NUMBERS = _numbers()


def _parsed(number: str, region: str | None) -> phonenumbers.PhoneNumber | None:
    try:
        return phonenumbers.parse(number, region)
    except phonenumbers.NumberParseException:
        return None


def test_the_shortcut_answers_as_parse_does_or_not_at_all() -> None:
    taken = 0
    for number in NUMBERS:
        fast = shapes._read_plain_e164(number)
        if fast is None:
            continue
        taken += 1
        # The default region never matters to a number that starts with "+".
        for region in (None, "US", "FR"):
            assert fast == _parsed(number, region), (number, region)
    # It is a shortcut only if most bare numbers take it (a regression to "never" would pass the above).
    assert taken > len(NUMBERS) // 3, (taken, len(NUMBERS))


@pytest.mark.parametrize("number", ["+44 20 7946 0018", "+4402079460018", "+390612345678", "0612345678",
                                    "+1 (617) 634-1545", "+800123", "+9991234567", "+33 6 12 34 56 78 ext. 12"])
def test_forms_parse_has_work_for_are_left_to_it(number: str) -> None:
    assert shapes._read_plain_e164(number) is None


def test_phone_parts_are_what_they_were_before_the_shortcut() -> None:
    """The three values Twenty stores, for numbers of one-region, shared and non-geographic codes."""
    assert shapes.phone_parts("+33671065284") == {"number": "671065284", "countryCode": "FR", "callingCode": "+33"}
    assert shapes.phone_parts("+16176341545") == {"number": "6176341545", "countryCode": "US", "callingCode": "+1"}
    assert shapes.phone_parts("+14165550123") == {"number": "4165550123", "countryCode": "CA", "callingCode": "+1"}
    assert shapes.phone_parts("+447432747566") == {"number": "7432747566", "countryCode": "GB", "callingCode": "+44"}
    assert shapes.phone_parts("+80012345678") == {"number": "12345678", "countryCode": "", "callingCode": "+800"}
    with pytest.raises(ValueError, match="not a possible number"):
        shapes.phone_parts("+3361234")
