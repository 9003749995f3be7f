"""import_contacts: every layout, every messy-file case the issue names, consent, idempotency."""

import csv
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from segments.models import Contact, ContactIdentifier

pytestmark = pytest.mark.django_db

SHOPIFY = (
    "Customer ID,First Name,Last Name,Email,Accepts Email Marketing,Default Address Company,"
    "Default Address Address1,Default Address Address2,Default Address City,Default Address Province Code,"
    "Default Address Country Code,Default Address Zip,Default Address Phone,Phone,Accepts SMS Marketing,"
    "Total Spent,Total Orders,Note,Tax Exempt,Tags\n"
    "'7120463151259,Aiko,Tanaka,AIKO@Example.JP ,yes,,1-1 Chiyoda,,Tokyo,13,JP,100-0001,,'090-1234-5678,no,"
    "120.00,2,\"Likes matcha, not coffee\nCall before delivery\",no,\"vip, tokyo\"\n"
    "'7120463151260,Ben,Lee,ben@example.com,no,,,,,,MY,,,'012-345 6789,yes,0.00,0,,no,\n"
)
MAILCHIMP_HEADER = ("Email Address,First Name,Last Name,Address,Phone Number,Birthday,MEMBER_RATING,OPTIN_TIME,"
                    "OPTIN_IP,CONFIRM_TIME,CONFIRM_IP,LATITUDE,LONGITUDE,GMTOFF,DSTOFF,TIMEZONE,CC,REGION,"
                    "LAST_CHANGED,LEID,EUID,NOTES,TAGS")


def run(path, **flags) -> str:
    return call_command("import_contacts", path, **flags)


def report(path) -> list[dict]:
    with open(Path(path).with_name(Path(path).stem + ".errors.csv"), newline="") as f:
        return list(csv.DictReader(f))


def test_it_imports_shopifys_customer_export_with_bom_crlf_quoted_newlines_and_apostrophes(write_file, consents):
    path = write_file("customers_export.csv", SHOPIFY, bom=True, crlf=True)
    out = run(path)
    assert out.startswith("created 2, updated 0, skipped 0, errors 0")
    aiko = Contact.objects.get(email="aiko@example.jp")
    assert (aiko.first_name, aiko.country, str(aiko.phone)) == ("Aiko", "JP", "+819012345678")
    assert aiko.properties["note"] == "Likes matcha, not coffee\r\nCall before delivery"
    assert sorted(aiko.tags.values_list("name", flat=True)) == ["tokyo", "vip"]
    assert ContactIdentifier.objects.filter(contact=aiko, source="shopify", value="7120463151259").exists()
    ben = Contact.objects.get(email="ben@example.com")
    assert str(ben.phone) == "+60123456789"  # national Malaysian number, the row's country as region
    stated = {(c["contact"].email, c["channel"], c["state"]) for c in consents.calls}
    assert stated == {("aiko@example.jp", "email", "subscribed"), ("aiko@example.jp", "sms", "not_subscribed"),
                      ("ben@example.com", "email", "not_subscribed"), ("ben@example.com", "sms", "subscribed")}
    proof = consents.for_email("aiko@example.jp")[0]["proof"]
    assert proof["file"] == "customers_export.csv" and proof["line"] == 2 and proof["layout"] == "shopify_customers"
    assert all(c["trigger_flows"] is False and c["source"] == "import" for c in consents.calls)


def test_mailchimp_subscribed_export_keeps_optin_time_ip_and_confirm_time_as_proof(write_file, consents):
    path = write_file("subscribed_members_export_1a2b3c.csv", MAILCHIMP_HEADER + "\n"
                      "ada@lovelace.com,Ada,Lovelace,,,,4,2024-03-14 09:12:31,10.0.0.1,2024-03-14 09:14:00,10.0.0.2,"
                      ",,,,Europe/London,GB,,2024-03-15 10:00:00,44877845,c2cb0681af,,\"\"\"VIP\"\",\"\"Blog\"\"\"\n")
    run(path)
    (call,) = consents.calls
    assert call["state"] == "subscribed" and call["channel"] == "email"
    assert call["occurred_at"].isoformat() == "2024-03-14T09:14:00+00:00"  # CONFIRM_TIME, in UTC
    assert {call["proof"][k] for k in ("optin_time", "optin_ip", "confirm_time", "confirm_ip")} == {
        "2024-03-14 09:12:31", "10.0.0.1", "2024-03-14 09:14:00", "10.0.0.2"}
    ada = Contact.objects.get(email="ada@lovelace.com")
    assert ada.timezone == "Europe/London" and sorted(ada.tags.values_list("name", flat=True)) == ["Blog", "VIP"]


