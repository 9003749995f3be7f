"""The SMTP transport against a server that offers PIPELINING (RFC 2920), as production MTAs do."""

import smtplib

import pytest
from aiosmtpd.controller import Controller

from channels.models import MessageStatus
from channels.services import message_create, messages_send
from segments.models import Contact
from tests.channels.conftest import Sink, _free_port, subscribe

pytestmark = pytest.mark.django_db


class PipeliningSink(Sink):
    def __init__(self):
        super().__init__()
        self.ehlo = 0

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.ehlo += 1
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]


@pytest.fixture
def pipelining_sink(settings):
    sink = PipeliningSink()
    port = _free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_USE_TLS = "127.0.0.1", port, False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    yield sink
    controller.stop()


def test_pipelined_messages_arrive_whole_and_a_refused_one_fails_alone(pipelining_sink, shop, catalog, cart_template,
                                                                      settings):
    ids = []
    for i in range(4):
        c = Contact.objects.create(email=f"pipe{i}@pelanggan.my", first_name=f"P{i}")
        subscribe(c)
        ids.append(message_create(contact=c, template=cart_template, idempotency_key=f"pipe-{i}")[0].pk)
    pipelining_sink.refuse.add("pipe2@pelanggan.my")
    assert messages_send(ids) == {"sent": 3, "failed": 1}
    assert pipelining_sink.ehlo == 1  # one connection
    with smtplib.SMTP("127.0.0.1", settings.EMAIL_PORT) as probe:
        probe.ehlo()
        assert probe.has_extn("pipelining")  # ...that offered PIPELINING
    received = sorted(m["To"] for m in pipelining_sink.messages)
    assert received == ["pipe0@pelanggan.my", "pipe1@pelanggan.my", "pipe3@pelanggan.my"]
    for m in pipelining_sink.messages:
        assert m.get_body(preferencelist=("html",)).get_content().count("</html>") == 1
    from channels.models import Message

    assert Message.objects.get(idempotency_key="pipe-2").status == MessageStatus.FAILED
