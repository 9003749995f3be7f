"""B4: personalised email to every subscriber through the gate, 2 qcluster workers, SMTP sink in another process.

Reference, measured in the same run on the same recipients: a tight single-process loop that
renders a compiled Django template, builds the MIME message and sends it over one SMTP
connection. Correctness: sink count = ledger count (messages with sent_at, = the gate's "sent"
send-log rows) = eligible recipients, 0 duplicate Message-IDs.

Then a second wave is sent while one worker holding an SMTP connection is killed with SIGKILL.
Messages it left `sending` become `unknown` on redelivery and are never re-sent; the rest
completes after the broker's retry. The sink then plays the ESP's webhook role (documented in
bench/smtp_sink.py): for each message it accepted, Mailgun's signed "delivered" webhook is POSTed
to /anymail/mailgun/tracking/ (anymail's view, compliance's and channels' receivers), which
settles those `unknown` messages as sent. A message its worker committed `sending` but whose "."
never went out (killed in between) is not at the sink: channels.services.messages_reconcile asks
the sink's look-up (final "absent" only once no mail transaction from before the kill is open)
and queues it again, and it is sent in this process. Reported: unknown before settlement and
after it, messages queued again by the look-up, settle time; the check wants sink = ledger =
eligible and 0 duplicates after settlement.

Third, the ESP-batch transport: anymail's Mailgun backend (merge_data batch sending, up to
CHANNELS["ESP_BATCH_SIZE"] recipients per API call; posting multipart, channels.esp_backends)
against bench/fake_esp.py, a local HTTP endpoint that expands each batch per recipient as
Mailgun documents.
"""

import base64
import collections
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.db.models import Max, Min
from django.template import Context, Engine

from bench.framework import ROOT, row
from segments.datagen import Generator, Size

SIZES = {"small": 10_000, "full": 100_000}
REFERENCE_SAMPLE = {"small": 2_000, "full": 5_000}

