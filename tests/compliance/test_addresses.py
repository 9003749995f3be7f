import pytest
from hypothesis import given
from hypothesis import strategies as st

from compliance.addresses import address_hash, email_quality, normalize_email, normalize_phone


@given(case=st.lists(st.booleans(), min_size=30, max_size=30), left=st.sampled_from(["", " ", "\t", "  \n"]),
       right=st.sampled_from(["", " ", "\r\n"]), unicode_domain=st.booleans())
def test_every_spelling_of_a_suppressed_address_maps_to_one_key(case, left, right, unicode_domain):
    domain = "bücher.example" if unicode_domain else "xn--bcher-kva.example"
    base = f"aiko.tanaka@{domain}"
    variant = "".join(ch.upper() if flip else ch for ch, flip in zip(base, case, strict=False)) + base[len(case):]
    assert address_hash("email", left + variant + right) == address_hash("email", "aiko.tanaka@xn--bcher-kva.example")


@pytest.mark.parametrize("spelling", ["+1 415-555-0100", "+14155550100", "(415) 555-0100", " 415.555.0100 "])
def test_every_spelling_of_a_phone_number_maps_to_one_key(settings, spelling):
    settings.PHONENUMBER_DEFAULT_REGION = "US"
    assert normalize_phone(spelling) == "+14155550100"
    assert address_hash("sms", spelling) == address_hash("sms", "+14155550100")


def test_email_and_sms_keys_never_collide():
    assert address_hash("email", "+14155550100") != address_hash("sms", "+14155550100")


@pytest.mark.parametrize("email, quality", [
    ("aiko@kedai-customer.jp", "ok"), ("test@test.com", "suspect"), ("asdf@asdf.com", "suspect"),
    ("info@kedai-customer.jp", "suspect"), ("postmaster@kedai-customer.jp", "suspect"),
    ("no-at-sign", "invalid"), ("missing@domain", "invalid"), ("a b@kedai-customer.jp", "invalid"),
    ("@kedai-customer.jp", "invalid"), ("", "invalid"),
])
def test_obviously_fake_role_and_invalid_addresses_are_recognised(email, quality):
    assert email_quality(email) == quality


def test_normalize_email_keeps_the_local_part_but_lowercases_it():
    assert normalize_email("  Aiko+Promo@Example.JP ") == "aiko+promo@example.jp"
