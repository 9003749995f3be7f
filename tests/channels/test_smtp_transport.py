"""The SMTP transport against a server that offers PIPELINING (RFC 2920), as production MTAs do."""

import smtplib

import pytest

from channels.models import MessageStatus
from channels.services import message_create, messages_send
from segments.models import Contact
from tests.channels.conftest import subscribe

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("smtp_sink", ["pipelining"], indirect=True)
def test_pipelined_messages_arrive_whole_and_a_refused_one_fails_alone(smtp_sink, shop, catalog, cart_template,
                                                                      settings):
    pipelining_sink = smtp_sink
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


def test_a_message_refused_at_the_end_of_data_fails_and_the_next_one_still_goes(smtp_sink, shop, catalog,
                                                                                 cart_template):
    """With PIPELINING the refused message's "." reply arrives with the next message's replies."""
    from channels.models import Message

    ids = []
    for i in range(3):
        c = Contact.objects.create(email=f"dot{i}@pelanggan.my", first_name=f"D{i}")
        subscribe(c)
        ids.append(message_create(contact=c, template=cart_template, idempotency_key=f"dot-{i}")[0].pk)
    smtp_sink.reject_data.add("dot1@pelanggan.my")
    assert messages_send(ids) == {"sent": 2, "failed": 1}
    assert sorted(m["To"] for m in smtp_sink.messages) == ["dot0@pelanggan.my", "dot2@pelanggan.my"]
    failed = Message.objects.get(idempotency_key="dot-1")
    assert failed.status == MessageStatus.FAILED and "554" in failed.error and failed.sent_at is None
