"""What a provider's answer means for a message: the outcomes a transport reports to the ledger.

SENT (the provider took it; detail: its message id), FAILED (permanent), RETRY (transient: the
provider did not take it), UNCERTAIN (the provider may have it: never re-sent; its record will
settle it) or LOST (another attempt took the message over).
"""

import smtplib

SENT, FAILED, RETRY, UNCERTAIN, LOST = "sent", "failed", "retry", "uncertain", "lost"


def recipient_outcome(status, address: str, fallback: str = "") -> tuple[str, str]:
    """What the ESP said about one recipient (anymail_status.recipients), as a transport outcome."""
    if status is None:  # not an anymail backend: accepted by send_messages
        return SENT, fallback
    recipient = (status.recipients or {}).get(address)
    if recipient is None or recipient.status == "cancelled":
        # anymail's pre_send guard (compliance.guard) dropped a suppressed address: not sent.
        return FAILED, "dropped before sending (suppressed at send time)"
    if recipient.status in ("queued", "sent", "scheduled"):
        return SENT, str(recipient.message_id or fallback)
    if recipient.status in ("rejected", "invalid"):
        return FAILED, f"ESP {recipient.status} the recipient"
    if recipient.status == "failed":
        return RETRY, "ESP failed to send"
    return UNCERTAIN, f"ESP status {recipient.status!r}"


def classify_esp_error(exc: Exception) -> tuple[str, str]:
    """An exception from an ESP call: did the ESP take the message?"""
    from anymail.exceptions import AnymailAPIError, AnymailRecipientsRefused

    if isinstance(exc, AnymailRecipientsRefused):
        return FAILED, f"ESP refused the recipient: {exc}"
    if isinstance(exc, AnymailAPIError):
        code = getattr(exc, "status_code", None)
        if code and 400 <= code < 500 and code != 429:
            return FAILED, f"ESP {code}: {exc}"
        if code:
            return RETRY, f"ESP {code}: {exc}"
        if _never_connected(exc):
            return RETRY, f"ESP unreachable: {exc.__cause__ or exc}"
        # Sent but no answer (read timeout, reset): the ESP may have queued it. Never re-sent.
        return UNCERTAIN, f"ESP: {exc.__cause__ or exc}"
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return FAILED, f"recipient refused: {exc.recipients}"
    if isinstance(exc, smtplib.SMTPResponseException):
        return (FAILED if 500 <= exc.smtp_code < 600 else RETRY), f"SMTP {exc.smtp_code}: {exc.smtp_error!r}"
    if isinstance(exc, OSError | smtplib.SMTPConnectError):
        return RETRY, f"connection: {exc}"
    # Anything else may or may not have reached the provider: never retried (no duplicates).
    return UNCERTAIN, f"unexpected {exc.__class__.__name__}: {exc}"


def _never_connected(exc: Exception) -> bool:
    """anymail's requests errors are also the requests exception: a refused or timed-out connect
    never reached the ESP."""
    import requests
    import urllib3

    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if isinstance(exc, requests.exceptions.ConnectionError):
        inner = exc.__cause__.args[0] if exc.__cause__ is not None and exc.__cause__.args else None
        reason = getattr(inner, "reason", inner)
        return isinstance(reason, urllib3.exceptions.NewConnectionError)
    return False
