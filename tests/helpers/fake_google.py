"""What the local fakes of Google's REST APIs share: the server's lifecycle, Google's error body, and
the handler step that turns an answer (or the error it raises) into a response.

A fake subclasses `FakeServer` (its state and answers) and `FakeHandler` (its routes and `_send`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

# The `status` Google's APIs put beside an HTTP status in an error body.
GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


class HttpError(Exception):
    """Raised by a fake's answer: the request is answered with this status and a Google error body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_body(status: int, message: str) -> bytes:
    return json.dumps(
        {"error": {"code": status, "message": message, "status": GOOGLE_STATUS.get(status, "UNKNOWN")}}
    ).encode()


class FakeHandler(BaseHTTPRequestHandler):
    """Routes GET/POST/DELETE to `_dispatch`; `_answer_with` runs an answer and sends its errors."""

    fake: FakeServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        raise NotImplementedError

    def _send(self, status: int, payload: bytes) -> None:
        raise NotImplementedError

    def _send_error(self, status: int, message: str) -> None:
        self._send(status, error_body(status, message))

    def _answer_with(self, answer: Callable[[], Any]) -> tuple[bool, Any]:
        """(True, payload), or (False, None) once an error response has been sent: the answer's
        HttpError as itself, any other exception (a bug in the fake) as a 500 kept in `fake.errors`
        for the test to see."""
        try:
            return True, answer()
        except HttpError as e:
            self._send_error(e.status, e.message)
        except Exception as e:
            self.fake.errors.append(e)
            self._send_error(500, f"fake server error: {e!r}")
        return False, None


class FakeServer:
    """A fake's lifecycle: `start` serves its handler class on a free local port; use as a context
    manager."""

    thread_name: ClassVar[str] = "fake-google"

    def __init__(self, handler: type[FakeHandler]) -> None:
        self.handler = handler
        self.errors: list[Exception] = []
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Any:
        handler = type("Handler", (self.handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name=self.thread_name, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