@pytest.mark.parametrize("kind, extra_header, extra_cells, state", [
    ("unsubscribed", "UNSUB_TIME,UNSUB_CAMPAIGN_TITLE,UNSUB_CAMPAIGN_ID,UNSUB_REASON,UNSUB_REASON_OTHER",
     "2024-05-01 08:00:00,Spring sale,abc123,NORMAL,", "unsubscribed"),
    ("cleaned", "CLEAN_TIME,CLEAN_CAMPAIGN_TITLE,CLEAN_CAMPAIGN_ID", "2024-05-02 08:00:00,Spring sale,abc123", "cleaned"),
])
def test_mailchimp_unsubscribed_and_cleaned_exports_never_subscribe(write_file, consents, kind, extra_header,
                                                                    extra_cells, state):
    header = MAILCHIMP_HEADER.replace(",NOTES,TAGS", "") + "," + extra_header + ",NOTES,TAGS"
    row = "gone@example.com,Gone,Person,,,,2,2020-01-01 00:00:00,1.2.3.4,2020-01-01 00:01:00,,,,,,,,,,1,e1," + \
          extra_cells + ",,"
    run(write_file(f"{kind}_members_export.csv", header + "\n" + row + "\n"))
    assert [c["state"] for c in consents.calls] == [state]
    assert "subscribed" not in [c["state"] for c in consents.calls]


def test_klaviyo_profile_export_maps_its_columns_and_consent(write_file, consents):
    path = write_file("klaviyo_profiles.csv",
                      "Email,Phone Number,First Name,Last Name,Organization,Title,Address,Address 2,City,"
                      "State / Region,Country,Zip Code,Source,Email Marketing Consent,SMS Marketing Consent\n"
                      "kim@example.com,+60 12-345 6780,Kim,Tan,,,,,Kuala Lumpur,WP,MY,50450,Signup form,"
                      "SUBSCRIBED,NEVER_SUBSCRIBED\n")
    run(path)
    kim = Contact.objects.get(email="kim@example.com")
    assert str(kim.phone) == "+60123456780" and kim.properties["city"] == "Kuala Lumpur"
    assert {(c["channel"], c["state"]) for c in consents.calls} == {("email", "subscribed"), ("sms", "not_subscribed")}


def test_our_template_keeps_custom_columns_as_properties(write_file):
    run(write_file("template.csv", "email,phone,first_name,locale,shoe_size,loyalty_tier\nz@x.io,,Zed,ms,42,gold\n"))
    zed = Contact.objects.get(email="z@x.io")
    assert zed.locale == "ms" and zed.properties == {"shoe_size": "42", "loyalty_tier": "gold"}


def test_rows_without_usable_email_or_phone_are_reported_with_line_and_reason_and_others_go_in(write_file):
    path = write_file("mixed.csv", "email,phone,country,first_name\n"
                                   "good@example.com,,,Good\n"
                                   "not-an-email,,,Bad\n"
                                   ",12,MY,Short\n"
                                   ",,,Nobody\n"
                                   "also.good@example.com,,,Fine\n")
    out = run(path)
    assert "created 2" in out and "errors 3" in out
    errors = [r for r in report(path) if r["level"] == "error"]
    assert [(r["line"], r["reason"]) for r in errors] == [
        ("3", "email 'not-an-email' is not a valid address"),
        ("4", "phone '12' is not a valid number for MY"),
        ("5", "no email address or phone number"),
    ]
    assert Contact.objects.count() == 2


def test_an_invalid_phone_next_to_a_valid_email_imports_the_email_and_warns(write_file):
    path = write_file("warn.csv", "email,phone,country\nw@example.com,999,MY\n")
    assert "created 1" in run(path)
    assert Contact.objects.get(email="w@example.com").phone is None
    assert report(path)[0]["level"] == "warning"


