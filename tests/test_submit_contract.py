"""``tasks.services.submit`` exactly as DESIGN §9 states it: keyword-only, the documented defaults, pool and
scanner_instance as names, credentials as a dict with the documented keys, and one error type
(:class:`~tasks.errors.SubmissionError`, carrying ``field`` and ``message``) for every invalid input."""

from __future__ import annotations

import inspect

import pytest

from pools.models import Pool
from tasks.errors import SubmissionError
from tasks.models import ScanTask, TaskEvent
from tasks.services import submit
from tests.factories import PoolFactory, ScannerFactory

pytestmark = pytest.mark.django_db

DESIGN_SIGNATURE = {  # name → default (inspect.Parameter.empty = required)
    "pool": inspect.Parameter.empty, "name": inspect.Parameter.empty, "targets": inspect.Parameter.empty,
    "scan_type": "untrusted", "credentials": None, "scanner_instance": None, "idempotency_key": None,
    "timeout_seconds": None, "description": "", "requested_by": None,
}


def test_signature_is_keyword_only_with_the_documented_defaults():
    params = inspect.signature(submit).parameters
    for name, default in DESIGN_SIGNATURE.items():
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY, name
        assert params[name].default == default, name
    extra = set(params) - set(DESIGN_SIGNATURE)
    assert all(params[p].default is not inspect.Parameter.empty for p in extra), extra  # only optional additions
    with pytest.raises(TypeError):
        submit("dmz", "n", ["10.0.0.1"])  # the contract is keyword-only


@pytest.fixture
def pool():
    pool = PoolFactory(name="dmz", scope=["10.20.0.0/16"])
    ScannerFactory(pool=pool, name="dmz-1")
    return pool


def test_documented_call_with_names_and_every_credential_key(pool):
    creds = {"username": "root", "password": "pw", "elevate_privileges_with": "sudo", "escalation_account": "root",
             "escalation_password": "pw2"}
    task = submit(pool="dmz", name="weekly", targets=["10.20.0.1"], scan_type="authenticated_privileged",
                  credentials=creds, scanner_instance="dmz-1", idempotency_key="k-1", timeout_seconds=3600,
                  description="d", requested_by=None)
    assert isinstance(task, ScanTask)
    assert (task.pool.name, task.requested_scanner.name, task.scan_type) == ("dmz", "dmz-1",
                                                                            "authenticated_privileged")
    assert task.credentials == creds
    key = submit(pool="dmz", name="key", targets="10.20.0.2", scan_type="authenticated",
                 credentials={"username": "u", "private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n"
                                                            "-----END OPENSSH PRIVATE KEY-----\n"})
    assert key.credentials["private_key"].startswith("-----BEGIN")
    assert submit(pool="dmz", name="plain", targets="10.20.0.3").scan_type == "untrusted"
    nothing = submit(pool="dmz", name="nothing", targets="10.20.0.4", scan_type="authenticated",
                     credentials={"username": "u", "password": "p", "elevate_privileges_with": "Nothing"})
    assert nothing.credentials == {"username": "u", "password": "p"}  # Nessus' "Nothing" = no escalation


@pytest.mark.parametrize(("kwargs", "field", "words"), [
    ({"pool": None}, "pool", "is required"),
    ({"pool": 5}, "pool", "must be a pool name"),
    ({"name": None}, "name", "is required"),
    ({"name": 5}, "name", "must be a string"),
    ({"name": "a\x00b"}, "name", "control characters"),
    ({"description": "x\x00"}, "description", "control characters"),
    ({"description": 5}, "description", "must be a string"),
    ({"targets": None}, "targets", "list of strings"),
    ({"targets": 5}, "targets", "list of strings"),
    ({"targets": [5]}, "targets", "is not a string"),
    ({"targets": "  "}, "targets", "no targets given"),
    ({"targets": "10.20.0.1\x00"}, "targets", "control character U+0000"),
    ({"scan_type": None}, "scan_type", "is not a scan type"),
    ({"scan_type": "authenticated", "credentials": "root:pw"}, "credentials", "must be an object"),
    ({"scan_type": "authenticated", "credentials": {"username": 5, "password": "p"}}, "credentials.username",
     "must be a string"),
    ({"scan_type": "authenticated", "credentials": {"username": " ", "password": "p"}}, "credentials.username",
     "is required"),
    ({"scanner_instance": 5}, "scanner_instance", "must be a scanner name"),
    ({"idempotency_key": 5}, "idempotency_key", "must be a string"),
    ({"idempotency_key": "  "}, "idempotency_key", "non-empty value"),
    ({"timeout_seconds": True}, "timeout_seconds", "whole number"),
    ({"timeout_seconds": 1.5}, "timeout_seconds", "whole number"),
])
def test_every_invalid_input_is_one_error_type_naming_the_field(pool, kwargs, field, words):
    with pytest.raises(SubmissionError) as info:
        submit(**{"pool": "dmz", "name": "n", "targets": ["10.20.0.1"], **kwargs})
    err = info.value
    assert (err.field, type(err.message)) == (field, str) and words in err.message, (err.field, err.message)
    assert err.as_dict() == {"code": err.code, "field": field, "message": err.message}
    assert ScanTask.objects.count() == 0 and TaskEvent.objects.count() == 0
    assert Pool.objects.count() == 1
