"""``manage.py nessus_emulator``: serve the Nessus API emulator on loopback (see docs/emulator.md)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from scanners.emulator.editions import DEFAULT_EDITION, EDITIONS
from scanners.emulator.faults import END_STATUSES, STOP_STATUSES, Faults
from scanners.emulator.instance import EmulatorConfig, Instance
from scanners.emulator.server import Cluster
from scanners.emulator.tls import ensure_certificate, server_context


class Command(BaseCommand):
    help = "Run N emulated Nessus scanners: instance i listens on --port + i (HTTPS unless --http)."
    # It emulates a scanner and uses neither the database nor Redis (as mcp_server): the project's system checks are
    # not its business, and they cost ~0.35 s of CPU at each start.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=8834, help="Port of instance 0; instance i uses port+i.")
        parser.add_argument("--instances", type=int, default=1, help="Number of scanner instances (default 1).")
        parser.add_argument("--scan-seconds", type=float, default=60.0, help="Running time of a scan.")
        parser.add_argument("--host", default="127.0.0.1", help="Address to listen on (default loopback).")
        parser.add_argument("--http", action="store_true", help="Plain HTTP instead of HTTPS (self-signed).")
        parser.add_argument("--cert-dir", default="", help="Where the self-signed certificate lives (var/).")
        parser.add_argument("--username", default="admin")
        parser.add_argument("--password", default="admin")
        parser.add_argument("--access-key", default=EmulatorConfig.access_key)
        parser.add_argument("--secret-key", default=EmulatorConfig.secret_key)
        parser.add_argument("--verbose", action="store_true", help="Log every request.")
        faults = parser.add_argument_group("faults (all instances; change per instance with POST /_emulator/faults)")
        faults.add_argument("--latency", type=float, default=0.0, help="Seconds added to every answer.")
        faults.add_argument("--error-rate", type=float, default=0.0, help="Share (0..1) of requests answered 500.")
        faults.add_argument("--error-burst", type=int, default=0, help="The first N requests are answered 503.")
        faults.add_argument("--error-status", type=int, default=0,
                            help="Answer --error-rate/--error-burst with this status (e.g. 429, 403) instead.")
        faults.add_argument("--error-match", default="",
                            help="Regex: only requests whose 'METHOD /path' matches get --error-rate/--error-burst.")
        faults.add_argument("--retry-after", default="",
                            help="Retry-After header (seconds or an HTTP-date) of injected 429/503 answers.")
        faults.add_argument("--session-expiry", type=float, default=0.0, help="Session tokens expire after T s.")
        faults.add_argument("--unlicensed", action="store_true", help="No scan API in the licence (412).")
        faults.add_argument("--edition", choices=sorted(EDITIONS), default=DEFAULT_EDITION,
                            help="Nessus edition to report (default manager; professional, expert and essentials "
                            "have no scan API: scan writes answer 412, exports still work).")
        faults.add_argument("--pausing-seconds", type=float, default=0.0, help="'pausing' this long before 'paused'.")
        faults.add_argument("--stop-status", choices=STOP_STATUSES, default="stopping",
                            help="Status of a scan being stopped, before 'canceled'.")
        faults.add_argument("--end-status", choices=END_STATUSES, default="completed",
                            help="How launched scans end (aborted / imported to exercise clients).")
        faults.add_argument("--pending-stall", type=float, default=0.0, help="Extra seconds in 'pending' (-1: ever).")
        faults.add_argument("--hang-at-99", action="store_true", help="Scans never get past 99 %% running.")
        faults.add_argument("--export-error", action="store_true", help="Exports end in status 'error'.")
        faults.add_argument("--not-ready", action="store_true", help="Plugins compiling: status 'loading', 503.")
        faults.add_argument("--down", action="store_true", help="Start with the listening sockets closed.")
        faults.add_argument("--down-seconds", type=float, default=0.0, help="With --down: open them after S s.")
        faults.add_argument("--no-token-flow", action="store_true", help="An older scanner without /tokens.")

    def handle(self, *args, **opts) -> None:
        if opts["instances"] < 1:
            raise CommandError("--instances must be at least 1")
        if not 0 < opts["port"] <= 65535 - opts["instances"] + 1:
            raise CommandError("--port must leave room for every instance below 65536")
        if opts["scan_seconds"] < 0:
            raise CommandError("--scan-seconds must not be negative")
        if not 0 <= opts["error_rate"] <= 1:
            raise CommandError("--error-rate must be between 0 and 1")
        if opts["error_status"] and not 400 <= opts["error_status"] <= 599:
            raise CommandError("--error-status must be an HTTP error status (400..599)")
        try:  # the knobs' own checks (a regex, one header line), worded for the flags
            Faults().update({"error_match": opts["error_match"], "retry_after": opts["retry_after"]})
        except ValueError as exc:
            raise CommandError(str(exc).replace("fault knob 'error_match'", "--error-match").replace(
                "fault knob 'retry_after'", "--retry-after")) from None
        config = EmulatorConfig(
            scan_seconds=opts["scan_seconds"], username=opts["username"], password=opts["password"],
            access_key=opts["access_key"], secret_key=opts["secret_key"],
        )
        instances = [
            Instance(i, opts["port"] + i, config, self._faults(opts)) for i in range(opts["instances"])
        ]
        tls = None
        if not opts["http"]:
            cert, key = ensure_certificate(Path(opts["cert_dir"]) if opts["cert_dir"] else settings.VAR_DIR / "tls")
            tls = server_context(cert, key)
            self.stdout.write(f"TLS certificate (self-signed): {cert}")
        cluster = Cluster(instances, opts["host"], tls, verbose=opts["verbose"])
        try:
            cluster.start()
        except OSError as exc:
            cluster.shutdown()
            raise CommandError(f"cannot listen on {opts['host']}:{opts['port']}..: {exc}") from exc
        scheme = "http" if tls is None else "https"
        for inst in instances:
            self.stdout.write(f"instance {inst.index}: {scheme}://{opts['host']}:{inst.port}/")
        self.stdout.write(f"login: {config.username} / {config.password}")
        self.stdout.write(f"API keys: accessKey={config.access_key}; secretKey={config.secret_key}")
        self.stdout.write(f"scan seconds: {config.scan_seconds}; control API: /_emulator/state|faults|reset")
        self.stdout.write("ready", ending="\n")
        self.stdout.flush()

        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        stop.wait()
        cluster.shutdown()

    @staticmethod
    def _faults(opts: dict) -> Faults:
        return Faults(
            latency=opts["latency"], error_rate=opts["error_rate"], error_burst=opts["error_burst"],
            error_status=opts["error_status"], error_match=opts["error_match"], retry_after=opts["retry_after"],
            session_expiry=opts["session_expiry"], unlicensed=opts["unlicensed"], edition=opts["edition"],
            pausing_seconds=opts["pausing_seconds"], stop_status=opts["stop_status"], end_status=opts["end_status"],
            pending_stall=opts["pending_stall"], hang_at_99=opts["hang_at_99"],
            export_error=opts["export_error"], not_ready=opts["not_ready"], down=opts["down"],
            down_seconds=opts["down_seconds"],
            token_flow=not opts["no_token_flow"],
        )
