"""Email transports: hand a batch of rendered emails to the configured backend, one connection per batch.

Only channels.services calls `open_email_transport` (after compliance.gate.can_send allowed each
message and rendered it). A transport never decides whether a message may go; it decides how:

- `SmtpTransport` (Django's SMTP backend): speaks SMTP itself on the backend's connection, with
  the MIME bytes from channels.mime. Each message's DATA is written up to, not including, the
  final ".": only then does the ledger commit the message as `sending`, and only then is the "."
  written. A worker killed before that commit leaves a half-sent DATA, which the server discards
  when the connection drops (RFC 5321 4.1.1.4), and a message still `claimed`, which is sent
  later. A worker killed after it leaves the message `sending`: the server may have it, so it is
  never re-sent; the provider's record (its Message-ID, see channels.email.message_id_header)
  settles it. Between the commit and the "." there are no round trips, one write.
- `EspBatchTransport` (an anymail ESP in CHANNELS["ESP_BATCH_MERGE_FIELDS"], e.g. Mailgun): up to
  ESP_BATCH_SIZE messages in one API call, as anymail batch sending: every recipient is in `to`,
  the already-rendered subject, text and HTML travel as that recipient's `merge_data`, the body is
  the ESP's merge field for them, `merge_metadata` carries each Message id (ESP webhooks bring it
  back) and `merge_headers` each recipient's List-Unsubscribe. One Message row per recipient and
  the gate per recipient stay as they are; the group is committed `sending` before the call.
- `BackendTransport` (anything else: locmem, file, console, other anymail ESPs): one
  `send_messages` call per message over one open connection, committed `sending` before each.

`deliver(items, hand_over)` yields (item, outcome, detail), outcomes as channels.outcomes defines them.
"""

import contextlib
import re
import smtplib
import socket
from collections.abc import Callable, Iterator
from email.utils import parseaddr
from functools import lru_cache

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.mail.backends.smtp import EmailBackend as SmtpBackend
from django.core.mail.message import sanitize_address

from channels.mime import SAFE_ADDRESS, raw_mime
from channels.outcomes import FAILED, LOST, RETRY, SENT, UNCERTAIN, classify_esp_error, recipient_outcome

_LEADING_DOT = re.compile(rb"(?m)^\.")

HandOver = Callable[[list], list[bool]]


def open_email_transport():
    connection = get_connection()
    if isinstance(connection, SmtpBackend):
        return SmtpTransport(connection)
    merge_field = _merge_field(connection)
    if merge_field:
        return EspBatchTransport(connection, merge_field)
    return BackendTransport(connection)


def _merge_field(connection) -> str | None:
    return settings.CHANNELS["ESP_BATCH_MERGE_FIELDS"].get(getattr(connection, "esp_name", None))


def sends_one_per_call() -> bool:
    """Whether the configured backend hands over one message per exchange (SMTP, single-send APIs).

    Only those gain from several streams per batch (channels.services._email_streams): an ESP batch
    call carries up to ESP_BATCH_SIZE messages at once, and splitting it would only double the calls.
    """
    connection = get_connection()
    return isinstance(connection, SmtpBackend) or not _merge_field(connection)