HTML = """<html><head><style>
body{font-family:Helvetica,Arial,sans-serif;color:#222;background:#f6f6f6} .wrap{max-width:600px;margin:0 auto;background:#fff;padding:24px}
h1{font-size:22px;color:#111} .product{display:inline-block;width:45%;vertical-align:top;margin:8px 2%} .product img{width:100%;border-radius:6px}
.price{color:#c0392b;font-weight:bold} .btn{display:inline-block;background:#c0392b;color:#fff;padding:12px 20px;border-radius:4px;text-decoration:none}
</style></head><body><div class="wrap">
<h1>{{ contact.first_name|default:"Hello" }}, our best sellers this week</h1>
<p>You have {{ contact.points }} points waiting. {% if contact.orders_count %}Thank you for your {{ contact.orders_count }} order{{ contact.orders_count|pluralize }} so far.{% else %}Your first order ships free.{% endif %}</p>
{% for p in best_sellers %}<div class="product"><a href="{{ p.url }}"><img src="{{ p.image_url }}" alt="{{ p.title }}"></a>
<p><a href="{{ p.url }}">{{ p.title }}</a><br><span class="price">{{ p.price }}</span></p></div>{% endfor %}
<p style="margin-top:24px"><a class="btn" href="https://shop.example/collections/best-sellers">Shop the best sellers</a></p>
<p>Free shipping on orders over RM150. Questions? Reply to this email and a real person at {{ shop.name }} will answer.</p>
<p style="color:#888;font-size:12px">You are receiving this because you subscribed to news and offers from {{ shop.name }}.
We send at most one email a day and three a week; you can choose fewer at any time.</p>
</div></body></html>"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _setup(n: int):
    from channels.models import Template
    from compliance.models import Consent
    from segments.models import Contact

    Generator(size=Size(contacts=n, products=120, orders=max(2_000, n // 5), events=n), seed=4).run()
    Consent.objects.bulk_create([Consent(contact_id=cid, channel="email", status="subscribed", source="import")
                                 for cid in Contact.objects.filter(email__isnull=False).values_list("pk", flat=True)],
                                batch_size=2000)
    return Template.objects.create(name="bench-best-sellers", channel="email", purpose="marketing", topic="",
                                   subject="{{ contact.first_name|default:'Hello' }}, this week's best sellers",
                                   preheader="Handpicked for you", html_body=HTML)


def _reference(recipients: list, port: int) -> float:
    """Tight loop: compiled template -> MIME -> send_messages on one connection."""
    from channels.rendering import best_sellers
    from compliance.messaging import list_unsubscribe_headers
    from segments.middleware import current_shop

    template = Engine().from_string(HTML)
    shop = current_shop()
    products = best_sellers()
    connection = get_connection("django.core.mail.backends.smtp.EmailBackend", host="127.0.0.1", port=port)
    connection.open()
    start = time.perf_counter()
    for c in recipients:
        html = template.render(Context({"contact": {"first_name": c.first_name, "points": 0,
                                                    "orders_count": c.orders_count},
                                        "best_sellers": products, "shop": {"name": shop.name}}))
        msg = EmailMultiAlternatives(f"{c.first_name}, this week's best sellers", "text", "shop@example.com",
                                     [c.email], headers=list_unsubscribe_headers(c), connection=connection)
        msg.attach_alternative(html, "text/html")
        connection.send_messages([msg])
    seconds = time.perf_counter() - start
    connection.close()
    return seconds


def _wave(template, contacts: list, prefix: str) -> list[int]:
    from channels.models import Message

    Message.objects.bulk_create([
        Message(contact_id=c.pk, channel="email", template=template, template_version=template.version,
                purpose="marketing", origin=f"campaign:{prefix}", idempotency_key=f"bench:{prefix}:{c.pk}")
        for c in contacts], batch_size=2000)
    return list(Message.objects.filter(origin=f"campaign:{prefix}").order_by("pk").values_list("pk", flat=True))


def _enqueue(ids: list[int], size: int) -> None:
    from django_q.brokers import get_broker
    from django_q.tasks import async_task

    broker = get_broker()
    for i in range(0, len(ids), size):
        async_task("channels.tasks.send_batch", ids[i:i + size], broker=broker)


def _sink_state(path: str) -> dict:
    for _ in range(20):
        try:
            return json.loads(Path(path).read_text())
        except (OSError, ValueError):
            time.sleep(0.1)
    return {"count": 0, "unique": 0, "duplicates": 0}


def _descendants(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True).stdout.split("\n")
    children: dict[int, list[int]] = {}
    for line in out:
        if line.strip():
            p, pp = map(int, line.split())
            children.setdefault(pp, []).append(p)
    found, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            found.append(c)
            todo.append(c)
    return found


def _holding_smtp(pids: list[int], port: int) -> int | None:
    """The process with an open TCP connection to the sink: a worker in the middle of a batch."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:] + Path("/proc/net/tcp6").read_text().splitlines()[1:]:
        parts = line.split()
        if int(parts[2].split(":")[1], 16) == port and parts[3] == "01":  # remote port, ESTABLISHED
            inodes.add(parts[9])
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    return pid
        except OSError:
            continue
    return None


