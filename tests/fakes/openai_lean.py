"""``FakeOpenAI``'s answers from a plain asyncio HTTP/1.1 server, for the load benchmark.

Why: under uvicorn and Starlette a streamed answer costs a task group, middleware and an
ASGI message per chunk, and every chunk is encoded anew; at 200 calls the fake takes a
request every few milliseconds on the callers' core. Here one ``asyncio.Protocol`` per
connection parses the request, and each reply's chunks are encoded once (per model) and
reused, with only the stream's id and creation time spliced in.

What the client sees is what ``FakeOpenAI`` sends: the same status lines, the bodies
byte for byte (``data: {json}`` events, chunked; JSON errors with a length), the same
validation, scripted failures, delays, drops and stalls; keep-alive as HTTP/1.1 has it
(``Connection: close`` honoured, an idle connection closed after ``FakeOpenAI``'s
``keep_alive_s``, the real API's 400 s by default). Not served: chunked request
bodies (411), pipelining.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from email.utils import formatdate
from types import TracebackType
from typing import Any, Self

from fakes._link import CostlyLink
from fakes.openai_chat import _ERROR_TYPES, FakeOpenAI, _chunks, _invalid
from fakes.script import Failure, Reply

__all__ = ["LeanOpenAI"]

_MAX_HEAD = 64 * 1024
_STREAM_HEAD = (b"content-type: text/event-stream; charset=utf-8\r\n"
                b"transfer-encoding: chunked\r\n")
_ID = "chatcmpl-" + "0" * 24  # the template's id: replaced by each stream's own


class LeanOpenAI(FakeOpenAI):
    """``FakeOpenAI`` (same constructor, same records) on a lean HTTP server."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._listener: asyncio.Server | None = None
        self._conns: set[_Http] = set()
        self._encoded: dict[tuple[int, str], tuple[Reply, list[str]]] = {}

    @property
    def base_url(self) -> str:
        assert self._listener is not None, "use 'async with LeanOpenAI(...)'"
        port = self.link.port if self.link is not None else self._port
        return f"http://127.0.0.1:{port}{self.path_prefix}"

    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(lambda: _Http(self), "127.0.0.1", 0)
        self._port = int(self._listener.sockets[0].getsockname()[1])
        if self.new_connection_s > 0:
            self.link = CostlyLink(self._port, self.new_connection_s)
            await self.link.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._listener is not None
        self.release.set()
        self._listener.close()
        for conn in list(self._conns):
            conn.abort()
        await self._listener.wait_closed()
        if self.link is not None:
            await self.link.close()

    # ------------------------------------------------------------ answers

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> (
        tuple[int, bytes] | tuple[Failure, bytes] | tuple[Reply, str]
    ):
        """What ``FakeOpenAI``'s routes answer: (status, JSON body), a hang (a ``Failure``
        to wait on, then its body) or a stream to send (its reply and model)."""
        if path == "/v1/models":
            if method != "GET":
                return 405, b"Method Not Allowed"
            self.models_requests += 1
            if not self._authorized(headers):
                return _error(401, "Incorrect API key provided.")
            return 200, _dumps({"object": "list", "data": [
                {"id": "gpt-4o", "object": "model", "created": 1715367049,
                 "owned_by": "system"}]})
        if path != "/v1/chat/completions":
            return 404, b"Not Found"
        if method != "POST":
            return 405, b"Method Not Allowed"
        self.headers.append(dict(headers))
        if not self._authorized(headers):
            return _error(401, "Incorrect API key provided.")
        try:
            request = json.loads(body)
        except ValueError:
            return _error(400, "We could not parse the JSON body of your request.")
        self.requests.append(request)
        problem = _invalid(request)
        if problem:
            return _error(400, problem)
        answer = self._cursor.next(request)
        if isinstance(answer, Failure):
            status, error = _error(answer.status, answer.message, answer.kind, answer.code)
            if answer.hang:
                return answer, error
            return status, error
        return answer, str(request["model"])

    def events(self, reply: Reply, model: str) -> list[str]:
        """The stream's ``data:`` payloads after the id and creation time, made once."""
        key = (id(reply), model)
        cached = self._encoded.get(key)
        if cached is None or cached[0] is not reply:
            head = len(_chunk_head(_ID, 0))
            bodies = [json.dumps({"id": _ID, "object": "chat.completion.chunk", "created": 0,
                                  "model": model, "system_fingerprint": "fp_fake", **payload})
                      for payload in _chunks(reply)]
            cached = self._encoded[key] = (reply, [b[head:] for b in bodies])
        return cached[1]

    def _authorized(self, headers: dict[str, str]) -> bool:
        return self.api_key is None or headers.get("authorization") == f"Bearer {self.api_key}"


def _chunk_head(chunk_id: str, created: int) -> str:
    return f'{{"id": "{chunk_id}", "object": "chat.completion.chunk", "created": {created}, '


def _dumps(content: Any) -> bytes:
    """Starlette's ``JSONResponse`` rendering."""
    return json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None,
                      separators=(",", ":")).encode()


def _error(status: int, message: str, kind: str | None = None,
           code: str | None = None) -> tuple[int, bytes]:
    default_kind, default_code = _ERROR_TYPES.get(status, ("server_error", None))
    return status, _dumps({"error": {"message": message, "type": kind or default_kind,
                                     "param": None, "code": code or default_code}})


