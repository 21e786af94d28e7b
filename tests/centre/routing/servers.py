"""Local servers for the delivery channels: an HTTP receiver that checks the HMAC itself, and aiosmtpd.

The webhook receiver verifies every POST the way docs/centre.md#webhooks tells a receiver
to -- HMAC-SHA256 of ``"{timestamp}." + raw body`` with the shared secret, compared in
constant time -- written here from the documentation, not with the centre's own code.
It answers from a script of status codes (``[500, 200]``: fail once, then accept).
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
from aiosmtpd.controller import Controller

from tests.support import free_port


@dataclass
class Received:
    at: float
    headers: dict
    body: bytes
    signature_ok: bool
    status: int

    @property
    def json(self) -> dict:
        return orjson.loads(self.body)


@dataclass
class WebhookServer:
    secret: bytes
    script: list[int] = field(default_factory=list)  # status codes to answer in turn; then 200
    requests: list[Received] = field(default_factory=list)

    def start(self) -> "WebhookServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                ts = self.headers.get("X-Canopy-Timestamp", "")
                expected = "sha256=" + hmac.new(server.secret, f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
                ok = hmac.compare_digest(expected, self.headers.get("X-Canopy-Signature", "")) and \
                    abs(time.time() - int(ts or 0)) < 300
                status = server.script.pop(0) if server.script else 200
                status = status if ok else 401
                server.requests.append(Received(time.time(), dict(self.headers), body, ok, status))
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def delivered(self) -> list[Received]:
        return [r for r in self.requests if r.status == 200]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Inbox:
    def __init__(self):
        self.messages: list[tuple[float, list[str], object]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
        self.messages.append((time.time(), list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 OK"


class SmtpServer:
    def __init__(self):
        self.inbox = _Inbox()
        self.port = free_port()
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)

    def start(self) -> "SmtpServer":
        self.controller.start()
        return self

    @property
    def messages(self):
        return self.inbox.messages

    def stop(self) -> None:
        self.controller.stop()
