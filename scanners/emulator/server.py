"""HTTP(S) serving of the emulator: routing, auth, fault injection, the control API, going up and down.

Instance *i* listens on ``port + i`` (one port per scanner, like real scanners). Each instance also
serves the control API under ``/_emulator/`` (no Nessus auth; loopback test tool):

* ``GET  /_emulator/state``  faults, statistics (``current_running``, ``max_concurrent``, launches per
  scan) and every scan;
* ``POST /_emulator/faults`` a JSON object of knobs (see :class:`~scanners.emulator.faults.Faults`);
* ``POST /_emulator/reset``  forget scans, sessions and statistics and restore the start-up faults
  (``?keep_faults=1`` keeps the current faults).

``/_emulator/instances/{i}/…`` addresses instance *i* of the same process through any live instance,
which is how a ``down`` instance is brought back (or give ``down_seconds``).
"""

from __future__ import annotations

import re
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from scanners.emulator import api, exports
from scanners.emulator.http import HttpError, Request, Response, error_response, json_response
from scanners.emulator.instance import Instance

# (method, pattern, handler, needs auth, needs the scan API licence)
ROUTES: list[tuple[str, re.Pattern[str], api.Handler, bool, bool]] = [
    (m, re.compile(f"^{p}$"), h, auth, lic)
    for m, p, h, auth, lic in [
        ("POST", "/session", api.post_session, False, False),
        ("DELETE", "/session", api.delete_session, True, False),
        ("GET", "/session", api.get_session, True, False),
        ("GET", "/server/status", api.server_status, False, False),
        ("GET", "/editor/scan/templates", api.templates, True, False),
        ("POST", "/file/upload", api.file_upload, True, False),
        ("GET", "/scans", api.list_scans, True, False),
        ("GET", "/folders", api.list_folders, True, False),
        ("GET", "/policies", api.list_policies, True, False),
        ("GET", "/scanners", api.list_scanners, True, False),
        ("POST", "/scans", api.create_scan, True, True),
        ("GET", r"/scans/(?P<scan_id>\d+)", api.scan_details, True, False),
        ("DELETE", r"/scans/(?P<scan_id>\d+)", api.delete_scan, True, True),
        ("GET", r"/scans/(?P<scan_id>\d+)/hosts/(?P<host_id>\d+)", api.host_details, True, False),
        ("POST", r"/scans/(?P<scan_id>\d+)/launch", api.launch_scan, True, True),
        ("POST", r"/scans/(?P<scan_id>\d+)/stop", api.scan_action("stop"), True, True),
        ("POST", r"/scans/(?P<scan_id>\d+)/kill", api.scan_action("stop"), True, True),
        ("POST", r"/scans/(?P<scan_id>\d+)/pause", api.scan_action("pause"), True, True),
        ("POST", r"/scans/(?P<scan_id>\d+)/resume", api.scan_action("resume"), True, True),
        ("POST", r"/scans/(?P<scan_id>\d+)/export", exports.export_request, True, False),
        ("GET", r"/scans/(?P<scan_id>\d+)/export/(?P<file_id>\d+)/status", exports.export_status, True, False),
        ("GET", r"/scans/(?P<scan_id>\d+)/export/(?P<file_id>\d+)/download", exports.export_download, True, False),
        ("GET", r"/tokens/(?P<token>[0-9a-zA-Z]+)/status", exports.export_status, False, False),
        ("GET", r"/tokens/(?P<token>[0-9a-zA-Z]+)/download", exports.export_download, False, False),
    ]
]
_CONTROL = re.compile(r"^/_emulator(?:/instances/(?P<index>\d+))?/(?P<action>state|faults|reset)$")


_INJECTED_MESSAGES = {
    403: "You do not have permission to view this page.",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}

class EmulatorHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address, handler, instance: Instance, cluster: Cluster, tls: ssl.SSLContext | None):
        self.instance = instance
        self.cluster = cluster
        self.tls = tls
        super().__init__(address, handler)

    def get_request(self):
        conn, addr = super().get_request()
        if self.tls is not None:  # handshake happens in the request thread, not in the accept loop
            conn = self.tls.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        return conn, addr


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: EmulatorHTTPServer
    server_version = "NessusWWW"
    sys_version = ""

    def log_message(self, format: str, *args) -> None:
        if self.server.cluster.verbose:
            super().log_message(format, *args)

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (ssl.SSLError, ConnectionError, TimeoutError):
            self.close_connection = True

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_DELETE = do_PUT = do_GET

    def _serve(self) -> None:
        inst = self.server.instance
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        req = Request(self.command, split.path.rstrip("/") or "/", dict(parse_qsl(split.query)), self.headers, body)
        control = _CONTROL.match(req.path)
        if control:
            self._send(self.server.cluster.control(inst, req, control.group("index"), control.group("action")))
            return
        if inst.faults.down:  # a connection that was already open when the instance went down: drop it
            self.close_connection = True
            self.connection.close()
            return
        with inst.lock:
            inst.stats.requests += 1
        if inst.faults.latency > 0:
            time.sleep(inst.faults.latency)
        self._send(self._dispatch(inst, req), req)

    def _dispatch(self, inst: Instance, req: Request) -> Response:
        injected = inst.gate.injected_error(f"{req.method} {req.path}")
        if injected:
            with inst.lock:
                inst.stats.injected_errors += 1
            resp = error_response(injected, _INJECTED_MESSAGES.get(injected, "Injected error"))
            if injected in (429, 503) and inst.faults.retry_after:
                resp.headers["Retry-After"] = inst.faults.retry_after
            return resp
        if req.path == "/server/properties" and req.method == "GET":
            return api.server_properties(inst, req, authenticated=self._authenticated(inst))
        allowed = False
        for method, pattern, handler, needs_auth, licensed in ROUTES:
            match = pattern.match(req.path)
            if not match:
                continue
            if method != req.method:
                allowed = True
                continue
            if inst.faults.not_ready and handler is not api.server_status:
                return error_response(503, "Nessus is not ready yet: plugins are being compiled")
            if needs_auth and not self._authenticated(inst):
                return error_response(401, "Invalid Credentials")
            if licensed and not inst.faults.scan_api:
                return error_response(412, "API is not available")
            req.params = match.groupdict()
            try:
                return handler(inst, req)
            except HttpError as exc:
                return error_response(exc.status, exc.message)
        return error_response(405 if allowed else 404, "Method not allowed" if allowed else "Not found")

    def _authenticated(self, inst: Instance) -> bool:
        return inst.authenticate(self.headers.get("X-ApiKeys"), self.headers.get("X-Cookie"))

    def _send(self, resp: Response, req: Request | None = None) -> None:
        with self.server.instance.lock:
            self.server.instance.stats.by_status[resp.status] += 1
            if req is not None:
                self.server.instance.stats.log_request(req.method, req.path, resp.status)
        try:
            self.send_response(resp.status)
            self.send_header("Content-Type", resp.content_type)
            self.send_header("Content-Length", str(len(resp.body)))
            self.send_header("Cache-Control", "no-cache")
            for key, value in resp.headers.items():
                self.send_header(key, value)
            self.end_headers()
            if resp.body and self.command != "HEAD":
                self.wfile.write(resp.body)
        except (ConnectionError, ssl.SSLError, OSError):
            self.close_connection = True


class Cluster:
    """The N instances of one emulator process and their listening sockets."""

    def __init__(self, instances: list[Instance], host: str, tls: ssl.SSLContext | None, verbose: bool = False):
        self.instances = instances
        self.host = host
        self.tls = tls
        self.verbose = verbose
        self.servers: dict[int, EmulatorHTTPServer] = {}
        self._lock = threading.Lock()
        self._timers: dict[int, threading.Timer] = {}

    def start(self) -> None:
        for inst in self.instances:
            if not inst.faults.down:
                self.up(inst)
            elif inst.faults.down_seconds > 0:
                self.down(inst, inst.faults.down_seconds)

    def up(self, inst: Instance) -> None:
        with self._lock:
            inst.faults.down = False
            if inst.index in self.servers:
                return
            server = EmulatorHTTPServer((self.host, inst.port), Handler, inst, self, self.tls)
            self.servers[inst.index] = server
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True,
                             name=f"emulator-{inst.index}").start()

    def down(self, inst: Instance, seconds: float = 0.0) -> None:
        """Close the listening socket (connection refused); come back after ``seconds`` if > 0."""
        with self._lock:
            inst.faults.down = True
            server = self.servers.pop(inst.index, None)
        if server is not None:
            _close(server)
        if seconds > 0:
            timer = threading.Timer(seconds, self.up, args=(inst,))
            timer.daemon = True
            self._timers[inst.index] = timer
            timer.start()

    def control(self, current: Instance, req: Request, index: str | None, action: str) -> Response:
        inst = current if index is None else self._instance(int(index))
        if inst is None:
            return error_response(404, f"no instance {index}; this emulator has {len(self.instances)}")
        try:
            if action == "state" and req.method == "GET":
                return json_response(200, inst.snapshot())
            if action == "faults" and req.method == "POST":
                data = req.json()
                down = data.pop("down", None)
                seconds = float(data.get("down_seconds", inst.faults.down_seconds) or 0)
                inst.faults.update(data)
                if down is True or (isinstance(down, str) and down.lower() in {"1", "true", "yes"}):
                    self.down(inst, seconds)
                elif down is not None:
                    self.up(inst)
                return json_response(200, {"instance": inst.index, "faults": inst.faults.as_dict()})
            if action == "reset" and req.method == "POST":
                inst.reset(faults=req.query.get("keep_faults") not in {"1", "true", "yes"})
                if inst.index not in self.servers:
                    self.up(inst)
                return json_response(200, inst.snapshot())
        except (ValueError, HttpError) as exc:
            return error_response(400, getattr(exc, "message", str(exc)))
        return error_response(405, f"{req.method} is not allowed on /_emulator/{action}")

    def _instance(self, index: int) -> Instance | None:
        return self.instances[index] if 0 <= index < len(self.instances) else None

    def shutdown(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        for server in list(self.servers.values()):
            _close(server)
        self.servers.clear()


def _close(server: EmulatorHTTPServer) -> None:
    server.shutdown()
    try:
        server.socket.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    server.server_close()
