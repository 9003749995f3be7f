import email
import socket
import threading
from email import policy

import pytest
from aiosmtpd.controller import Controller

from channels.models import Template
from compliance import services
from compliance.models import ConsentSource, ConsentStatus
from segments.models import Category, Contact, Event, Order, OrderLine, Product


class Sink:
    """A real SMTP server on 127.0.0.1 that keeps what it receives; refuses listed recipients."""

    def __init__(self):
        self.messages: list[email.message.EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.refuse: set[str] = set()
        self.reject_data: set[str] = set()  # recipients whose message is refused at the end of DATA
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.reject_data & set(envelope.rcpt_tos):
            return "554 5.7.1 Message rejected as spam"
        msg = email.message_from_bytes(envelope.content, policy=policy.default)
        with self.lock:
            self.messages.append(msg)
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 Message accepted for delivery"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PipeliningSink(Sink):
    """The same server offering PIPELINING (RFC 2920) in its EHLO reply, as production relays do."""

    def __init__(self):
        super().__init__()
        self.ehlo = 0

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.ehlo += 1
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]


@pytest.fixture(params=["plain", "pipelining"])
def smtp_sink(request, settings):
    """A real SMTP server on 127.0.0.1 (every test using it runs against both kinds)."""
    sink = PipeliningSink() if request.param == "pipelining" else Sink()
    port = _free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port, data_size_limit=10_000_000)
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_USE_TLS = "127.0.0.1", port, False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    sink.port = port
    yield sink
    controller.stop()


def subscribe(contact: Contact, channel: str = "email") -> None:
    text = "I agree to receive marketing texts." if channel == "sms" else "Yes, email me news and offers"
    services.consent_record(contact=contact, channel=channel, status=ConsentStatus.SUBSCRIBED,
                            source=ConsentSource.IMPORT, consent_text=text, actor="test")


@pytest.fixture
def shop(shop):
    shop.website_url = "https://kedai.example"
    shop.save()
    from segments.middleware import forget_shop

    forget_shop()
    return shop


@pytest.fixture
def catalog(shop):
    kitchen = Category.objects.create(name="Kitchen", slug="kitchen")
    apparel = Category.objects.create(name="Apparel", slug="apparel")
    wok = Product.objects.create(sku="WOK-1", title="Carbon Steel Wok", price="89.00", currency="MYR", category=kitchen,
                                 url="https://kedai.example/p/wok", image_url="https://kedai.example/i/wok.jpg")
    shirt = Product.objects.create(sku="BATIK-1", title="Batik Shirt", price="120.00", currency="MYR",
                                   category=apparel, url="https://kedai.example/p/batik",
                                   image_url="https://kedai.example/i/batik.jpg")
    return {"wok": wok, "shirt": shirt}


@pytest.fixture
def siti(shop, catalog):
    c = Contact.objects.create(email="siti@pelanggan.my", phone="+60123456789", first_name="Siti",
                               timezone="Asia/Kuala_Lumpur", locale="en", properties={"points": 120})
    subscribe(c)
    order = Order.objects.create(contact=c, external_id="5001", name="#5001", placed_at="2026-10-01T10:00:00Z",
                                 total="120.00", currency="MYR", status="delivered")
    OrderLine.objects.create(order=order, product=catalog["shirt"], sku="BATIK-1", title="Batik Shirt",
                             unit_price="120.00", total="120.00")
    Event.objects.create(contact=c, type="cart_updated", properties={
        "items": [{"sku": "WOK-1", "quantity": 1, "price": "89.00"}], "value": "89.00", "currency": "MYR",
        "checkout_url": "https://kedai.example/checkout/abc"})
    return c


CART_HTML = """<html><head><style>.btn{background:#c0392b;color:#fff} h1{font-size:22px}</style></head><body>
<h1>Hi {{ contact.first_name|default:"there" }}, you left something behind</h1>
{% for item in cart.items %}<p class="item"><img src="{{ item.image_url }}" alt=""> {{ item.title }} × {{ item.quantity }} — {{ item.price }}</p>{% endfor %}
{% if "Apparel" in categories_bought %}<p id="apparel">New batik arrived this week.</p>{% endif %}
<p><a class="btn" href="{{ cart.checkout_url }}">Finish checkout</a> · <a href="https://maps.example.com/store">Find us</a></p>
<p>Points: {{ contact.points }}</p>
</body></html>"""


@pytest.fixture
def cart_template(db):
    return Template.objects.create(name="cart-reminder-1", channel="email", purpose="marketing", topic="promotions",
                                   subject="{{ contact.first_name|default:'Hello' }}, your cart is waiting",
                                   preheader="Your Carbon Steel Wok is still in your cart", html_body=CART_HTML)


@pytest.fixture
def webhook_client(client, settings):
    """The test client with anymail's webhook basic auth and a Mailgun signing key (tests/channels/mailgun.py)."""
    from tests.channels.mailgun import use_webhooks

    return use_webhooks(client, settings)


def signed_links(text: str) -> dict[str, set[int]]:
    """The contacts named by the unsubscribe and preference links in `text` (tokens carry a
    timestamp, so two tokens minted a second apart differ: compare what they say, not their text)."""
    import re

    from compliance import tokens

    found: dict[str, set[int]] = {"unsubscribe": set(), "preferences": set()}
    for token in re.findall(r"/u/([^/\s\"'>]+)/", text):
        found["unsubscribe"].add(tokens.read_unsubscribe(token)["c"])
    for token in re.findall(r"/preferences/([^/\s\"'>]+)/", text):
        found["preferences"].add(tokens.read_preferences(token)["c"])
    return found