class _Http(asyncio.Protocol):
    """One client connection: requests in order, one at a time."""

    def __init__(self, fake: LeanOpenAI) -> None:
        self.fake = fake
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.busy: asyncio.Task[None] | None = None
        self.idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.fake._conns.add(self)
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.fake._conns.discard(self)
        self.transport = None
        if self.idle is not None:
            self.idle.cancel()
        if self.busy is not None:
            self.busy.cancel()

    def _arm_idle(self) -> None:
        """Between requests a connection lives ``keep_alive_s``, as FakeOpenAI's does."""
        if self.idle is not None:
            self.idle.cancel()
        if self.transport is not None:
            loop = asyncio.get_running_loop()
            self.idle = loop.call_later(self.fake.keep_alive_s, self.transport.close)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.idle is not None:
            self.idle.cancel()
            self.idle = None
        if self.busy is None:
            self._next()

    def _next(self) -> None:
        """Take the next whole request from the buffer, if there is one."""
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if not self.buf:
                self._arm_idle()
            if len(self.buf) > _MAX_HEAD:
                self._send_simple(431, b"Request Header Fields Too Large", close=True)
            return
        lines = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        method, _, rest = lines[0].partition(" ")
        path = rest.rpartition(" ")[0].split("?", 1)[0]
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._send_simple(411, b"Length Required", close=True)
            return
        length = int(headers.get("content-length", "0") or 0)
        if len(self.buf) < end + 4 + length:
            return
        body = bytes(self.buf[end + 4 : end + 4 + length])
        del self.buf[: end + 4 + length]
        close = headers.get("connection", "").lower() == "close"
        answer = self.fake.answer(method, path, headers, body)
        if isinstance(answer[0], int):
            status, payload = answer
            assert isinstance(status, int) and isinstance(payload, bytes)
            self._send_simple(status, payload, close=close)
            if not close:
                self._next()
            return
        self.busy = asyncio.ensure_future(self._respond(answer, close))

    async def _respond(self, answer: tuple[Any, Any], close: bool) -> None:
        what, detail = answer
        try:
            if isinstance(what, Failure):  # a vendor that accepted and went quiet
                await self.fake.release.wait()
                self._send_simple(what.status, detail, close=close)
            else:
                await self._stream(what, detail)
                if close:
                    self.abort()
        finally:
            self.busy = None
        if self.transport is not None and not close:
            self._next()

    async def _stream(self, reply: Reply, model: str) -> None:
        fake, finished = self.fake, False
        try:
            self._write(_status(200) + _STREAM_HEAD + b"\r\n")
            head = _chunk_head(f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time()))
            if reply.first_token_delay_s:
                await asyncio.sleep(reply.first_token_delay_s)
            for sent, tail in enumerate(fake.events(reply, model)):
                if reply.drop_after is not None and sent >= reply.drop_after:
                    assert self.transport is not None
                    self.transport.close()  # cut mid-stream, the way a dying proxy does
                    return
                if reply.stall_after is not None and sent >= reply.stall_after:
                    await fake.release.wait()
                    self._write(b"0\r\n\r\n")
                    finished = True
                    return
                if reply.error_event_after is not None and sent >= reply.error_event_after:
                    error = {"error": {"message": "The server had an error while processing "
                                       "your request.", "type": "server_error", "param": None,
                                       "code": None}}
                    self._chunk(f"data: {json.dumps(error)}\n\n".encode())
                    self._write(b"0\r\n\r\n")
                    finished = True
                    return
                if reply.malformed_after is not None and sent >= reply.malformed_after:
                    self._chunk(b'data: {"id": "chatcmpl-x", "choices": [{"delta": '
                                b'{"content": \n\n')
                    self._write(b"0\r\n\r\n")
                    finished = True
                    return
                if sent and reply.chunk_delay_s:
                    await asyncio.sleep(reply.chunk_delay_s)
                self._chunk(f"data: {head}{tail}\n\n".encode())
            self._chunk(b"data: [DONE]\n\n")
            self._write(b"0\r\n\r\n")
            finished = True
        finally:
            if finished:
                fake.completed += 1
            else:
                fake.aborted += 1

    def _chunk(self, data: bytes) -> None:
        self._write(b"%x\r\n%s\r\n" % (len(data), data))

    def _send_simple(self, status: int, body: bytes, *, close: bool) -> None:
        kind = b"application/json" if body[:1] == b"{" else b"text/plain; charset=utf-8"
        head = b"content-length: %d\r\ncontent-type: %s\r\n" % (len(body), kind)
        if close:
            head += b"connection: close\r\n"
        self._write(_status(status) + head + b"\r\n" + body)
        if close:
            assert self.transport is not None
            self.transport.close()

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


_REASONS = {200: b"OK", 400: b"Bad Request", 401: b"Unauthorized", 403: b"Forbidden",
            404: b"Not Found", 405: b"Method Not Allowed", 411: b"Length Required",
            429: b"Too Many Requests", 431: b"Request Header Fields Too Large",
            500: b"Internal Server Error", 503: b"Service Unavailable"}


_date: tuple[int, bytes] = (0, b"")


def _status(status: int) -> bytes:
    """The status line and the headers uvicorn puts on every answer (its date is
    formatted once a second, as uvicorn's is)."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, formatdate(now, usegmt=True).encode())
    return b"HTTP/1.1 %d %s\r\ndate: %s\r\nserver: uvicorn\r\n" % (
        status, _REASONS.get(status, b""), _date[1])
