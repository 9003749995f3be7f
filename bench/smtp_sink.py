"""A counting SMTP sink for benchmarks: `python -m bench.smtp_sink PORT OUTFILE`.

Counts messages and their Message-IDs; writes {"count", "unique", "duplicates"} to OUTFILE every
half second and on SIGTERM, so the benchmark can check 0 duplicates and 0 missing.

It offers PIPELINING (RFC 2920) in its EHLO reply, as production relays do (Postfix, SES,
Mailgun, SendGrid, Postmark): aiosmtpd reads commands one by one from its input stream, so it
answers pipelined commands correctly; it just does not say so by default. Clients that do not
pipeline (Django's smtplib-based backend in the reference loop) are unaffected.

It also plays the part an ESP's SMTP relay plays in production (Mailgun's, here): it keeps a log
of every message it accepted (OUTFILE + ".accepted": Message-ID, recipient, sender, subject,
time), from which `mailgun_delivered` makes the signed "delivered" webhook Mailgun would POST for
it, in Mailgun's documented format (event-data.message.headers.message-id; signature =
HMAC-SHA256(key, timestamp + token)). The benchmark POSTs those to /anymail/mailgun/tracking/,
where anymail parses them and channels.receivers settles any message a killed worker left
`sending` (tests/channels/test_settlement.py POSTs the same payloads). It is the provider's own
record of what it accepted: nothing else can tell which in-flight messages reached the server.

And it answers look-ups by Message-ID (`python -m bench.smtp_sink PORT OUTFILE LOOKUP_PORT`:
GET http://127.0.0.1:LOOKUP_PORT/lookup?gone_since=EPOCH&id=<...>&id=<...>), the way a relay's
message log does, for channels.services.messages_reconcile: "accepted", or "absent" only when
that is final, i.e. no mail transaction that began before `gone_since` (when the client that
may have been sending it was known to be gone) is still open. A transaction ends with its "."
(accepted), RSET or the connection closing; a DATA cut off before its "." is discarded (RFC
5321 4.1.1.4) and can never be accepted later. Otherwise "pending".
"""

import asyncio
import collections
import hashlib
import hmac
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP


def mailgun_delivered(*, message_id: str, recipient: str, sender: str, subject: str, key: str,
                      at: float | None = None) -> dict:
    """A Mailgun "delivered" webhook body (https://documentation.mailgun.com, Webhooks: delivered)."""
    now = at or time.time()
    token = os.urandom(25).hex()
    timestamp = str(int(now))
    event = {
        "event": "delivered", "id": os.urandom(11).hex(), "timestamp": now, "log-level": "info",
        "recipient": recipient, "recipient-domain": recipient.rpartition("@")[2], "tags": [], "campaigns": [],
        "user-variables": {}, "flags": {"is-routed": False, "is-authenticated": True, "is-system-test": False,
                                        "is-test-mode": False},
        "envelope": {"transport": "smtp", "sender": sender, "sending-ip": "127.0.0.1", "targets": recipient},
        "message": {"headers": {"to": recipient, "message-id": message_id.strip("<>"), "from": sender,
                                "subject": subject}, "attachments": [], "size": 0},
        "delivery-status": {"tls": False, "mx-host": "127.0.0.1", "code": 250, "description": "",
                            "session-seconds": 0.0, "utf8": True, "attempt-no": 1, "message": "OK",
                            "certificate-verified": False},
    }
    signature = hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    return {"signature": {"timestamp": timestamp, "token": token, "signature": signature}, "event-data": event}


class Counter:
    def __init__(self, accepted_path: str):
        self.ids = collections.Counter()
        self.count = 0
        self.lock = threading.Lock()
        self.accepted = open(accepted_path, "a")  # noqa: SIM115 (closed in main)

        self.open: dict[int, float] = {}  # session -> when its current mail transaction began

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        with self.lock:
            self.open[id(session)] = time.time()
        return "250 OK"

    async def handle_RSET(self, server, session, envelope):
        self.transaction_closed(session)
        return "250 OK"

    def transaction_closed(self, session) -> None:
        with self.lock:
            self.open.pop(id(session), None)

    def lookup(self, message_ids: list[str], gone_since: float) -> dict[str, str]:
        """Each Message-ID: "accepted", "absent" (final) or "pending" (a transaction older than
        gone_since is still open: it may yet end with that message's ".")."""
        with self.lock:
            final = all(began >= gone_since for began in self.open.values())
            return {m: "accepted" if self.ids.get(m.encode()) else "absent" if final else "pending"
                    for m in message_ids}

    async def handle_DATA(self, server, session, envelope):
        header_end = envelope.content.find(b"\r\n\r\n")
        headers = envelope.content[: header_end if header_end > 0 else 4096]
        found = {}
        for line in headers.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.lower() in (b"message-id", b"subject"):
                found[name.lower()] = value.strip()
        message_id = found.get(b"message-id", b"")
        with self.lock:
            self.open.pop(id(session), None)
            self.count += 1
            self.ids[message_id] += 1
            for recipient in envelope.rcpt_tos:
                self.accepted.write(json.dumps([message_id.decode(errors="replace"), recipient, envelope.mail_from,
                                                found.get(b"subject", b"").decode(errors="replace"), time.time()])
                                    + "\n")
        return "250 OK"

    def snapshot(self) -> dict:
        with self.lock:
            self.accepted.flush()
            return {"count": self.count, "unique": len(self.ids),
                    "duplicates": sum(n - 1 for n in self.ids.values() if n > 1)}


class _Session(SMTP):
    def connection_lost(self, error) -> None:
        if self.session is not None:
            self.event_handler.transaction_closed(self.session)
        super().connection_lost(error)


class _Controller(Controller):
    def factory(self):
        return _Session(self.handler, **self.SMTP_kwargs)


def _serve_lookups(counter: Counter, port: int) -> ThreadingHTTPServer:
    class Lookup(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            query = parse_qs(urlsplit(self.path).query)
            body = json.dumps(counter.lookup(query.get("id", []), float(query["gone_since"][0]))).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Lookup)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def lookup(url: str, message_ids: list[str], gone_since) -> dict[str, str]:
    """The client side, for channels.services.messages_reconcile(lookup=partial(lookup, url))."""
    import urllib.request
    from urllib.parse import urlencode

    answers = {}
    for i in range(0, len(message_ids), 200):
        query = urlencode([("gone_since", gone_since.timestamp()), *(("id", m) for m in message_ids[i:i + 200])])
        with urllib.request.urlopen(f"{url}/lookup?{query}", timeout=10) as response:  # noqa: S310 (local URL)
            answers.update(json.loads(response.read()))
    return answers


def main() -> None:
    port, out = int(sys.argv[1]), sys.argv[2]
    counter = Counter(out + ".accepted")
    controller = _Controller(counter, hostname="127.0.0.1", port=port, data_size_limit=10_000_000)
    controller.start()
    lookups = _serve_lookups(counter, int(sys.argv[3])) if len(sys.argv) > 3 else None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    while not stop.is_set():
        with open(out, "w") as fh:
            json.dump(counter.snapshot(), fh)
        time.sleep(0.5)
    controller.stop()
    if lookups is not None:
        lookups.shutdown()
    with open(out, "w") as fh:
        json.dump(counter.snapshot(), fh)
    counter.accepted.close()


if __name__ == "__main__":
    asyncio.set_event_loop(asyncio.new_event_loop())
    main()