class SmtpTransport:
    def __init__(self, backend: SmtpBackend):
        self.backend = backend
        self.provider = "smtp"

    def close(self) -> None:
        with contextlib.suppress(Exception):  # a broken connection is already closed for our purposes
            self.backend.close()

    def _open(self) -> smtplib.SMTP:
        if self.backend.open():
            # The DATA goes out in two writes (content, then "." after the ledger commit): without
            # NODELAY the second waits for the server's delayed ACK (~40 ms a message on Linux).
            with contextlib.suppress(OSError, AttributeError):
                self.backend.connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self.backend.connection

    def _drop(self) -> None:
        """Close without QUIT: a DATA left unfinished is discarded by the server."""
        connection, self.backend.connection = self.backend.connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()

    def deliver(self, items: list, hand_over: HandOver) -> Iterator[tuple]:
        """Each message: MAIL, RCPT, DATA, content; the ledger's `sending` commit; then its ".".
        With PIPELINING the "." travels with the next message's MAIL/RCPT/DATA (RFC 2920 lets
        the end of data open a command group): one round trip per message instead of two."""
        self.open_dot = None  # the message committed `sending`, content written, "." not yet
        # Every message's bytes first: then after a message's `sending` commit only the next one's
        # command line stands before the write that carries its "." (building the MIME there made
        # that window ~5x longer; a worker killed inside it leaves a message `sending` that the
        # server never got, which no provider record can settle).
        prepared = []
        for item in items:
            email = item[1]
            try:
                prepared.append((item, raw_mime(email) or email.message().as_bytes(linesep="\r\n"), ""))
            except ValueError as exc:  # a header that cannot be written (a newline in it)
                prepared.append((item, None, f"cannot build the message: {exc}"))
        for item, raw, error in prepared:
            if raw is None:
                yield item, FAILED, error
                continue
            yield from self._one(item, raw, hand_over)
        if self.open_dot is not None:
            yield self._finish(b".\r\n")

    def _one(self, item, raw: bytes, hand_over: HandOver) -> Iterator[tuple]:
        outcomes: list[tuple] = []  # the previous message's (when its "." is answered here), then this one's
        try:
            smtp = self._open()
            smtp.ehlo_or_helo_if_needed()
            if self.open_dot is not None and not smtp.has_extn("pipelining"):
                outcomes.append(self._finish(b".\r\n"))
            self._begin(smtp, item[1], raw, outcomes)
        except _DotUnanswered as exc:
            outcomes += [exc.outcome, (item, RETRY, exc.reason)]
        except smtplib.SMTPRecipientsRefused as exc:
            outcomes.append((item, FAILED, f"recipient refused: {exc.recipients}"))
        except smtplib.SMTPResponseException as exc:
            self._drop()
            outcomes.append((item, FAILED if 500 <= exc.smtp_code < 600 else RETRY,
                             f"SMTP {exc.smtp_code}: {exc.smtp_error!r}"))
        except (smtplib.SMTPException, OSError, ValueError) as exc:
            self._drop()
            outcomes.append((item, RETRY, f"SMTP: {exc}"))
        yield from outcomes
        if outcomes and outcomes[-1][0] is item:
            return
        try:
            held = hand_over([item])[0]
        except BaseException:
            self._drop()
            raise
        if not held:
            self._drop()
            yield item, LOST, ""
            return
        self.open_dot = item
        if not smtp.has_extn("pipelining"):
            yield self._finish(b".\r\n")  # else its "." goes out with the next message's commands

    open_dot = None

    def _dot_outcome(self, code: int, reply: bytes) -> tuple:
        item, self.open_dot = self.open_dot, None
        if code == 250:
            return item, SENT, item[1].extra_headers.get("Message-ID", "")
        # The server answered: it did not take the message, so trying again is safe.
        return item, (FAILED if 500 <= code < 600 else RETRY), f"SMTP {code}: {reply!r}"

    def _finish(self, data: bytes) -> tuple:
        """Write the open message's "." and read its reply."""
        smtp = self.backend.connection
        try:
            smtp.sock.sendall(data)
            code, reply = _reply(smtp)
        except (smtplib.SMTPException, OSError, AttributeError) as exc:
            self._drop()
            item, self.open_dot = self.open_dot, None
            return item, UNCERTAIN, f"connection lost after the end of DATA: {exc}"
        if code != 250:
            self._rset(smtp)
        return self._dot_outcome(code, reply)

    @staticmethod
    def _rset(smtp) -> None:
        with contextlib.suppress(smtplib.SMTPException, OSError):
            smtp.rset()

    def _begin(self, smtp: smtplib.SMTP, email, raw: bytes, outcomes: list) -> None:
        """MAIL, RCPT, DATA and the content, all but the final "." (smtplib.sendmail's steps, split,
        written straight to the socket; one write with PIPELINING, led by the previous "." if open)."""
        sender = _envelope(email.from_email, email.encoding)
        recipients = [_envelope(a, email.encoding) for a in email.recipients()]
        body = " BODY=8BITMIME" if not raw.isascii() and smtp.has_extn("8bitmime") else ""
        commands = [f"MAIL FROM:<{sender}>{body}\r\n", *(f"RCPT TO:<{r}>\r\n" for r in recipients), "DATA\r\n"]
        if smtp.has_extn("pipelining"):  # RFC 2920: the replies come back in order
            dot = b".\r\n" if self.open_dot is not None else b""
            try:
                smtp.sock.sendall(dot + "".join(commands).encode("ascii"))
                if dot:
                    outcomes.append(self._dot_outcome(*_reply(smtp)))
            except (smtplib.SMTPException, OSError) as exc:
                self._drop()
                if dot and self.open_dot is not None:
                    item, self.open_dot = self.open_dot, None
                    raise _DotUnanswered((item, UNCERTAIN, f"connection lost after the end of DATA: {exc}"),
                                         f"SMTP: {exc}") from exc
                raise
            replies = [_reply(smtp) for _ in commands]
        else:
            replies = []
            for command in commands:
                if command == "DATA\r\n" and any(code not in (250, 251) for code, _ in replies[1:]):
                    break  # a refused recipient: no DATA
                smtp.sock.sendall(command.encode("ascii"))
                replies.append(_reply(smtp))
                if command.startswith("MAIL") and replies[-1][0] != 250:
                    break
        code, reply = replies[0]
        if code != 250:
            self._rset(smtp)
            raise smtplib.SMTPSenderRefused(code, reply, sender)
        refused = {r: a for r, a in zip(recipients, replies[1:1 + len(recipients)], strict=True) if a[0] not in (250, 251)}
        if refused:
            if len(replies) == len(commands) and replies[-1][0] == 354:
                self._drop()  # a pipelined DATA was accepted for the others: drop it unsent
            else:
                self._rset(smtp)
            raise smtplib.SMTPRecipientsRefused(refused)
        code, reply = replies[-1]
        if code != 354:
            self._rset(smtp)
            raise smtplib.SMTPDataError(code, reply)
        data = _LEADING_DOT.sub(b"..", raw)
        smtp.sock.sendall(data if data.endswith(b"\r\n") else data + b"\r\n")


