"""`make smoke`: workers on several machines (network namespaces built by scripts/smoke.sh), driven by
scripts/smoke_driver.py once the single-host checks have passed."""

from __future__ import annotations

import os
import subprocess
from typing import TYPE_CHECKING

from smoke_stack import ENTRYPOINT, ROOT, can_connect, check, emulator_scans, wait_for

if TYPE_CHECKING:
    from smoke_driver import Smoke


def several_machines(smoke: Smoke) -> None:
    """Workers on several machines: isolation, both zones' scans, and worker 1's link cut mid-scan."""
    ns_w1, ns_w2 = os.environ["SMOKE_NS_W1"], os.environ["SMOKE_NS_W2"]
    sa, sb = os.environ["SMOKE_SA"], os.environ["SMOKE_SB"]
    core1, core2 = os.environ["SMOKE_CORE1"], os.environ["SMOKE_CORE2"]
    port_a, port_b = smoke.zone_ports
    # Isolation: each worker namespace reaches Redis, PostgreSQL and its own zone's scanner, nothing else.
    check("worker namespace 1 reaches Redis and PostgreSQL over its own link",
          can_connect(core1, smoke.redis_port, ns_w1) and can_connect(core1, smoke.pg_port, ns_w1))
    check("worker namespace 2 reaches Redis and PostgreSQL over its own link",
          can_connect(core2, smoke.redis_port, ns_w2) and can_connect(core2, smoke.pg_port, ns_w2))
    check("worker namespace 1 reaches scanner zone a, not zone b",
          can_connect(sa, port_a, ns_w1) and not can_connect(sb, port_b, ns_w1))
    check("worker namespace 2 reaches scanner zone b, not zone a",
          can_connect(sb, port_b, ns_w2) and not can_connect(sa, port_a, ns_w2))
    check("worker namespace 1 does not reach the loopback services of the host",
          not can_connect("127.0.0.1", smoke.redis_port, ns_w1))
    check("scanner zone a does not reach Redis", not can_connect(core1, smoke.redis_port, os.environ["SMOKE_NS_SA"]))

    def zone_env(core: str, pools: str) -> dict[str, str]:
        return smoke.env(WORKER_POOLS=pools, REDIS_URL=f"redis://{core}:{smoke.redis_port}/0",
                         DATABASE_URL=f"postgres://scanpool@{core}:{smoke.pg_port}/scanpool")

    # The workers' own view: scanner health checked from inside each namespace, over its links.
    for ns, core, own, other in ((ns_w1, core1, "smoke_a", "smoke_b"), (ns_w2, core2, "smoke_b", "smoke_a")):
        for pool, expect in ((own, True), (other, False)):
            result = subprocess.run(["ip", "netns", "exec", ns, "sh", str(ENTRYPOINT), "check_scanners",
                                     "--pool", pool], cwd=ROOT, env=zone_env(core, own), capture_output=True,
                                    text=True, timeout=120, check=False)
            ready = "1/1 scanners ready" in result.stdout
            check(f"from {ns}: pool {pool}'s scanner is {'ready' if expect else 'unreachable'}", ready == expect,
                  result.stdout[-1000:] + result.stderr[-1000:])

    smoke.stack.start("worker-a", ["sh", str(ENTRYPOINT), "worker"], zone_env(core1, "smoke_a"),
                      netns=ns_w1, supervise=True)
    smoke.stack.start("worker-b", ["sh", str(ENTRYPOINT), "worker"], zone_env(core2, "smoke_b"),
                      netns=ns_w2, supervise=True)
    registered = wait_for("zone workers", lambda: smoke.registered_workers("smoke_a") >= 1
                          and smoke.registered_workers("smoke_b") >= 1, 60, 1)
    check("a worker in each namespace registered over its link", registered,
          smoke.stack.log("worker-a")[-2000:] + smoke.stack.log("worker-b")[-2000:])
    smoke.check_ready()  # every pool served now: smoke_local on the host, smoke_a / smoke_b in the namespaces
    smoke.stack.stop("worker-local-1")
    smoke.stack.stop("worker-local-2")

    ids_a = smoke.submit_all("smoke_a", 2)
    ids_b = smoke.submit_all("smoke_b", 2)
    if ids_a is None or ids_b is None:
        return
    running = wait_for("zone a scans running",
                       lambda: all(b.get("status") == "running" for b in smoke.api_status(ids_a).values()), 90, 1)
    check("zone a scans are running on the scanner before the cut (the API says so)", running,
          ", ".join(f"{t.name}={t.status}" for t in smoke.tasks(ids_a)))
    def zone_a_scans() -> dict[str, dict]:
        return emulator_scans(os.environ["SMOKE_NS_SA"], sa, port_a)

    link = os.environ["SMOKE_CUT_LINK"]
    subprocess.run(["ip", "link", "set", link, "down"], check=True)
    print(f">> cut worker 1's link ({link}) mid-scan", flush=True)
    try:
        check("with its link cut, worker namespace 1 reaches neither Redis nor PostgreSQL",
              not can_connect(core1, smoke.redis_port, ns_w1) and not can_connect(core1, smoke.pg_port, ns_w1))
        # The cut lasts until the scanner has finished the scans (the emulator, asked inside its zone): their
        # end happens while nobody can record it, and is only picked up once the link is back.
        finished = wait_for("zone a scans finished on the scanner",
                            lambda: set(ids_a) <= {task for task, scan in zone_a_scans().items()
                                                   if scan["status"] == "completed"}, 180, 2)
        check("the scanner finished the zone a scans while their worker was cut off", finished,
              str(zone_a_scans()))
        during = smoke.tasks(ids_a)
        check("no zone a task failed or vanished while its worker was cut off",
              len(during) == 2 and all(t.status in {"queued", "running"} for t in during),
              ", ".join(f"{t.name}={t.status} {t.error_message[:80]}" for t in during))
    finally:
        subprocess.run(["ip", "link", "set", link, "up"], check=True)
    print(">> link restored", flush=True)
    smoke.wait_completed("smoke_a", ids_a, 240)
    launches = {task: scan["launches"] for task, scan in zone_a_scans().items()}
    check("the zone a scanner holds one scan per task, each launched once (the cut caused no relaunch)",
          launches == dict.fromkeys(ids_a, 1), str(launches))
    smoke.wait_completed("smoke_b", ids_b, 240)
    zones = {t.name: t.assigned_scanner.name if t.assigned_scanner else None for t in smoke.tasks(ids_a + ids_b)}
    check("each scan ran on its own zone's scanner",
          all(scanner and scanner.startswith(name.split("-")[1]) for name, scanner in zones.items()), str(zones))
    restarts = smoke.stack.restarts.get("worker-a", 0)
    print(f">> worker 1 was restarted {restarts} time(s) by the supervisor while its link was down", flush=True)