def _run_cluster(ids: list[int], env_extra: dict, *, kill_port: int | None = None, kill_at: float | None = None,
                 batch_size: int = 0) -> dict:
    from channels.models import Message, MessageStatus

    batch_size = batch_size or settings.CHANNELS["BATCH_SIZE"]
    _enqueue(ids, batch_size)
    env = {**os.environ, "Q_WORKERS": "2", "Q_TIMEOUT": "20", "Q_RETRY": "30", "Q_LOG_LEVEL": "ERROR",
           "COMPLIANCE_EMAIL_CAP_DAY": "100", "COMPLIANCE_EMAIL_CAP_WEEK": "100",
           "CHANNELS_BATCH_SIZE": str(batch_size), **env_extra}
    cluster = subprocess.Popen([sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    started = time.perf_counter()
    killed = None
    wave = Message.objects.filter(pk__gte=ids[0], pk__lte=ids[-1])
    open_states = [MessageStatus.QUEUED, MessageStatus.CLAIMED, MessageStatus.SENDING, MessageStatus.DEFERRED]
    try:
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            pending = wave.filter(status__in=open_states).count()
            if kill_at is not None and killed is None and pending < len(ids) * (1 - kill_at):
                victim = _holding_smtp(_descendants(cluster.pid), kill_port)
                if victim:
                    os.kill(victim, signal.SIGKILL)
                    killed = victim
            if pending == 0:
                break
            time.sleep(0.25)
    finally:
        wall = time.perf_counter() - started
        os.killpg(cluster.pid, signal.SIGTERM)
        try:
            cluster.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(cluster.pid, signal.SIGKILL)
    span = wave.filter(sent_at__isnull=False).aggregate(first=Min("claimed_at"), last=Max("sent_at"))
    return {"wall": wall, "span": (span["last"] - span["first"]).total_seconds() if span["first"] else wall,
            "counts": _counts(wave), "killed": killed}


def _counts(wave) -> dict:
    from channels.models import MessageStatus
    from compliance.models import SendLog

    counts = {s: wave.filter(status=s).count() for s in MessageStatus.values}
    counts["ledger"] = wave.filter(sent_at__isnull=False).count()
    keys = wave.values("idempotency_key")
    counts["send_log"] = SendLog.objects.filter(outcome="sent", message_key__in=keys).count()
    return counts


WEBHOOK_KEY, WEBHOOK_AUTH = "b4-mailgun-signing-key", "bench:b4-webhook-secret"


def _settle(accepted_path: str, offset: int) -> dict:
    """POST, for every message the sink accepted since `offset`, the Mailgun "delivered" webhook
    (the sink is this benchmark's ESP; see bench/smtp_sink.py) through anymail's webhook view."""
    from django.test import Client, override_settings

    from bench.smtp_sink import mailgun_delivered

    with open(accepted_path) as fh:
        fh.seek(offset)
        records = [json.loads(line) for line in fh.read().splitlines() if line]
    client = Client(SERVER_NAME="localhost",
                    HTTP_AUTHORIZATION="Basic " + base64.b64encode(WEBHOOK_AUTH.encode()).decode())
    answers: collections.Counter = collections.Counter()
    started = time.perf_counter()
    with override_settings(ANYMAIL={**settings.ANYMAIL, "WEBHOOK_SECRET": WEBHOOK_AUTH,
                                    "MAILGUN_WEBHOOK_SIGNING_KEY": WEBHOOK_KEY}):
        for message_id, recipient, sender, subject, at in records:
            payload = mailgun_delivered(message_id=message_id, recipient=recipient, sender=sender,
                                        subject=subject, key=WEBHOOK_KEY, at=at)
            answers[client.post("/anymail/mailgun/tracking/", data=json.dumps(payload),
                                content_type="application/json").status_code] += 1
    return {"posted": len(records), "answers": dict(answers), "seconds": time.perf_counter() - started}


def _reconcile(url: str, smtp: dict) -> list[int]:
    """The sink's look-up for the messages still `unknown`; those it never took are sent here."""
    import functools

    from django.test import override_settings

    from bench.smtp_sink import lookup
    from channels.services import messages_reconcile, messages_send

    again = messages_reconcile(lookup=functools.partial(lookup, url))
    if again:
        caps = {**settings.COMPLIANCE["CAPS"], "email": {"day": 100, "week": 100}}  # as the cluster's
        with override_settings(EMAIL_BACKEND=smtp["EMAIL_BACKEND"], EMAIL_HOST=smtp["EMAIL_HOST"],
                               EMAIL_PORT=int(smtp["EMAIL_PORT"]), COMPLIANCE={**settings.COMPLIANCE, "CAPS": caps}):
            messages_send(again)
    return again


def _esp_wave(template, contacts: list) -> dict:
    """The anymail batch transport against the local Mailgun API (bench/fake_esp.py)."""
    port = _free_port()
    state_file = str(Path(tempfile.mkdtemp()) / "esp.json")
    esp = subprocess.Popen([sys.executable, "-m", "bench.fake_esp", str(port), state_file], cwd=ROOT)
    time.sleep(1.0)
    try:
        ids = _wave(template, contacts, "wave3")
        result = _run_cluster(ids, {"EMAIL_BACKEND": "channels.esp_backends.MailgunBackend",
                                    "ANYMAIL_MAILGUN_API_KEY": "key-bench",
                                    "ANYMAIL_MAILGUN_API_URL": f"http://127.0.0.1:{port}/v3"},
                              batch_size=settings.CHANNELS["ESP_BATCH_SIZE"])
        time.sleep(1.5)
        return {**result, "ids": ids, "esp": _sink_state(state_file)}
    finally:
        esp.send_signal(signal.SIGTERM)
        esp.wait(timeout=10)


def run(*, size: str, db: str) -> list[dict]:
    from segments.models import Contact

    n = SIZES[size]
    started = time.perf_counter()
    template = _setup(n)
    print(f"set up {n:,} contacts in {time.perf_counter() - started:.0f} s")
    port = _free_port()
    state_file = str(Path(tempfile.mkdtemp()) / "sink.json")
    accepted = state_file + ".accepted"
    lookup_port = _free_port()
    sink = subprocess.Popen([sys.executable, "-m", "bench.smtp_sink", str(port), state_file, str(lookup_port)],
                            cwd=ROOT)
    time.sleep(1.0)
    smtp = {"EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend", "EMAIL_HOST": "127.0.0.1",
            "EMAIL_PORT": str(port)}
    try:
        contacts = list(Contact.objects.filter(email__isnull=False).order_by("pk").only(
            "pk", "email", "first_name", "orders_count"))
        sample = contacts[: REFERENCE_SAMPLE[size]]
        ref_seconds = _reference(sample, port)
        ref_rate = len(sample) / ref_seconds
        time.sleep(1.5)  # the sink writes its counts every 0.5 s
        before = _sink_state(state_file)["count"]

        ids = _wave(template, contacts, "wave1")
        result = _run_cluster(ids, smtp)
        time.sleep(1.5)
        sink_after = _sink_state(state_file)
        counts = result["counts"]
        delivered = sink_after["count"] - before
        ok = (delivered == counts["ledger"] == counts["send_log"] == len(ids) and sink_after["duplicates"] == 0)
        rows = [
            row("b4", "tight loop reference (1 process, 1 connection)", db, len(sample), ref_seconds),
            row("b4", "gate + ledger + 2 qcluster workers", db, counts["ledger"], result["span"], reference=ref_rate,
                ok=ok, sink=delivered, ledger=counts["ledger"], eligible=len(ids),
                duplicates=sink_after["duplicates"], wall_s=round(result["wall"], 1)),
        ]
        # Second wave with a worker killed mid-send, then the provider's record settles what it took.
        kill_ids = _wave(template, contacts[: max(2_000, len(contacts) // 5)], "wave2")
        before = _sink_state(state_file)
        offset = Path(accepted).stat().st_size
        result = _run_cluster(kill_ids, smtp, kill_port=port, kill_at=0.3)
        time.sleep(1.5)
        after = _sink_state(state_file)
        unknown_before = result["counts"]["unknown"]
        settled = _settle(accepted, offset)
        unknown_settled = _counts_for(kill_ids)["unknown"]
        again = _reconcile(f"http://127.0.0.1:{lookup_port}", smtp)
        time.sleep(1.5)
        after = _sink_state(state_file)
        counts = _counts_for(kill_ids)
        got = after["count"] - before["count"]
        dups = after["duplicates"] - before["duplicates"]
        ok = (result["killed"] is not None and dups == 0 and got == counts["ledger"] == counts["send_log"]
              == len(kill_ids) and settled["answers"] == {200: settled["posted"]}
              and settled["posted"] + len(again) == got)
        rows.append(row("b4", "same, one worker SIGKILLed mid-send, then settled", db, counts["ledger"],
                        result["span"], ok=ok, sink=got, ledger=counts["ledger"], eligible=len(kill_ids),
                        duplicates=dups, unknown_before_settle=unknown_before,
                        unknown_after_webhooks=unknown_settled, sent_again_after_lookup=len(again),
                        unknown_after=counts["unknown"],
                        settle_s=round(settled["seconds"], 1), killed_pid=result["killed"],
                        wall_s=round(result["wall"], 1)))
    finally:
        sink.send_signal(signal.SIGTERM)
        sink.wait(timeout=10)
    # Third: anymail batch sending (merge_data) to the local Mailgun API.
    esp = _esp_wave(template, contacts)
    counts, state = esp["counts"], esp["esp"]
    ok = (state["count"] == counts["ledger"] == counts["send_log"] == len(esp["ids"]) and state["duplicates"] == 0
          and state["bad"] == 0)
    rows.append(row("b4", "ESP batch (anymail Mailgun merge_data) + 2 workers", db, counts["ledger"], esp["span"],
                    ok=ok, sink=state["count"], ledger=counts["ledger"], eligible=len(esp["ids"]),
                    duplicates=state["duplicates"], api_calls=state["requests"], wall_s=round(esp["wall"], 1)))
    return rows


def _counts_for(ids: list[int]) -> dict:
    from channels.models import Message

    return _counts(Message.objects.filter(pk__gte=ids[0], pk__lte=ids[-1]))
