"""The OpenAPI schema: ``manage.py spectacular --validate`` passes, Swagger UI is served from our own static
files (no CDN), and a bounded schemathesis run against the live app finds no 5xx, no response that breaks the
schema, no status the operation does not document and no undocumented Content-Type."""

from __future__ import annotations

import io
import re
import time

import pytest
import requests
import yaml
from django.core.management import call_command
from hypothesis import HealthCheck, Phase, given, settings
from rest_framework.test import APIClient

from tests.api_support import OPERATE, token_client, user_with
from tests.factories import ScanTaskFactory

pytestmark = pytest.mark.django_db


def test_spectacular_validate_passes_without_warnings(tmp_path):
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out), stdout=io.StringIO())
    schema = yaml.safe_load(out.read_text())
    paths = set(schema["paths"])
    for path in ("/api/v1/", "/api/v1/scans/", "/api/v1/scans/{id}/", "/api/v1/scans/{id}/cancel/",
                 "/api/v1/scans/{id}/retry/", "/api/v1/scans/{id}/results/", "/api/v1/scans/{id}/hosts/",
                 "/api/v1/scans/{id}/results.nessus", "/api/v1/validate/", "/api/v1/pools/", "/api/v1/pools/{name}/",
                 "/api/v1/scanners/", "/api/v1/scanners/{name}/"):
        assert path in paths, path
    examples = str(schema["components"]["schemas"]["ScanCreateRequest"]) + str(schema["paths"]["/api/v1/scans/"])
    assert "authenticated scan with sudo" in examples and "<the SSH password>" in examples  # placeholders only
    assert "password" not in str(schema["components"]["schemas"]["ScanDetail"]["properties"])


def test_swagger_ui_is_served_locally(fresh_throttle_counts):
    client = APIClient()
    # Not logged in: a browser goes to the login page, and comes back; the schema answers a JSON error.
    response = client.get("/api/docs/")
    assert response.status_code == 302 and response["Location"] == "/api-auth/login/?next=/api/docs/"
    for path in ("/api/schema/", "/api/schema/?format=json"):
        response = client.get(path)
        assert response.status_code == 401 and response["Content-Type"] == "application/json", path
        assert response.json()["error"]["code"] == "not_authenticated"
        assert "Authorization: Token <key>" in response.json()["error"]["message"]  # as every API endpoint says
    response = client.get("/api/docs/", HTTP_AUTHORIZATION="Token nope")  # a program: JSON, not a redirect
    assert response.status_code == 401 and response.json()["error"]["code"] == "authentication_failed"
    client.force_login(user_with(OPERATE))
    page = client.get("/api/docs/").content.decode()
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert any("swagger-ui" in s for s in sources)
    assert all(s.startswith("/") for s in sources), sources  # nothing from a CDN
    assert client.get("/api/schema/").status_code == 200


SCHEMATHESIS_SECONDS = 45


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_schemathesis_finds_no_server_error_and_no_schema_violation(live_server, pool, fresh_throttle_counts,
                                                                    redis_conn):
    import schemathesis
    from schemathesis import checks

    user = user_with(OPERATE)
    _, key = token_client(user)
    task = ScanTaskFactory(pool=pool)
    headers = {"Authorization": f"Token {key}"}
    raw = requests.get(f"{live_server.url}/api/schema/?format=json", headers=headers, timeout=30).json()
    schema = schemathesis.openapi.from_dict(raw)
    # Excluded, with reasons: the raw export and CSV/NDJSON answers are files (no JSON schema to check), and the
    # validate upload parses whole files (covered by tests/test_api_results.py).
    excluded = {("GET", "/api/v1/scans/{id}/results.nessus"), ("POST", "/api/v1/validate/")}
    operations = [op.ok() for op in schema.get_all_operations()]
    operations = [op for op in operations if (op.method.upper(), op.path) not in excluded]
    assert len(operations) >= 10
    budget = time.monotonic() + SCHEMATHESIS_SECONDS
    seen = 0
    for operation in operations:
        if time.monotonic() > budget:
            break

        @given(case=operation.as_strategy())
        @settings(max_examples=15, deadline=None, phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        def run(case):
            nonlocal seen
            if "id" in case.path_parameters or "pk" in case.path_parameters:
                # half of the cases hit an existing task, so the happy paths are checked too
                name = "id" if "id" in case.path_parameters else "pk"
                if seen % 2 == 0:
                    case.path_parameters[name] = str(task.pk)
            seen += 1
            case.call_and_validate(base_url=live_server.url, headers=headers,
                                   checks=[checks.not_a_server_error, checks.response_schema_conformance,
                                           checks.status_code_conformance, checks.content_type_conformance])

        run()
    assert seen > 50
