"""Our own strings are translated into Japanese and Malay, and the admin shows them."""

import gettext
import re
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse
from django.utils import translation

from segments.dashboard import headline_numbers
from segments.models import Contact, EventType, OrderStatus

LANGS = ["ja", "ms"]
LOCALE_DIR = Path(settings.BASE_DIR) / "locale"
PLACEHOLDER = re.compile(r"%\([a-z_]+\)[-#0 +]*\d*(?:\.\d+)?[sdrfi]|%%")


def _unquote(s: str) -> str:
    s = s.strip()
    assert s.startswith('"') and s.endswith('"'), s
    return re.sub(r'\\(.)', lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), s[1:-1])


def parse_po(path: Path) -> list[dict]:
    """Entries of a .po file: msgid, msgid_plural, msgstr (one or more) and flags. Standard library only."""
    entries, entry, field = [], None, None
    for raw in path.read_text(encoding="utf-8").splitlines() + [""]:
        line = raw.strip()
        if not line:
            if entry and "msgid" in entry:
                entries.append(entry)
            entry, field = None, None
            continue
        entry = entry if entry is not None else {"flags": set(), "msgstr": {}}
        if line.startswith("#,"):
            entry["flags"] |= {f.strip() for f in line[2:].split(",")}
        elif line.startswith("#"):
            continue
        elif line.startswith("msgid ") and "msgid" in entry:
            # No blank line between two entries (makemessages does this after the header).
            entries.append(entry)
            entry = {"flags": set(), "msgstr": {}, "msgid": _unquote(line[6:])}
            field = ("msgid", None)
        elif m := re.match(r"(msgid|msgid_plural|msgctxt) (.*)", line):
            entry[m.group(1)] = _unquote(m.group(2))
            field = (m.group(1), None)
        elif m := re.match(r"msgstr(?:\[(\d+)\])? (.*)", line):
            index = int(m.group(1) or 0)
            entry["msgstr"][index] = _unquote(m.group(2))
            field = ("msgstr", index)
        elif line.startswith('"') and field:
            name, index = field
            if name == "msgstr":
                entry["msgstr"][index] += _unquote(line)
            else:
                entry[name] += _unquote(line)
        else:
            raise AssertionError(f"{path}: unexpected line {raw!r}")
    return entries


@pytest.fixture(params=LANGS)
def po(request):
    path = LOCALE_DIR / request.param / "LC_MESSAGES" / "django.po"
    assert path.exists(), f"{path} missing: run makemessages"
    return request.param, path, parse_po(path)


def test_every_message_is_translated_and_not_fuzzy(po):
    lang, path, entries = po
    header = next(e for e in entries if e["msgid"] == "")
    assert "fuzzy" not in header["flags"], f"{path}: fuzzy header (msgfmt would drop the charset)"
    assert f"Language: {lang}\n" in header["msgstr"][0]
    messages = [e for e in entries if e["msgid"] != ""]
    assert len(messages) > 100, f"{path}: only {len(messages)} messages"
    problems = []
    for e in messages:
        if "fuzzy" in e["flags"]:
            problems.append(f"fuzzy: {e['msgid']!r}")
        if not e["msgstr"] or any(not s.strip() for s in e["msgstr"].values()):
            problems.append(f"untranslated: {e['msgid']!r}")
        for s in e["msgstr"].values():
            if sorted(PLACEHOLDER.findall(s)) != sorted(PLACEHOLDER.findall(e["msgid"])):
                problems.append(f"placeholders differ: {e['msgid']!r} -> {s!r}")
    assert not problems, f"{path}:\n" + "\n".join(problems)


def test_compiled_catalog_matches_the_po_file(po):
    """The committed .mo is compiled from the current .po (nobody forgot compilemessages)."""
    lang, path, entries = po
    with open(path.with_suffix(".mo"), "rb") as f:
        catalog = gettext.GNUTranslations(f)
    for e in entries:
        if e["msgid"] and "msgid_plural" not in e and "msgctxt" not in e:
            assert catalog.gettext(e["msgid"]) == e["msgstr"][0], f"{lang}: stale .mo for {e['msgid']!r}"


@pytest.mark.parametrize(("lang", "expected"), [
    ("ja", {"contacts": "連絡先", "order_placed": "注文完了", "paid": "支払い済み", "revenue": "売上（30日間）"}),
    ("ms", {"contacts": "kenalan", "order_placed": "pesanan dibuat", "paid": "dibayar",
            "revenue": "Hasil jualan, 30 hari"}),
])
def test_model_labels_and_choices_translate(lang, expected):
    with translation.override(lang):
        assert str(Contact._meta.verbose_name_plural) == expected["contacts"]
        assert str(EventType.ORDER_PLACED.label) == expected["order_placed"]
        assert str(OrderStatus.PAID.label) == expected["paid"]
        assert translation.gettext("Revenue, 30 days") == expected["revenue"]
    with translation.override("en"):
        assert str(Contact._meta.verbose_name_plural) == "contacts"


@pytest.mark.django_db
@pytest.mark.parametrize(("lang", "labels", "note"), [
    ("ja", ["連絡先", "顧客", "売上（30日間）", "平均注文額（30日間）", "イベント（24時間）"], "リピート率 0.0%"),
    ("ms", ["Kenalan", "Pelanggan", "Hasil jualan, 30 hari", "Purata pesanan, 30 hari", "Peristiwa, 24 jam"],
     "kadar belian semula 0.0%"),
])
def test_dashboard_numbers_are_labelled_in_the_language(shop, lang, labels, note):
    with translation.override(lang):
        headline = headline_numbers()
    assert [h["label"] for h in headline] == labels
    assert headline[1]["note"] == note


@pytest.mark.django_db
@pytest.mark.parametrize("how", ["cookie", "accept-language"])
def test_contact_changelist_renders_in_japanese(staff_client, shop, how):
    Contact.objects.create(email="hanako@example.jp", first_name="花子", total_spent=1200, orders_count=2)
    url = reverse("admin:segments_contact_changelist")
    headers = {}
    if how == "cookie":
        staff_client.cookies[settings.LANGUAGE_COOKIE_NAME] = "ja"
    else:
        headers["HTTP_ACCEPT_LANGUAGE"] = "ja,en;q=0.5"
    # LocaleMiddleware activates the language for the thread; override() restores it afterwards.
    with translation.override("en"):
        response = staff_client.get(url, **headers)
    assert response.status_code == 200
    assert response.headers["Content-Language"] == "ja"
    body = response.content.decode()
    assert "hanako@example.jp" in body
    for text in ["購入金額合計", "名前", "電話番号", "連絡手段", "注文から集計値を再計算"]:
        assert text in body, f"{text!r} not on the Japanese contact list"
    assert "Total spent" not in body
    assert "Reachable by" not in body


@pytest.mark.django_db
def test_contact_changelist_stays_english_without_a_preference(staff_client, shop):
    Contact.objects.create(email="aminah@example.my", first_name="Aminah", total_spent=80, orders_count=1)
    with translation.override("en"):
        body = staff_client.get(reverse("admin:segments_contact_changelist"), HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "Total spent" in body
    assert "購入金額合計" not in body
