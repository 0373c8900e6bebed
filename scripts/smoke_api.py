"""The smoke test's client of the REST API (docs/api.md): a token made through the image's entrypoint, scans
submitted with ``POST /api/v1/scans/`` and followed through their ``links.status`` until completed.

A mixin of ``smoke_driver.Smoke``, which provides ``entrypoint``, ``web`` and ``status_paths``.
"""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

from smoke_stack import check, wait_for


class ApiClient:
    def get_token(self) -> None:
        created = self.entrypoint("createsuperuser", "--noinput", "--username", "smoke", "--email",
                                  "smoke@example.invalid", DJANGO_SUPERUSER_PASSWORD=secrets.token_urlsafe(16))
        check("createsuperuser through the entrypoint", created.returncode == 0, created.stderr[-1000:])
        token = self.entrypoint("create_api_token", "smoke", "--name", "smoke")
        if not check("create_api_token through the entrypoint prints a key", token.returncode == 0
                     and bool(token.stdout.strip()), token.stderr[-1000:]):
            raise SystemExit(1)
        self.token = token.stdout.strip().splitlines()[-1].strip()
        probe = self.web("GET", "/api/v1/scans/")
        check("the API accepts the token (GET /api/v1/scans/ answers 200)", probe.status_code == 200,
              f"{probe.status_code} {probe.text[:300]}")
        anonymous = self.web("GET", "/api/v1/scans/", headers={"Authorization": "Token sp_not-a-key"})
        check("the API refuses a wrong token", anonymous.status_code in (401, 403), str(anonymous.status_code))

    def submit(self, pool: str, name: str) -> str:
        """POST /api/v1/scans/ (docs/api.md): 202 with task_id, status queued and links.status; returns the id."""
        response = self.web("POST", "/api/v1/scans/",
                            json={"scanner_pool": pool, "name": name, "targets": ["192.0.2.10", "192.0.2.11"],
                                  "scan_type": "untrusted"})
        if response.status_code != 202:
            raise RuntimeError(f"POST /api/v1/scans/ answered {response.status_code}: {response.text[:500]}")
        body = response.json()
        task_id, status_url = body.get("task_id"), (body.get("links") or {}).get("status", "")
        if not task_id or body.get("status") != "queued" or body.get("scanner_pool") != pool:
            raise RuntimeError(f"POST /api/v1/scans/ answered an unexpected body: {str(body)[:500]}")
        path = urlsplit(status_url).path
        if path != f"/api/v1/scans/{task_id}/" or response.headers.get("Location") != status_url:
            raise RuntimeError(f"links.status {status_url!r} / Location {response.headers.get('Location')!r} "
                               f"is not the task's status URL")
        self.status_paths[str(task_id)] = path
        return str(task_id)

    def submit_all(self, pool: str, count: int) -> list[str] | None:
        try:
            ids = [self.submit(pool, f"smoke-{pool}-{i}") for i in range(count)]
        except Exception as exc:
            check(f"submit {count} scans to {pool} through POST /api/v1/scans/", False, str(exc))
            return None
        check(f"{count} scans submitted to {pool} through POST /api/v1/scans/ (202, task_id, links.status)",
              len(set(ids)) == count)
        return ids

    def api_status(self, ids: list[str]) -> dict[str, dict]:
        """Each task's status as the API shows it (GET links.status, events left out)."""
        return {i: self.web("GET", self.status_paths[i], params={"events": "0"}).json() for i in ids}

    def tasks(self, ids: list[str]):
        from tasks.models import ScanTask

        return list(ScanTask.objects.filter(pk__in=ids).select_related("assigned_scanner"))

    def scans_complete(self, pool: str, count: int, timeout: float) -> list[str] | None:
        ids = self.submit_all(pool, count)
        if ids is None:
            return None
        return self.wait_completed(pool, ids, timeout)

    def wait_completed(self, pool: str, ids: list[str], timeout: float) -> list[str] | None:
        seen: dict[str, dict] = {}

        def completed() -> bool:
            seen.update(self.api_status(ids))
            return all(seen[i].get("status") == "completed" for i in ids)

        done = wait_for(f"{pool} scans", completed, timeout, 2)
        states = ", ".join(f"{b.get('name')}={b.get('status')} {(b.get('error_message') or '')[:80]}"
                           for b in seen.values())
        check(f"{len(ids)} scans of {pool} completed, followed through GET /api/v1/scans/{{id}}/", done, states)
        tasks = self.tasks(ids)
        # Scan ids are per scanner: (scanner, id) pairs are distinct when no scan was launched twice for two tasks.
        launched = [(t.assigned_scanner_id, t.scanner_scan_id) for t in tasks]
        check(f"each {pool} scan launched once, on its own scanner-side scan",
              len(set(launched)) == len(ids) and all(scan_id for _, scan_id in launched), str(launched))
        return ids
