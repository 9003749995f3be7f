"""channels.mime writes the same message Django's email generator would, only faster."""

import email
from email import policy

import pytest
from django.core.mail import EmailMultiAlternatives

from channels.mime import raw_mime

UNSUB = {"List-Unsubscribe": "<https://shop.example/u/eyJjIjoxMDUzLCJmIjoxNzUwNTg1NDM2LCJjaCI6ImVtYWlsIn0:1xVD3H:"
                             "t-a_Kq933rUzFbig4L55iFSK7LcnMODq-M6q-V4ps6s/>, <mailto:unsub@shop.example?subject="
                             "unsubscribe%20abc>",
         "List-Unsubscribe-Post": "List-Unsubscribe=One-Click", "Message-ID": "<m42.0011223344556677@shop.example>"}


def _email(subject="Siti, your cart is waiting", sender="Kedai Demo <hello@kedai.example>",
           text="Hi Siti\n\nYour cart: Wok × 1\n.leading dot line\n", html="<p>Hi <b>Siti</b></p>\n", **kw):
    message = EmailMultiAlternatives(subject=subject, body=text, from_email=sender, to=["siti@pelanggan.my"],
                                     headers=dict(UNSUB), **kw)
    message.attach_alternative(html, "text/html")
    return message


def _parsed(raw: bytes):
    return email.message_from_bytes(raw, policy=policy.default)


CASES = {
    "ascii": _email(),
    "non-ascii subject and sender name": _email(subject="Siti, keranjang anda menunggu — ¡ya! 🛒",
                                                sender="Kédai Démo <hello@kedai.example>"),
    "long lines become quoted-printable": _email(html="<p>" + "wok " * 600 + "</p>", text="x" * 1500 + "\n"),
    "reply-to": _email(reply_to=["Help Desk <help@kedai.example>"]),
    "long ascii subject": _email(subject="An unusually long subject line that goes on " * 4),
}


@pytest.mark.parametrize("name", CASES)
def test_the_fast_mime_reads_back_like_djangos(name):
    message = CASES[name]
    fast = raw_mime(message)
    assert fast is not None
    ours, django = _parsed(fast), _parsed(message.message().as_bytes(linesep="\r\n"))
    for header in ("Subject", "From", "To", "Reply-To", "List-Unsubscribe", "List-Unsubscribe-Post", "Message-ID",
                   "MIME-Version"):
        # (Django's generator folds an encoded subject after "Subject: ", which reads back with a
        # leading space; ours does not.)
        assert str(ours[header]).strip() == str(django[header]).strip(), header
    assert ours["Date"]
    assert ours.get_content_type() == django.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in ours.iter_parts()] == ["text/plain", "text/html"]
    for kind in ("plain", "html"):
        assert ours.get_body(preferencelist=(kind,)).get_content() == django.get_body(
            preferencelist=(kind,)).get_content()
        assert (ours.get_body(preferencelist=(kind,))["Content-Transfer-Encoding"]
                == django.get_body(preferencelist=(kind,))["Content-Transfer-Encoding"])
    # Wire rules: CRLF line ends only, no line over RFC 5322's 998 octets.
    assert b"\n" not in fast.replace(b"\r\n", b"")
    assert max(len(line) for line in fast.split(b"\r\n")) <= 998


def test_unusual_messages_are_left_to_django():
    assert raw_mime(_email(cc=["boss@kedai.example"])) is None
    with_file = _email()
    with_file.attach("a.txt", "hello", "text/plain")
    assert raw_mime(with_file) is None
    idn = _email()
    idn.to = ["siti@pelanggan.example.中国"]
    assert raw_mime(idn) is None


def test_a_header_with_a_newline_is_refused():
    message = _email()
    message.extra_headers["X-Campaign"] = "a\r\nBcc: victim@example.com"
    with pytest.raises(ValueError):
        raw_mime(message)
