"""A Nessus API client written only from Tenable's documentation (raw ``requests``; no scanpool
adapter, no pyTenable), for the emulator contract tests."""

from __future__ import annotations

import time

import requests

TERMINAL = {"completed", "canceled", "aborted", "imported"}


class DocClient:
    """A minimal Nessus client written from Tenable's API documentation."""

    def __init__(self, url: str, verify: bool | str = False) -> None:
        self.url = url.rstrip("/")
        self.http = requests.Session()
        self.http.verify = verify
        self.verify = verify

    def call(self, method: str, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", 10)
        kwargs.setdefault("verify", self.verify)
        return self.http.request(method, self.url + path, **kwargs)

    def login(self, username: str, password: str) -> requests.Response:
        resp = self.call("POST", "/session", json={"username": username, "password": password})
        if resp.status_code == 200:
            self.http.headers["X-Cookie"] = f"token={resp.json()['token']}"
        return resp

    def use_keys(self, access_key: str, secret_key: str) -> None:
        self.http.headers["X-ApiKeys"] = f"accessKey={access_key}; secretKey={secret_key}"

    def template_uuid(self, name: str) -> str:
        templates = self.call("GET", "/editor/scan/templates").json()["templates"]
        return next(t["uuid"] for t in templates if t["name"] == name)

    def create(self, name: str, targets: str, template: str = "basic", credentials: dict | None = None,
               **settings_: object) -> dict:
        body: dict = {"uuid": self.template_uuid(template),
                      "settings": {"name": name, "text_targets": targets, "enabled": False, **settings_}}
        if credentials is not None:
            body["credentials"] = credentials
        resp = self.call("POST", "/scans", json=body)
        assert resp.status_code == 200, resp.text
        return resp.json()["scan"]

    def details(self, scan_id: int) -> dict:
        resp = self.call("GET", f"/scans/{scan_id}")
        assert resp.status_code == 200, resp.text
        return resp.json()

    def wait(self, scan_id: int, until: set[str] = TERMINAL, timeout: float = 20.0) -> list[str]:
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.details(scan_id)["info"]["status"]
            if not seen or seen[-1] != status:
                seen.append(status)
            if status in until:
                return seen
            time.sleep(0.1)
        raise AssertionError(f"scan {scan_id} never reached {until}: {seen}")

    def export_tokens(self, scan_id: int) -> bytes:
        resp = self.call("POST", f"/scans/{scan_id}/export", json={"format": "nessus"})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert set(body) >= {"file", "token"}
        for _ in range(100):
            status = self.call("GET", f"/tokens/{body['token']}/status")
            assert status.status_code == 200
            if status.json()["status"] == "ready":
                break
            time.sleep(0.05)
        download = self.call("GET", f"/tokens/{body['token']}/download")
        assert download.status_code == 200
        return download.content


def ssh(password: str, username: str = "root") -> dict:
    """The documented ``credentials.add.Host.SSH`` entry for a password login."""
    return {"add": {"Host": {"SSH": [{"auth_method": "password", "username": username, "password": password,
                                      "elevate_privileges_with": "Nothing", "custom_password_prompt": ""}]}}}


def error_of(resp: requests.Response) -> str:
    body = resp.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"], body
    return body["error"]


def logged_in(emulator) -> DocClient:
    """A client on the emulator's first instance, logged in with its session login."""
    c = DocClient(emulator.urls[0])
    assert c.login(emulator.username, emulator.password).status_code == 200
    return c


# ---------------------------------------------------------------------------------------------- session

