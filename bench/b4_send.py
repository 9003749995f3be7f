"""B4: personalised email to every subscriber through the gate, 2 qcluster workers, SMTP sink in another process.

Reference, measured in the same run on the same recipients: a tight single-process loop that
renders a compiled Django template, builds the MIME message and sends it over one SMTP
connection. Correctness: sink count = ledger "sent" = eligible recipients, 0 duplicate
Message-IDs. Then a second wave is sent while one worker holding an SMTP connection is killed
with SIGKILL: still 0 duplicates; a message interrupted inside the provider call is marked
"unknown" and not re-sent (reported as missing), the rest completes after the broker's retry.
"""

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
from django.utils import timezone

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


def _enqueue(ids: list[int]) -> None:
    from django_q.brokers import get_broker
    from django_q.tasks import async_task

    broker = get_broker()
    size = settings.CHANNELS["BATCH_SIZE"]
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


def _run_cluster(ids: list[int], port: int, *, kill_at: float | None) -> dict:
    from channels.models import Message, MessageStatus

    _enqueue(ids)
    env = {**os.environ, "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend", "EMAIL_HOST": "127.0.0.1",
           "EMAIL_PORT": str(port), "Q_WORKERS": "2", "Q_TIMEOUT": "20", "Q_RETRY": "30", "Q_LOG_LEVEL": "ERROR",
           "COMPLIANCE_EMAIL_CAP_DAY": "100", "COMPLIANCE_EMAIL_CAP_WEEK": "100"}
    cluster = subprocess.Popen([sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    started = time.perf_counter()
    killed = None
    open_states = [MessageStatus.QUEUED, MessageStatus.CLAIMED, MessageStatus.SENDING, MessageStatus.DEFERRED]
    try:
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            pending = Message.objects.filter(pk__in=ids, status__in=open_states).count() if len(ids) < 30_000 else \
                Message.objects.filter(pk__gte=ids[0], pk__lte=ids[-1], status__in=open_states).count()
            if kill_at is not None and killed is None and pending < len(ids) * (1 - kill_at):
                victim = _holding_smtp(_descendants(cluster.pid), port)
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
    qs = Message.objects.filter(pk__gte=ids[0], pk__lte=ids[-1])
    span = qs.filter(status=MessageStatus.SENT).aggregate(first=Min("claimed_at"), last=Max("sent_at"))
    counts = {s: qs.filter(status=s).count() for s in MessageStatus.values}
    return {"wall": wall, "span": (span["last"] - span["first"]).total_seconds() if span["first"] else wall,
            "counts": counts, "killed": killed}


def run(*, size: str, db: str) -> list[dict]:
    from segments.models import Contact

    n = SIZES[size]
    started = time.perf_counter()
    template = _setup(n)
    print(f"set up {n:,} contacts in {time.perf_counter() - started:.0f} s")
    port = _free_port()
    state_file = str(Path(tempfile.mkdtemp()) / "sink.json")
    sink = subprocess.Popen([sys.executable, "-m", "bench.smtp_sink", str(port), state_file], cwd=ROOT)
    time.sleep(1.0)
    try:
        contacts = list(Contact.objects.filter(email__isnull=False).order_by("pk").only(
            "pk", "email", "first_name", "orders_count"))
        sample = contacts[: REFERENCE_SAMPLE[size]]
        ref_seconds = _reference(sample, port)
        ref_rate = len(sample) / ref_seconds
        time.sleep(1.5)  # the sink writes its counts every 0.5 s
        before = _sink_state(state_file)["count"]

        ids = _wave(template, contacts, "wave1")
        result = _run_cluster(ids, port, kill_at=None)
        time.sleep(1.5)
        sink_after = _sink_state(state_file)
        sent = result["counts"]["sent"]
        delivered = sink_after["count"] - before
        ok = delivered == sent == len(ids) and sink_after["duplicates"] == 0
        rows = [
            row("b4", "tight loop reference (1 process, 1 connection)", db, len(sample), ref_seconds),
            row("b4", "gate + ledger + 2 qcluster workers", db, sent, result["span"], reference=ref_rate, ok=ok,
                sink=delivered, ledger_sent=sent, eligible=len(ids), duplicates=sink_after["duplicates"],
                wall_s=round(result["wall"], 1)),
        ]
        # Second wave with a worker killed mid-send.
        kill_ids = _wave(template, contacts[: max(2_000, len(contacts) // 5)], "wave2")
        before = _sink_state(state_file)
        result = _run_cluster(kill_ids, port, kill_at=0.3)
        time.sleep(1.5)
        after = _sink_state(state_file)
        counts = result["counts"]
        got = after["count"] - before["count"]
        dups = after["duplicates"] - before["duplicates"]
        ok = (result["killed"] is not None and dups == 0 and got == counts["sent"]
              and counts["sent"] + counts["unknown"] == len(kill_ids))
        rows.append(row("b4", "same, one worker SIGKILLed mid-send", db, counts["sent"], result["span"], ok=ok,
                        sink=got, ledger_sent=counts["sent"], eligible=len(kill_ids), duplicates=dups,
                        missing_unknown=counts["unknown"], killed_pid=result["killed"], wall_s=round(result["wall"], 1)))
        return rows
    finally:
        sink.send_signal(signal.SIGTERM)
        sink.wait(timeout=10)
        timezone.now()
