"""Every send path goes through the gate: a reader (and CI) can check it in one place.

A module that hands a message to a provider (Django mail, anymail, Twilio, web push) must call
compliance.gate.can_send itself, or be a helper whose only callers do (listed in HELPERS with
the function that guards it). A new send path that skips the gate makes this test fail.
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APPS = ["segments", "compliance", "channels", "automation", "config", "bench"]
PROVIDER_CALL = re.compile(r"\b(send_mail|send_mass_mail|EmailMessage|EmailMultiAlternatives|webpush)\s*\(|"
                           r"\.messages\.create\s*\(|\.send_messages\s*\(|"
                           # SMTP spoken directly (channels/delivery.py does, for its commit point)
                           r"\.sendmail\s*\(|\.docmd\s*\(|smtplib\.SMTP(_SSL)?\s*\(|MAIL FROM:")
# helper module -> (helper function, the module whose callers are gated)
HELPERS = {"compliance/messaging.py": ("send_confirmation_email", "compliance/services.py"),
           "channels/email.py": ("build_email", "channels/services.py"),
           "channels/delivery.py": ("open_email_transport", "channels/services.py"),
           "channels/sms.py": ("send_sms", "channels/services.py"),
           "channels/push.py": ("send_push", "channels/services.py")}


# Not product code: the benchmark's tight-loop reference sends only to its own SMTP sink on
# 127.0.0.1, deliberately without the gate (it is what the gated pipeline is compared with).
REFERENCES = {"bench/b4_send.py"}


def sources():
    for app in APPS:
        for path in (ROOT / app).rglob("*.py"):
            if "migrations" not in path.parts:
                yield path.relative_to(ROOT).as_posix(), path.read_text()


def test_every_module_that_sends_calls_the_gate():
    code = dict(sources())
    senders = {name for name, text in code.items() if PROVIDER_CALL.search(text)}
    assert "compliance/messaging.py" in senders  # the scan does find real send code
    for name in senders - REFERENCES:
        if name in HELPERS:
            helper, caller = HELPERS[name]
            users = {n for n, text in code.items()
                     if re.search(rf"(?<!def )\b{helper}\s*\(", text) and n != name}
            assert users == {caller}, f"{helper} must only be called from {caller}, found {users}"
            assert "gate.can_send(" in code[caller]
        else:
            assert "can_send(" in code[name], f"{name} sends messages without compliance.gate.can_send"


def test_the_double_opt_in_sender_asks_the_gate_before_sending():
    text = (ROOT / "compliance/services.py").read_text()
    body = text[text.index("def doi_send"):text.index("def doi_confirm")]
    assert body.index("gate.can_send(") < body.index("send_confirmation_email(") < body.index("gate.record_sent(")
