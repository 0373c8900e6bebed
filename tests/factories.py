"""factory-boy factories for the domain models (shared by every test module)."""

from __future__ import annotations

import factory
from django.contrib.auth import get_user_model

from pools.models import Pool
from scanners.models import Scanner
from tasks.models import ScanTask, ScanType, TaskStatus


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda o: f"{o.username}@example.com")
    password = factory.django.Password("pw-for-tests-only")  # hashed at build time, no second save


class SuperUserFactory(UserFactory):
    is_staff = True
    is_superuser = True


class PoolFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Pool

    name = factory.Sequence(lambda n: f"pool-{n}")
    description = "test pool"
    scope = factory.LazyFunction(lambda: ["192.0.2.0/24"])  # explicit: an empty scope allows nothing
    poll_interval_seconds = 1
    scan_timeout_seconds = 3600


class ScannerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Scanner

    pool = factory.SubFactory(PoolFactory)
    name = factory.Sequence(lambda n: f"scanner-{n}")
    url = factory.Sequence(lambda n: f"http://127.0.0.1:{20000 + n}")
    allow_plain_http = True  # the emulator in tests speaks plain HTTP on loopback
    username = "admin"
    password = "admin"
    verify_tls = False
    max_concurrent_scans = 2
    connection_confirmed = True  # as configured by an operator; tests of the four-eyes rule unset it


class ScanTaskFactory(factory.django.DjangoModelFactory):
    """A row only: tests of the submission path use tasks.services.submit instead."""

    class Meta:
        model = ScanTask

    pool = factory.SubFactory(PoolFactory)
    name = factory.Sequence(lambda n: f"scan {n}")
    targets = factory.LazyFunction(lambda: ["192.0.2.10"])
    scan_type = ScanType.UNTRUSTED
    status = TaskStatus.QUEUED
    timeout_seconds = 3600
