"""B4, throttle: a sending rate limit of N messages/s must hold within +-5% over a 60 s window.

PERFORMANCE.md B4: "A throttle set to N/s must keep the measured rate within +-5% of N over a 60 s
window." The limit is one channels.SendRateLimit row that both qcluster workers reserve hand-over
slots on (channels/throttle.py). N defaults to 50/s (BENCH_THROTTLE to change it), well under what
the workers can do unthrottled here, so the limit is what decides the rate. About 80 s of sending
is queued; the window is the 60 s starting 10 s after the first message reached the SMTP sink (in
another process; its own clock stamps each message as it accepts it). The reference is N itself.
Correctness as in B4: sink = ledger = eligible recipients, 0 duplicates.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.b4_send import _free_port, _run_cluster, _setup, _sink_state, _wave
from bench.framework import ROOT, row

WINDOW, SKIP = 60.0, 10.0


def run(*, size: str, db: str) -> list[dict]:
    from channels.models import SendRateLimit
    from segments.models import Contact

    rate = float(os.getenv("BENCH_THROTTLE", "50"))
    n = int(rate * (WINDOW + SKIP + 10))
    template = _setup(n)
    SendRateLimit.objects.create(channel="email", per_second=rate)
    port = _free_port()
    state_file = str(Path(tempfile.mkdtemp()) / "sink.json")
    sink = subprocess.Popen([sys.executable, "-m", "bench.smtp_sink", str(port), state_file], cwd=ROOT)
    time.sleep(1.0)
    try:
        contacts = list(Contact.objects.filter(email__isnull=False).order_by("pk").only("pk", "email")[:n])
        ids = _wave(template, contacts, "throttled")
        result = _run_cluster(ids, {"EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
                                    "EMAIL_HOST": "127.0.0.1", "EMAIL_PORT": str(port)})
        time.sleep(1.5)
        state = _sink_state(state_file)
        stamps = sorted(json.loads(line)[4] for line in Path(state_file + ".accepted").read_text().splitlines() if line)
    finally:
        sink.send_signal(signal.SIGTERM)
        sink.wait(timeout=10)
    start = stamps[0] + SKIP
    in_window = sum(1 for t in stamps if start <= t < start + WINDOW)
    # The worst second-by-second burst, for the record (a provider counting per second sees this).
    per_second: dict[int, int] = {}
    for t in stamps:
        per_second[int(t - stamps[0])] = per_second.get(int(t - stamps[0]), 0) + 1
    counts = result["counts"]
    measured = in_window / WINDOW
    ok = (abs(measured - rate) <= 0.05 * rate and state["count"] == counts["ledger"] == len(ids)
          and state["duplicates"] == 0)
    return [row("b4t", f"throttle {rate:g}/s, 2 qcluster workers, 60 s window", db, in_window, WINDOW,
                reference=rate, ok=ok, target_per_s=rate, sink=state["count"], ledger=counts["ledger"],
                eligible=len(ids), duplicates=state["duplicates"], busiest_second=max(per_second.values()),
                wall_s=round(result["wall"], 1))]
