"""Contact-independent blocks rendered once per batch give exactly what rendering each message gives."""

import pytest
from django.template import Context

from channels.rendering import (
    _SHARED,
    compile_template,
    contact_context,
    free_variables,
    render_string,
    shared_fragments,
)
from segments.models import Contact

pytestmark = pytest.mark.django_db

TEMPLATE = """<h1>{{ contact.first_name|default:"Hello" }}</h1>
{% for p in best_sellers %}<a href="{{ p.url }}">{{ p.title }}</a> {{ p.price }}{% if forloop.last %}.{% endif %}{% empty %}none{% endfor %}
{% for p in best_sellers %}{% if contact.vip %}VIP {% endif %}{{ p.title }}{% endfor %}
{% with name=shop.name %}<p>{{ name|upper }}</p>{% endwith %}
{% if shop.currency == "MYR" %}<p>Ringgit</p>{% else %}<p>{{ shop.currency }}</p>{% endif %}
{% firstof shop.name "x" %}
<p>{{ contact.points }} points</p>"""


@pytest.fixture
def products(monkeypatch):
    rows = [{"title": f"Batik {i}", "url": f"https://kedai.example/p/{i}", "price": f"RM{i}.00"} for i in range(3)]
    monkeypatch.setattr("channels.rendering._best", {(4, 90): (float("inf"), rows)})
    return rows


def test_shared_rendering_equals_rendering_each_message(shop, products):
    contacts = [Contact.objects.create(email=f"c{i}@x.my", first_name=f"N{i}", properties={"vip": i % 2, "points": i})
                for i in range(4)]
    key = (999, 1, "html")
    alone = [render_string(TEMPLATE, contact_context(c), key=key) for c in contacts]
    with shared_fragments():
        together = [render_string(TEMPLATE, contact_context(c), key=key) for c in contacts]
        cached = dict(_SHARED.get())
    assert together == alone
    assert len(cached) == 3  # the three shareable blocks, rendered once for the four contacts
    assert "N0" in alone[0] and "N3" in alone[3] and "VIP Batik 0" in alone[1] and "VIP" not in alone[0]


def test_which_blocks_are_shared(shop):
    nodes = compile_template(TEMPLATE).nodelist
    free = {type(n).__name__ + str(i): free_variables(n) for i, n in enumerate(nodes) if free_variables(n)}
    shared = [name for name, needs in free.items() if needs <= {"shop", "best_sellers"}]
    # The plain product loop, the with and the if on shop: yes. The loop that reads contact.vip,
    # the contact's own fields, and a tag we do not analyse ({% firstof %}): no.
    assert [n.rstrip("0123456789") for n in shared] == ["ForNode", "WithNode", "IfNode"]


def test_a_message_that_brings_its_own_best_sellers_is_not_given_the_shared_ones(shop, products):
    contact = Contact.objects.create(email="own@x.my", first_name="Own")
    key = (998, 1, "html")
    with shared_fragments():
        render_string(TEMPLATE, contact_context(contact), key=key)
        own = render_string(TEMPLATE, contact_context(contact, {"best_sellers": [{"title": "Mine", "url": "u",
                                                                                  "price": "1"}]}), key=key)
    assert "Mine" in own and "Batik 0" not in own


def test_outside_a_batch_nothing_is_shared(shop, products):
    contact = Contact.objects.create(email="solo@x.my", first_name="Solo")
    template = compile_template(TEMPLATE)
    assert render_string(TEMPLATE, contact_context(contact), key=(997, 1, "html")) == template.render(
        Context(contact_context(contact)))