def test_the_same_person_twice_merges_by_email_then_by_phone(write_file):
    path = write_file("dupes.csv", "email,phone,first_name,last_name,country\n"
                                   "Sam@Example.com,,Sam,,\n"
                                   " sam@example.com ,0123456789,,Smith,MY\n"
                                   ",+60123456789,Samuel,,\n"
                                   "other@example.com,,Other,,\n")
    out = run(path)
    assert "created 2" in out and "skipped 2" in out
    sam = Contact.objects.get(email="sam@example.com")
    assert (sam.first_name, sam.last_name, str(sam.phone)) == ("Samuel", "Smith", "+60123456789")


def test_reimporting_the_same_file_changes_nothing(write_file, consents):
    path = write_file("customers_export.csv", SHOPIFY)
    run(path)
    before = list(Contact.objects.order_by("pk").values("pk", "email", "phone", "first_name", "properties", "updated_at"))
    keys = [c["proof"]["key"] for c in consents.calls]
    out = run(path)
    assert out.startswith("created 0, updated 0, skipped 2, errors 0")
    assert list(Contact.objects.order_by("pk").values("pk", "email", "phone", "first_name", "properties",
                                                      "updated_at")) == before
    assert [c["proof"]["key"] for c in consents.calls[len(keys):]] == keys  # the same statements, same keys


def test_an_update_fills_in_without_blanking_known_values(write_file):
    Contact.objects.create(email="keep@example.com", first_name="Keep", last_name="Me", country="SG")
    out = run(write_file("upd.csv", "email,first_name,last_name,country\nKEEP@example.com,,Mee,\n"))
    assert "updated 1" in out
    c = Contact.objects.get(email="keep@example.com")
    assert (c.first_name, c.last_name, c.country) == ("Keep", "Mee", "SG")


def test_unknown_layout_lists_the_expected_columns(write_file):
    with pytest.raises(CommandError) as exc:
        run(write_file("odd.csv", "E-mail Address,Name\na@b.c,A\n"))
    message = str(exc.value)
    assert "E-mail Address, Name" in message
    for expected in ("Shopify customer export", "Accepts Email Marketing", "Mailchimp", "OPTIN_TIME",
                     "Klaviyo profile export", "our contact template", "email / phone"):
        assert expected in message


def test_dry_run_writes_nothing_and_states_no_consent(write_file, consents):
    out = run(write_file("customers_export.csv", SHOPIFY), dry_run=True)
    assert out.startswith("Dry run (nothing written): would have created 2")
    assert Contact.objects.count() == 0 and consents.calls == []


def test_a_file_without_consent_columns_states_no_consent(write_file, consents):
    run(write_file("plain.csv", "email,first_name\nplain@example.com,Plain\n"))
    assert Contact.objects.filter(email="plain@example.com").exists()
    assert consents.calls == []


def test_consent_is_stated_only_when_the_importer_gives_source_and_basis(write_file, consents):
    path = write_file("optins.csv", "email,phone,country\nopt@example.com,0123456789,MY\n")
    with pytest.raises(CommandError, match="both"):
        run(path, consent_source="popup form")
    run(path, consent_source="popup form 2024", consent_basis="unticked opt-in box, wording v3", actor="ana")
    (call,) = consents.calls
    assert (call["channel"], call["state"]) == ("email", "subscribed")
    assert call["proof"]["consent_source"] == "popup form 2024" and call["proof"]["actor"] == "ana"


def test_stating_consent_for_a_file_with_consent_columns_is_refused(write_file):
    with pytest.raises(CommandError, match="own consent columns"):
        run(write_file("c.csv", "email,email_consent\na@example.com,yes\n"), consent_source="x", consent_basis="y")


def test_trigger_flows_switch_is_carried_on_the_consent_statement(write_file, consents):
    run(write_file("c.csv", "email,email_consent\nflow@example.com,yes\n"), trigger_flows=True)
    assert consents.calls[0]["trigger_flows"] is True


def test_a_file_that_is_not_utf8_is_refused_with_a_clear_message(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("email,first_name\nj@example.com,Jos\xe9\n".encode("latin-1"))
    with pytest.raises(CommandError, match="not UTF-8"):
        run(str(path))
