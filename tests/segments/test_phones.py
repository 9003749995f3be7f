"""The E.164 fast path returns exactly what phonenumbers.parse() returns, or steps aside."""

import random

import phonenumbers
import pytest
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from segments.phones import parse, parse_e164

TYPES = [PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE, PhoneNumberType.TOLL_FREE,
         PhoneNumberType.PREMIUM_RATE, PhoneNumberType.VOIP, PhoneNumberType.PERSONAL_NUMBER,
         PhoneNumberType.PAGER, PhoneNumberType.UAN, PhoneNumberType.VOICEMAIL, PhoneNumberType.SHARED_COST]


def _slow(text: str):
    try:
        return phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        return None


def _example_texts() -> list[str]:
    texts = set()
    for region in phonenumbers.SUPPORTED_REGIONS:
        for kind in TYPES:
            number = phonenumbers.example_number_for_type(region, kind)
            if number is None:
                continue
            e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
            texts.add(e164)
            # The national prefix written after the country code ("+44 0 20...", a common mistake).
            prefix = phonenumbers.PhoneMetadata.metadata_for_region(region).national_prefix
            if prefix:
                texts.add(f"+{number.country_code}{prefix}{e164[len(str(number.country_code)) + 1:]}")
    for code in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS:
        number = phonenumbers.example_number_for_non_geo_entity(code)
        if number is not None:
            texts.add(phonenumbers.format_number(number, PhoneNumberFormat.E164))
    return sorted(texts)


def test_every_regions_example_numbers_parse_as_the_library_parses_them():
    texts = _example_texts()
    assert len(texts) > 1000
    fast_hits = 0
    for text in texts:
        fast = parse_e164(text)
        if fast is not None:
            fast_hits += 1
            assert fast == _slow(text), text
            assert phonenumbers.is_valid_number(fast) == phonenumbers.is_valid_number(_slow(text)), text
    assert fast_hits > 0.95 * len(texts)


@pytest.mark.parametrize("seed", range(4))
def test_random_plus_digit_strings_parse_as_the_library_parses_them_or_are_left_to_it(seed):
    rng = random.Random(seed)
    for _ in range(5000):
        text = "+" + "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 22)))
        fast = parse_e164(text)
        if fast is not None:
            assert fast == _slow(text), text


@pytest.mark.parametrize("text, region", [("012-345 6789", "MY"), ("+60 12-345 6789", None), ("tel:+60123456789", None),
                                          ("+60123456789 ext. 12", None), ("+０１２", None), ("00601234567", "MY")])
def test_other_formats_go_to_the_library_parser(text, region):
    assert parse_e164(text) is None
    try:
        expected = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        with pytest.raises(phonenumbers.NumberParseException):
            parse(text, region)
    else:
        assert parse(text, region) == expected


@pytest.mark.parametrize("seed", range(4))
def test_is_valid_answers_as_the_library_does(seed):
    from segments.phones import is_valid

    rng = random.Random(seed)
    texts = _example_texts()
    # Example numbers (valid) and their neighbours with a digit changed, dropped or added (often not).
    for text in rng.sample(texts, 400):
        for variant in (text, text[:-1], text + rng.choice("0123456789"),
                        text[:-2] + rng.choice("0123456789") + text[-1]):
            number = _slow(variant)
            if number is not None:
                assert is_valid(number) == phonenumbers.is_valid_number(number), variant
    valid = sum(is_valid(_slow(t)) for t in texts if _slow(t) is not None)
    assert valid > 0.9 * len(texts)


def test_e164_formats_as_the_library_does():
    from segments.phones import e164

    for text in _example_texts()[::7]:
        number = _slow(text)
        if number is not None:
            assert e164(number) == phonenumbers.format_number(number, PhoneNumberFormat.E164)
