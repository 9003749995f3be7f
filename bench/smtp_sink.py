"""A counting SMTP sink for benchmarks: `python -m bench.smtp_sink PORT OUTFILE`.

Counts messages and their Message-IDs; writes {"count", "unique", "duplicates"} to OUTFILE every
half second and on SIGTERM, so the benchmark can check 0 duplicates and 0 missing.
"""

import asyncio
import collections
import json
import signal
import sys
import threading
import time

from aiosmtpd.controller import Controller


class Counter:
    def __init__(self):
        self.ids = collections.Counter()
        self.count = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        header_end = envelope.content.find(b"\r\n\r\n")
        headers = envelope.content[: header_end if header_end > 0 else 4096]
        message_id = b""
        for line in headers.split(b"\r\n"):
            if line.lower().startswith(b"message-id:"):
                message_id = line.split(b":", 1)[1].strip()
        with self.lock:
            self.count += 1
            self.ids[message_id] += 1
        return "250 OK"

    def snapshot(self) -> dict:
        with self.lock:
            return {"count": self.count, "unique": len(self.ids),
                    "duplicates": sum(n - 1 for n in self.ids.values() if n > 1)}


def main() -> None:
    port, out = int(sys.argv[1]), sys.argv[2]
    counter = Counter()
    controller = Controller(counter, hostname="127.0.0.1", port=port, data_size_limit=10_000_000)
    controller.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    while not stop.is_set():
        with open(out, "w") as fh:
            json.dump(counter.snapshot(), fh)
        time.sleep(0.5)
    controller.stop()
    with open(out, "w") as fh:
        json.dump(counter.snapshot(), fh)


if __name__ == "__main__":
    asyncio.set_event_loop(asyncio.new_event_loop())
    main()
