"""A local stand-in for Mailgun's sending API: `python -m bench.fake_esp PORT OUTFILE`.

It answers `POST /v3/<domain>/messages` the way Mailgun documents it (form fields from, to
(repeated), subject, text, html, h:<Header>, v:<custom data>, o:tag, recipient-variables; reply
`{"id": "<...>", "message": "Queued. Thank you."}`) and does what Mailgun's batch sending does
with it: one message per `to` recipient, with every `%recipient.KEY%` replaced by that
recipient's value from recipient-variables. It counts the resulting messages and the Message
ids they carry in custom data (`v:message_id`, which is what anymail's merge_metadata becomes),
and writes {"count", "unique", "duplicates", "requests", "bad"} to OUTFILE every half second.
`bad` counts messages whose subject or body still holds a merge field (a recipient without data).

Used by benchmark B4's ESP-batch row and, in-process, by tests/channels/test_esp_batch.py.
"""

import collections
import json
import re
import signal
import sys
import threading
import time
from email.utils import parseaddr
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

MERGE_FIELD = re.compile(r"%recipient\.([^%]+)%")


def form_fields(content_type: str, body: bytes) -> dict[str, list[str]]:
    """A POSTed form (urlencoded or multipart/form-data, RFC 7578) as {name: [values...]}."""
    if content_type.startswith("application/x-www-form-urlencoded"):
        return {k: v for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
    boundary = re.search(r'boundary="?([^";]+)"?', content_type)
    if not content_type.startswith("multipart/form-data") or boundary is None:
        return {}
    fields: dict[str, list[str]] = {}
    for part in body.split(b"--" + boundary.group(1).encode())[1:-1]:
        head, _, value = part.partition(b"\r\n\r\n")
        name = re.search(rb'\bname="([^"]*)"', head)
        if name is None or b"filename=" in head:
            continue  # attachments are not counted
        fields.setdefault(name.group(1).decode(), []).append(value.removesuffix(b"\r\n").decode("utf-8"))
    return fields


def mailgun_batch(fields: dict[str, list[str]]) -> list[dict]:
    """The messages Mailgun sends for one API call: one per `to`, merge fields filled in."""
    variables = json.loads((fields.get("recipient-variables") or ["{}"])[0])
    out = []
    for to in fields.get("to", []):
        address = parseaddr(to)[1]
        mine = variables.get(address, {})

        def fill(text: str, mine=mine) -> str:
            return MERGE_FIELD.sub(lambda m: str(mine.get(m.group(1), m.group(0))), text)

        out.append({
            "to": address, "from": (fields.get("from") or [""])[0],
            "subject": fill((fields.get("subject") or [""])[0]),
            "text": fill((fields.get("text") or [""])[0]), "html": fill((fields.get("html") or [""])[0]),
            "headers": {k[2:]: fill(v[0]) for k, v in fields.items() if k.startswith("h:")},
            "variables": {k[2:]: fill(v[0]) for k, v in fields.items() if k.startswith("v:")},
            "tags": fields.get("o:tag", []),
        })
    return out


class State:
    def __init__(self, keep: bool = False):
        self.lock = threading.Lock()
        self.ids = collections.Counter()
        self.count = self.requests = self.bad = 0
        self.keep = keep
        self.messages: list[dict] = []
        # For tests: answer the next requests with this (status, body) instead; or take the
        # messages and answer only after `delay` seconds (a client timing out meanwhile).
        self.reply_with: tuple[int, dict] | None = None
        self.delay = 0.0

    def add(self, messages: list[dict]) -> None:
        with self.lock:
            self.requests += 1
            for m in messages:
                self.count += 1
                self.ids[m["variables"].get("message_id", "")] += 1
                if MERGE_FIELD.search(m["subject"] + m["text"] + m["html"]):
                    self.bad += 1
                if self.keep:
                    self.messages.append(m)

    def snapshot(self) -> dict:
        with self.lock:
            return {"count": self.count, "unique": len(self.ids), "requests": self.requests, "bad": self.bad,
                    "duplicates": sum(n - 1 for n in self.ids.values() if n > 1)}


def handler_for(state: State):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: anymail's requests session reuses the connection

        def do_POST(self):  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if not re.fullmatch(r"/v3/[^/]+/messages", self.path) or not self.headers.get("Authorization"):
                return self._reply(404, {"message": "Not found"})
            if state.reply_with:
                return self._reply(*state.reply_with)
            messages = mailgun_batch(form_fields(self.headers.get("Content-Type", ""), body))
            if not messages:
                return self._reply(400, {"message": "'to' parameter is missing"})
            state.add(messages)
            time.sleep(state.delay)
            domain = self.path.split("/")[2]
            self._reply(200, {"id": f"<{time.strftime('%Y%m%d%H%M%S')}.{state.requests}@{domain}>",
                              "message": "Queued. Thank you."})

        def _reply(self, code: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    return Handler


def serve(port: int, state: State) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", port), handler_for(state))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> None:
    port, out = int(sys.argv[1]), sys.argv[2]
    state = State()
    server = serve(port, state)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    while not stop.is_set():
        with open(out, "w") as fh:
            json.dump(state.snapshot(), fh)
        time.sleep(0.5)
    server.shutdown()
    with open(out, "w") as fh:
        json.dump(state.snapshot(), fh)


if __name__ == "__main__":
    main()
