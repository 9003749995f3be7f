"""A bounded, closed-loop HTTP load generator for B2, run as its own process.

    python -m bench.loadgen --url http://127.0.0.1:8123/api/v1/events --key sk_... \
        --mode batch --events 1000000 --contacts 100000 --batch 500 --concurrency 4 --seed 2

Each of `concurrency` threads keeps one keep-alive connection and sends its next request only
when the previous answer has arrived, so at most `concurrency` requests are in flight. Events
are generated from the seed (the same run sends the same events): 5 event types, ~200 bytes of
properties, every event with an idempotency key, 1% of them repeating an earlier key. The request
bodies are built before the clock starts (as wrk or k6 scripts do): on this 2-core box the load
generator shares the CPU with the server, and making up a million events on the fly took ~15 µs
each of it. Prints one JSON object: requests, events sent, unique keys, accepted, duplicates,
errors, seconds, p50/p99 latency in ms.
"""

import argparse
import http.client
import json
import random
import sys
import threading
import time
from urllib.parse import urlparse

TYPES = ["product_viewed", "category_viewed", "searched", "cart_updated", "checkout_started"]
CATEGORIES = ["kitchen", "garden", "books", "toys", "apparel"]


def events(n: int, contacts: int, seed: int, prefix: str):
    """(event, is_duplicate) pairs; deterministic for a seed."""
    rng = random.Random(seed)
    for i in range(n):
        if i and rng.random() < 0.01:
            j = rng.randrange(i)  # repeat an earlier event, same key, same content
            r = random.Random(seed * 1_000_003 + j)
            yield _event(r, j, contacts, prefix), True
        else:
            yield _event(random.Random(seed * 1_000_003 + i), i, contacts, prefix), False


def _event(r: random.Random, i: int, contacts: int, prefix: str) -> dict:
    sku = f"SKU-{r.randrange(5000):05d}"
    return {"type": r.choice(TYPES), "email": f"c{r.randrange(contacts)}@example.com",
            "idempotency_key": f"{prefix}-{i}", "occurred_at": f"2026-11-20T10:{i // 60 % 60:02d}:{i % 60:02d}Z",
            "properties": {"sku": sku, "title": f"Product {sku}", "price": f"{r.randrange(100, 20000) / 100:.2f}",
                           "category": r.choice(CATEGORIES), "url": f"https://shop.example/products/{sku.lower()}",
                           "source": "bench"}}


def _bodies(args, stats: dict) -> list[bytes]:
    """Every request body, in sending order; counts the events and the unique keys among them."""
    seen_keys: set[str] = set()
    out, items = [], []
    size = 1 if args.mode == "single" else args.batch
    for event, _dup in events(args.events, args.contacts, args.seed, args.prefix):
        items.append(event)
        seen_keys.add(event["idempotency_key"])
        if len(items) == size:
            out.append(json.dumps(items[0] if args.mode == "single" else {"batch": items}).encode())
            items = []
    if items:
        out.append(json.dumps(items[0] if args.mode == "single" else {"batch": items}).encode())
    stats["events"], stats["unique"] = args.events, len(seen_keys)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--mode", choices=["batch", "single"], required=True)
    ap.add_argument("--events", type=int, required=True)
    ap.add_argument("--contacts", type=int, required=True)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--prefix", default="ev")
    args = ap.parse_args(argv)

    url = urlparse(args.url)
    lock = threading.Lock()
    stats = {"requests": 0, "events": 0, "unique": 0, "accepted": 0, "duplicates": 0, "errors": 0}
    latencies: list[float] = []
    bodies = iter(_bodies(args, stats))

    def next_body() -> bytes | None:
        with lock:
            return next(bodies, None)

    def worker() -> None:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {args.key}"}
        mine: list[float] = []
        counts = {"requests": 0, "accepted": 0, "duplicates": 0, "errors": 0}
        while (body := next_body()) is not None:
            t0 = time.perf_counter()
            try:
                conn.request("POST", url.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
                counts["errors"] += 1
                continue
            mine.append(time.perf_counter() - t0)
            counts["requests"] += 1
            if resp.status == 202:
                result = json.loads(data)
                counts["accepted"] += result["accepted"]
                counts["duplicates"] += result["duplicates"]
            else:
                counts["errors"] += 1
        conn.close()
        with lock:
            latencies.extend(mine)
            for k, v in counts.items():
                stats[k] += v

    threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 2) if latencies else 0.0

    json.dump({**stats, "seconds": round(seconds, 3), "p50_ms": pct(0.50), "p99_ms": pct(0.99)}, sys.stdout)


if __name__ == "__main__":
    main()
