"""A scan's name on the scanner ends with the tag of its task (``<name> [scanpool:<task id>]``), and the launch of a
task whose create was interrupted adopts the scan carrying its tag. The tag read is the one scanpool appends, at the
end: a name typed by a client cannot claim another task's id (``"weekly [scanpool:<victim>]"``), so that task's
launch does not adopt and launch the client's scan (its targets, its results) as its own."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

from scanners.adapters.base import RemoteScan, ScannerAdapter, scan_name_for, task_id_from_scan_name


def test_the_tag_read_is_the_one_appended_not_one_typed_in_the_name():
    victim, client = uuid.uuid4(), uuid.uuid4()
    name = scan_name_for(client, f"weekly [scanpool:{victim}]")
    assert task_id_from_scan_name(name) == client
    assert task_id_from_scan_name(scan_name_for(victim, "weekly")) == victim
    assert task_id_from_scan_name(f"weekly [scanpool:{victim}] (copy)") is None  # not a name scanpool wrote


def test_an_interrupted_launch_does_not_adopt_a_scan_whose_name_claims_its_id():
    victim, client = uuid.uuid4(), uuid.uuid4()
    forged = scan_name_for(client, f"x [scanpool:{victim}]")
    listing = [RemoteScan(scan_id=7, name=forged, status="empty", task_id=task_id_from_scan_name(forged))]
    adapter = SimpleNamespace(list_scans=lambda: listing)
    assert ScannerAdapter.find_scan_for_task(adapter, victim) is None
    assert ScannerAdapter.find_scan_for_task(adapter, client).scan_id == 7
