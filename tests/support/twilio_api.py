"""A local fake of Twilio's REST API (the Calls resource), over real HTTP on 127.0.0.1.

Updating a call (``POST …/Calls/CA….json``: hang up, redirect) and creating one
(``POST …/Calls.json``: 201 with a ``queued`` call resource) are both answered.

It answers like api.twilio.com: Basic auth with the account SID and auth token, form
bodies, JSON call resources, and Twilio's error shape (``{"code": 20404, ...}`` for a
call that does not exist). Point ``TwilioRest(base_url=fake.base_url)`` at it.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

__all__ = ["FakeTwilioApi", "RecordedRequest", "fake_twilio_api"]

_CALL = re.compile(r"^/2010-04-01/Accounts/(AC[0-9a-f]{32})/Calls/(CA[0-9a-f]{32})\.json$")
_CALLS = re.compile(r"^/2010-04-01/Accounts/(AC[0-9a-f]{32})/Calls\.json$")


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    form: dict[str, list[str]]
    authorization: str


@dataclass
class FakeTwilioApi:
    account_sid: str
    auth_token: str
    base_url: str = ""
    calls: dict[str, str] = field(default_factory=dict)  # CallSid → status
    created: list[dict[str, list[str]]] = field(default_factory=list)  # forms of new calls
    requests: list[RecordedRequest] = field(default_factory=list)
    fail_with: tuple[int, int] | None = None  # (HTTP status, Twilio code) for every request
    before_answer: Callable[[], None] | None = None  # runs in the server thread per request

    def add_call(self, call_sid: str, status: str = "in-progress") -> None:
        self.calls[call_sid] = status


@contextmanager
def fake_twilio_api(account_sid: str, auth_token: str) -> Iterator[FakeTwilioApi]:
    api = FakeTwilioApi(account_sid, auth_token)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
            return

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode("utf-8")
            form = parse_qs(body, keep_blank_values=True)
            with lock:
                api.requests.append(
                    RecordedRequest("POST", self.path, form, self.headers.get("Authorization", ""))
                )
            expected = (
                "Basic " + base64.b64encode(f"{api.account_sid}:{api.auth_token}".encode()).decode()
            )
            if self.headers.get("Authorization") != expected:
                return self._error(401, 20003, "Authenticate")
            if api.before_answer is not None:
                api.before_answer()
            if api.fail_with:
                return self._error(*api.fail_with, "Injected failure")
            if (new := _CALLS.match(self.path)) and new.group(1) == api.account_sid:
                return self._create(form)
            m = _CALL.match(self.path)
            if not m or m.group(1) != api.account_sid:
                return self._error(404, 20404, f"The requested resource {self.path} was not found")
            call_sid = m.group(2)
            with lock:
                status = api.calls.get(call_sid)
                if status is None:
                    return self._error(
                        404, 20404, f"The requested resource {self.path} was not found"
                    )
                if form.get("Status") == ["completed"]:
                    api.calls[call_sid] = status = "completed"
                elif "Twiml" in form:
                    api.calls[call_sid] = status = "in-progress"
            self._json(200, _call_resource(api.account_sid, call_sid, status))

        def _create(self, form: dict[str, list[str]]) -> None:
            if not form.get("To") or not form.get("From") or not form.get("Url"):
                return self._error(400, 21201, "To, From and Url are required")
            call_sid = "CA" + secrets.token_hex(16)
            with lock:
                api.created.append(form)
                api.calls[call_sid] = "queued"
            resource = _call_resource(api.account_sid, call_sid, "queued")
            resource.update(to=form["To"][0], direction="outbound-api")
            resource["from"] = form["From"][0]
            self._json(201, resource)

        def _error(self, http_status: int, code: int, message: str) -> None:
            self._json(
                http_status,
                {
                    "code": code,
                    "message": message,
                    "more_info": f"https://www.twilio.com/docs/errors/{code}",
                    "status": http_status,
                },
            )

        def _json(self, http_status: int, payload: object) -> None:
            data = json.dumps(payload).encode()
            self.send_response(http_status)
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


def _call_resource(account_sid: str, call_sid: str, status: str) -> dict[str, object]:
    return {
        "account_sid": account_sid,
        "sid": call_sid,
        "status": status,
        "direction": "inbound",
        "from": "+15550100001",
        "to": "+15550100002",
        "date_created": "Tue, 10 Jun 2025 12:00:00 +0000",
        "date_updated": "Tue, 10 Jun 2025 12:01:00 +0000",
        "start_time": "Tue, 10 Jun 2025 12:00:01 +0000",
        "end_time": None,
        "duration": None,
        "price": None,
        "api_version": "2010-04-01",
        "uri": f"/2010-04-01/Accounts/{account_sid}/Calls/{call_sid}.json",
        "subresource_uris": {},
    }
