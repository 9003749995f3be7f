"""Template authors get personalisation, never Python objects, settings or the database."""

import pytest
from django.template import TemplateSyntaxError

from channels.rendering import contact_context, render_string, validate_template
from segments.models import Contact

pytestmark = pytest.mark.django_db


@pytest.fixture
def aiko(shop):
    return Contact.objects.create(email="aiko@example.jp", first_name="Aiko", properties={
        "points": 40, "vip": True, "_secret": "hidden", "nested": {"a": 1}})


def render(source: str, contact) -> str:
    return render_string(source, contact_context(contact))


@pytest.mark.parametrize("source", [
    "{{ settings }}", "{{ settings.SECRET_KEY }}", "{{ request }}", "{{ contact.properties._secret }}",
    "{{ view }}", "{{ contact.__class__ }}", "{{ shop.__dict__ }}", "{{ recently_viewed.__globals__ }}",
    "{{ last_order.__code__.co_consts }}",
])
def test_nothing_outside_the_plain_context_is_reachable(aiko, source, settings):
    try:
        out = render(source, aiko)
    except TemplateSyntaxError as exc:  # underscore names are refused outright
        assert "underscore" in str(exc)
        return
    assert settings.SECRET_KEY not in out
    assert "hidden" not in out and "<" not in out and "function" not in out and "class" not in out


@pytest.mark.parametrize("source", [
    "{% debug %}", "{% load static %}", "{% include 'admin/base.html' %}", "{% extends 'admin/base.html' %}",
    "{% url 'admin:index' %}", "{% csrf_token %}", "{{ contact|pprint }}",
])
def test_dangerous_tags_are_not_available(aiko, source):
    assert validate_template(source) is not None
    with pytest.raises(TemplateSyntaxError):
        render(source, aiko)


def test_personalisation_with_fallbacks_and_conditionals(aiko):
    source = ("Hi {{ contact.first_name|default:'there' }}! {% if contact.vip %}VIP{% endif %} "
              "{{ contact.points }} points. {{ contact.properties.nested }}")
    assert render(source, aiko).strip() == "Hi Aiko! VIP 40 points."
    nameless = Contact.objects.create(email="x@example.jp")
    assert render("Hi {{ contact.first_name|default:'there' }}!", nameless) == "Hi there!"


def test_html_is_escaped_but_subject_rendering_can_be_plain(aiko):
    aiko.first_name = "<script>alert(1)</script>"
    assert "<script>" not in render("{{ contact.first_name }}", aiko)
    assert render_string("{{ contact.first_name }}", contact_context(aiko), autoescape=False) == aiko.first_name


def test_expensive_blocks_cost_no_query_unless_used(aiko, django_assert_num_queries):
    context = contact_context(aiko)
    with django_assert_num_queries(0):
        render_string("Hello {{ contact.first_name }}", context)


def test_channels_links_and_list_headers_are_the_ones_compliance_makes(siti, settings):
    """channels.email.compliance_links skips reverse() per message; what it makes must not drift."""
    import re

    from channels.email import compliance_links
    from compliance import messaging, tokens

    settings.COMPLIANCE = {**settings.COMPLIANCE, "UNSUBSCRIBE_MAILTO": "unsub@kedai.example"}
    ours = compliance_links(siti)

    def shape(text):  # tokens carry a timestamp: compare what they name, and everything around them
        names = [tokens.read_unsubscribe(t)["c"] for t in re.findall(r"/u/([^/]+)/", text)]
        names += [tokens.read_unsubscribe(t)["c"] for t in re.findall(r"unsubscribe%20([^>]+)>", text)]
        names += [tokens.read_preferences(t)["c"] for t in re.findall(r"/preferences/([^/]+)/", text)]
        return re.sub(r"(/u/|/preferences/|unsubscribe%20)[^/>]+", r"\1TOKEN", text), names

    assert shape(ours["unsubscribe_url"]) == shape(messaging.unsubscribe_url(siti))
    assert shape(ours["preferences_url"]) == shape(messaging.preferences_url(siti))
    theirs = messaging.list_unsubscribe_headers(siti)
    assert ours["headers"].keys() == theirs.keys()
    for name in theirs:
        assert shape(ours["headers"][name]) == shape(theirs[name])
    assert shape(ours["headers"]["List-Unsubscribe"])[1] == [siti.pk, siti.pk]


def test_a_reused_template_id_and_version_never_renders_the_old_content():
    """SQLite can give a deleted template's id to the next one (version 1 again)."""
    key = (987654, 1, "html")
    assert render_string("old {{ x }}", {"x": 1}, key=key) == "old 1"
    assert render_string("new {{ x }}", {"x": 2}, key=key) == "new 2"
    assert render_string("new {{ x }}", {"x": 3}, key=key) == "new 3"
