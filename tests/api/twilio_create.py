"""A local fake of Twilio's ``POST /Accounts/{sid}/Calls.json`` (create a call).

``tests/support/twilio_api.py`` fakes updates to existing calls; placing a call is a
different resource, answered here the same way api.twilio.com does: Basic auth, a form
body, 201 with the call resource (status ``queued``), Twilio's error shape otherwise.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

__all__ = ["FakeCallCreation", "fake_call_creation"]

_CALLS = re.compile(r"^/2010-04-01/Accounts/(AC[0-9a-f]{32})/Calls\.json$")


@dataclass
class FakeCallCreation:
    account_sid: str
    auth_token: str
    base_url: str = ""
    created: list[dict[str, list[str]]] = field(default_factory=list)


@contextmanager
def fake_call_creation(account_sid: str, auth_token: str) -> Iterator[FakeCallCreation]:
    api = FakeCallCreation(account_sid, auth_token)
    lock = threading.Lock()
    expected = "Basic " + base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            form = parse_qs(body, keep_blank_values=True)
            if self.headers.get("Authorization") != expected:
                return self._json(401, {"code": 20003, "message": "Authenticate", "status": 401})
            m = _CALLS.match(self.path)
            if not m or m.group(1) != account_sid:
                return self._json(404, {"code": 20404, "message": "not found", "status": 404})
            if not form.get("To") or not form.get("From") or not form.get("Url"):
                return self._json(
                    400, {"code": 21201, "message": "To, From and Url are required", "status": 400}
                )
            with lock:
                api.created.append(form)
            sid = "CA" + secrets.token_hex(16)
            self._json(
                201,
                {
                    "sid": sid,
                    "account_sid": account_sid,
                    "to": form["To"][0],
                    "from": form["From"][0],
                    "status": "queued",
                    "direction": "outbound-api",
                    "api_version": "2010-04-01",
                    "uri": f"/2010-04-01/Accounts/{account_sid}/Calls/{sid}.json",
                },
            )

        def _json(self, status: int, payload: object) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    api.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