class _DotUnanswered(Exception):
    """The write carrying an open message's "." failed: that message is uncertain."""

    def __init__(self, outcome: tuple, reason: str):
        super().__init__(reason)
        self.outcome, self.reason = outcome, reason


def _reply(smtp: smtplib.SMTP) -> tuple[int, bytes]:
    """One (possibly multi-line) SMTP reply: smtplib.getreply without its per-line bookkeeping."""
    if smtp.file is None:
        smtp.file = smtp.sock.makefile("rb")
    lines = []
    while True:
        line = smtp.file.readline(8193)
        if not line:
            smtp.close()
            raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")
        lines.append(line[4:].strip(b" \t\r\n"))
        if line[3:4] != b"-":
            try:
                return int(line[:3]), b"\n".join(lines)
            except ValueError as exc:
                raise smtplib.SMTPResponseException(-1, line) from exc


def _envelope(address: str, encoding: str | None) -> str:
    """The bare address for MAIL FROM / RCPT TO (IDNA domain), as Django's SMTP backend sends it."""
    return address if SAFE_ADDRESS.match(address) else _parsed(address, encoding or settings.DEFAULT_CHARSET)


@lru_cache(maxsize=256)  # mostly the shop's own From
def _parsed(address: str, encoding: str) -> str:
    return parseaddr(sanitize_address(address, encoding))[1]


