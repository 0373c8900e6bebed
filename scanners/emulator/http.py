"""Request/response values shared by the emulator's Nessus API and control API."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from email import message_from_bytes
from email.policy import HTTP
from typing import Any
from urllib.parse import parse_qsl


class HttpError(Exception):
    """Answer ``status`` with Nessus' error shape ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: Any  # http.client.HTTPMessage (case-insensitive)
    body: bytes = b""
    params: dict[str, str] = field(default_factory=dict)

    def json(self) -> dict[str, Any]:
        if not self.body.strip():
            return {}
        form = self.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded")
        if form and not self.body.lstrip().startswith(b"{"):  # curl -d '{…}' sends JSON labelled as a form
            # Nessus also takes form-encoded bodies (older clients log in with ``data={...}``)
            return dict(parse_qsl(self.body.decode("utf-8", "replace"), keep_blank_values=True))
        try:
            data = json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            raise HttpError(400, "Invalid JSON in request body") from None
        if not isinstance(data, dict):
            raise HttpError(400, "Request body must be a JSON object")
        return data

    def form_files(self) -> dict[str, tuple[str, bytes]]:
        """``{field: (filename, content)}`` of a multipart/form-data body."""
        content_type = self.headers.get("Content-Type", "")
        if not content_type.startswith("multipart/form-data"):
            raise HttpError(400, "Expected a multipart/form-data upload")
        message = message_from_bytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + self.body, policy=HTTP
        )
        files: dict[str, tuple[str, bytes]] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if name:
                files[str(name)] = (part.get_filename() or "", part.get_payload(decode=True) or b"")
        return files


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def json_response(status: int, data: Any) -> Response:
    return Response(status, json.dumps(data).encode())


def error_response(status: int, message: str) -> Response:
    return json_response(status, {"error": message})
