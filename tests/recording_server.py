"""A tiny real HTTP server on loopback that records every request it receives (for leak tests).

``RecordingServer()`` listens on 127.0.0.1 on a free port (port 0: the kernel picks it) in a thread.
By default it answers like a Nessus scanner that is ready (``/server/status``) and 401 otherwise;
``redirect_to`` makes it answer every request with ``302 Location: <redirect_to><path>`` instead.
``requests`` holds what arrived: method, path, headers and body of each request.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def text(self) -> str:
        """Everything a secret could hide in: request line, headers and body."""
        headers = "\n".join(f"{k}: {v}" for k, v in self.headers.items())
        return f"{self.method} {self.path}\n{headers}\n\n{self.body.decode('utf-8', 'replace')}"


class RecordingServer:
    def __init__(self, redirect_to: str = "", status: int = 302) -> None:
        self.redirect_to = redirect_to
        self.status = status
        self.requests: list[Recorded] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                server.requests.append(Recorded(self.command, self.path, dict(self.headers.items()), body))
                if server.redirect_to:
                    self.send_response(server.status)
                    self.send_header("Location", server.redirect_to + self.path)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.path == "/server/status":
                    payload, code = {"status": "ready", "progress": None}, 200
                else:
                    payload, code = {"error": "Invalid Credentials"}, 401
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> RecordingServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> RecordingServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def received(self) -> str:
        return "\n----\n".join(r.text() for r in self.requests)
