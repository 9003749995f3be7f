"""The import's fast checks of cells agree with the slow, general ones they stand in for."""

import random

import pytest
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from segments.ingest.formats import (
    _PLAIN_EMAIL,
    NOT_SUBSCRIBED,
    SUBSCRIBED,
    UNSUBSCRIBED,
    RowError,
    clean_email,
    consent_state,
)

PARTS = ["a", "z", "0", "9", "-", "_", ".", "+", "'", "!", "#", "~", "é", "ü", "ß", "日", "xn--", "@", " ", '"',
         "[", "]", "(", ")", ",", ":", ";", "\\", "\u00a0", "\uffff", "-a", "a-", ".."]
TLDS = ["com", "my", "c", "c0m", "-co", "co-", "xn--p1ai", "xn--", "日本", "a" * 63, "a" * 64, ""]


def _part(rng: random.Random) -> str:
    return rng.choice("abxyz019") if rng.random() < 0.75 else rng.choice(PARTS)


def _candidate(rng: random.Random) -> str:
    local = "".join(_part(rng) for _ in range(rng.randint(1, 6)))
    labels = ["".join(_part(rng) for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(1, 3))]
    return f"{local}@{'.'.join(labels)}.{rng.choice(TLDS)}"


def _valid(value: str) -> bool:
    try:
        validate_email(value)
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize("seed", range(5))
def test_the_plain_address_regex_accepts_only_what_django_accepts(seed):
    rng = random.Random(seed)
    matched = 0
    for _ in range(20000):
        value = _candidate(rng)
        if _PLAIN_EMAIL.fullmatch(value):
            matched += 1
            assert _valid(value), value
    assert matched > 2000  # the generator does reach the fast path


@pytest.mark.parametrize("raw", ["  Ana@Example.COM ", "a.b+c@sub.example.co.uk", "user@localhost",
                                 '"quoted local"@example.com', "x@[192.0.2.1]", "münchen@bücher.de",
                                 "bad@-example.com", "bad@example", "two@@example.com", "a@b.c", "not-an-email"])
def test_clean_email_answers_as_validate_email_does(raw):
    normalized = raw.strip().replace(" ", "").lower()
    if _valid(normalized):
        assert clean_email(raw) == normalized
    else:
        with pytest.raises(RowError):
            clean_email(raw)


@pytest.mark.parametrize(("raw", "state"), [
    ("opt-in", SUBSCRIBED), ("Opt In", SUBSCRIBED), ("opted_in", SUBSCRIBED), (" Yes ", SUBSCRIBED),
    ("not subscribed", NOT_SUBSCRIBED), ("Never-Subscribed", NOT_SUBSCRIBED),
    ("opt-out", UNSUBSCRIBED), ("Opted Out", UNSUBSCRIBED), ("", None),
])
def test_consent_cells_are_read_whatever_their_dashes_spaces_and_case(raw, state):
    assert consent_state(raw) == state


def test_an_unknown_consent_cell_names_the_value():
    with pytest.raises(RowError, match="'maybe'"):
        consent_state("maybe")
