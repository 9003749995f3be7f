"""Phone numbers already written in E.164 ("+60123456789"), parsed without the general parser.

phonenumbers.parse() accepts any format (punctuation, national numbers, "tel:" URIs,
extensions...) and costs ~17 µs a number; an import of 100k rows spends seconds there, and the
suppression hash parses every stored number again. A "+" followed by digits only needs just the
steps parse() takes for such input: the country code, the national prefix the region allows
to strip, Italian leading zeros. parse_e164() takes those steps with the library's own functions
and metadata, so it returns what parse() returns (tests/segments/test_phones.py compares the two
on every region's example numbers); anything else goes to parse() unchanged.
"""

import re

import phonenumbers
from phonenumbers import PhoneMetadata
from phonenumbers import phonenumberutil as pu

_MIN_DIGITS, _MAX_DIGITS = 4, 20  # outside: let parse() decide (and raise)


def parse_e164(text: str, numobj=None):
    """The number parse(text) would return, when text is "+" and ASCII digits; else None."""
    digits = text[1:]
    if (text[:1] != "+" or not (_MIN_DIGITS <= len(digits) <= _MAX_DIGITS) or not digits.isascii()
            or not digits.isdigit() or digits[0] == "0"):
        return None
    for size in (1, 2, 3):  # calling codes are prefix-free: the first known one is the one
        country_code = int(digits[:size])
        if country_code in pu.COUNTRY_CODE_TO_REGION_CODE:
            national = digits[size:]
            break
    else:
        return None
    if not (pu._MIN_LENGTH_FOR_NSN <= len(national) <= pu._MAX_LENGTH_FOR_NSN):
        return None
    region = pu.region_code_for_country_code(country_code)
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(country_code, region)
    if metadata is None:
        return None
    # parse(): strip the national prefix / carrier code only if what remains is still a possible length.
    _carrier, stripped, _ = pu._maybe_strip_national_prefix_carrier_code(national, metadata)
    if pu._test_number_length(stripped, metadata) not in (
            pu.ValidationResult.TOO_SHORT, pu.ValidationResult.IS_POSSIBLE_LOCAL_ONLY,
            pu.ValidationResult.INVALID_LENGTH):
        national = stripped
    if not (pu._MIN_LENGTH_FOR_NSN <= len(national) <= pu._MAX_LENGTH_FOR_NSN):
        return None
    number = numobj if numobj is not None else phonenumbers.PhoneNumber()
    number.country_code = country_code
    pu._set_italian_leading_zeros_for_phone_number(national, number)
    number.national_number = int(national)
    return number


def parse(text: str, region: str | None = None, numobj=None):
    """phonenumbers.parse(text, region), with the E.164 fast path."""
    number = parse_e164(text, numobj)
    if number is None:
        number = phonenumbers.parse(text, region, numobj=numobj)
    return number


_TYPE_DESCS = ("premium_rate", "toll_free", "shared_cost", "voip", "personal_number", "pager", "uan", "voicemail")
_CHECKS: dict[int, tuple] = {}  # id(metadata) → (metadata, general check, type checks)


def _check(desc):
    """What _is_number_matching_desc() tests, compiled once: (possible lengths or None, pattern)."""
    if desc is None or not desc.national_number_pattern:
        return None
    return (frozenset(desc.possible_length) or None, re.compile(desc.national_number_pattern))


def _checks(metadata) -> tuple:
    found = _CHECKS.get(id(metadata))
    if found is None or found[0] is not metadata:
        kinds = ("fixed_line",) if metadata.same_mobile_and_fixed_line_pattern else ("mobile", "fixed_line")
        types = [c for c in (_check(getattr(metadata, k)) for k in (*kinds, *_TYPE_DESCS)) if c is not None]
        found = _CHECKS[id(metadata)] = (metadata, _check(metadata.general_desc), types)
    return found


def _matches(nsn: str, check) -> bool:
    lengths, pattern = check
    return (lengths is None or len(nsn) in lengths) and pattern.fullmatch(nsn) is not None


def is_valid(number) -> bool:
    """phonenumbers.is_valid_number(number), testing the common types (fixed line, mobile) first.

    The library tests eight rare types before those two because it also tells the type, and
    compiles each pattern on every call; only whether one matches matters here. Calling codes
    shared by several regions (+1, +7, +44...) need the library's choice of region first: those
    go to it unchanged.
    """
    regions = pu.COUNTRY_CODE_TO_REGION_CODE.get(number.country_code)
    if not regions or len(regions) != 1:
        return phonenumbers.is_valid_number(number)
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(number.country_code, regions[0])
    if metadata is None:
        return False
    _metadata, general, types = _checks(metadata)
    nsn = pu.national_significant_number(number)
    if general is None or not _matches(nsn, general):
        return False
    return any(_matches(nsn, check) for check in types)


def e164(number) -> str:
    """phonenumbers.format_number(number, E164) for a parsed number (national_number set)."""
    return f"+{number.country_code}{pu.national_significant_number(number)}"