class BackendTransport:
    """One message per call over one connection, for backends without batch sending."""

    def __init__(self, connection):
        self.connection = connection
        self.provider = settings.EMAIL_BACKEND.rsplit(".", 2)[-2]
        self.opened = False

    def close(self) -> None:
        if self.opened:
            with contextlib.suppress(Exception):
                self.connection.close()

    def deliver(self, items: list, hand_over: HandOver) -> Iterator[tuple]:
        for item in items:
            if not hand_over([item])[0]:
                yield item, LOST, ""
                continue
            message, email = item
            try:
                if not self.opened:
                    self.connection.open()
                    self.opened = True
                sent = self.connection.send_messages([email])
            except Exception as exc:
                yield item, *classify_esp_error(exc)
                continue
            status = getattr(email, "anymail_status", None)
            if not sent and status is None:
                yield item, RETRY, "the email backend accepted nothing"
                continue
            yield item, *recipient_outcome(status, email.to[0] if email.to else "",
                                            fallback=email.extra_headers.get("Message-ID", ""))


class EspBatchTransport:
    """anymail batch sending: one API call for many messages, each recipient its own rendered email."""

    def __init__(self, connection, merge_field: str):
        self.connection = connection
        self.merge_field = merge_field
        self.provider = connection.esp_name.lower()
        self.size = settings.CHANNELS["ESP_BATCH_SIZE"]
        self.opened = False

    def close(self) -> None:
        if self.opened:
            with contextlib.suppress(Exception):
                self.connection.close()

    def _groups(self, items: list) -> list[list]:
        """Same sender, reply-to and tags; each address once per call (merge data is keyed by address)."""
        groups: dict[tuple, list[list]] = {}
        for item in items:
            email = item[1]
            key = (email.from_email, tuple(email.reply_to), tuple(getattr(email, "tags", []) or []),
                   (getattr(email, "metadata", None) or {}).get("purpose"))
            chunks = groups.setdefault(key, [[]])
            address = email.to[0]
            chunk = next((c for c in chunks if len(c) < self.size and all(i[1].to[0] != address for i in c)), None)
            if chunk is None:
                chunk = []
                chunks.append(chunk)
            chunk.append(item)
        return [chunk for chunks in groups.values() for chunk in chunks if chunk]

    def batch_email(self, group: list) -> EmailMultiAlternatives:
        first = group[0][1]
        field = self.merge_field.format
        batch = EmailMultiAlternatives(subject=field("subject"), body=field("text"), from_email=first.from_email,
                                       to=[email.to[0] for _, email in group], reply_to=first.reply_to)
        batch.attach_alternative(field("html"), "text/html")
        batch.merge_data = {email.to[0]: {"subject": email.subject, "text": email.body,
                                          "html": email.alternatives[0][0]} for _, email in group}
        batch.merge_metadata = {email.to[0]: email.metadata for _, email in group}
        batch.merge_headers = {email.to[0]: {k: v for k, v in email.extra_headers.items() if k != "Message-ID"}
                               for _, email in group}
        batch.tags = list(getattr(first, "tags", []) or [])
        # compliance.guard (anymail's pre_send) reads the purpose to decide which suppressions apply.
        batch.metadata = {"purpose": (getattr(first, "metadata", None) or {}).get("purpose", "marketing")}
        return batch

    def deliver(self, items: list, hand_over: HandOver) -> Iterator[tuple]:
        for group in self._groups(items):
            held = hand_over(group)
            lost = [item for item, ok in zip(group, held, strict=True) if not ok]
            group = [item for item, ok in zip(group, held, strict=True) if ok]
            for item in lost:
                yield item, LOST, ""
            if not group:
                continue
            batch = self.batch_email(group)
            try:
                if not self.opened:
                    self.connection.open()
                    self.opened = True
                self.connection.send_messages([batch])
            except Exception as exc:
                outcome = classify_esp_error(exc)
                for item in group:
                    yield item, *outcome
                continue
            status = getattr(batch, "anymail_status", None)
            for item in group:
                yield item, *recipient_outcome(status, item[1].to[0])
