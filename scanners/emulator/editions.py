"""The Nessus editions the emulator can pretend to be, as ``GET /server/properties`` reports them.

Since Nessus 7, Professional and Expert (and the free Essentials) have no scan API: ``scan_api`` is
false and scan creation and launch answer 412 "API is not available"; Tenable points API users to
Nessus Manager, Tenable Vulnerability Management or Security Center. Exports and reads still work.
Nessus Manager allows the API, so it is the emulator's default: scanpool drives Manager-class scanners.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Edition:
    key: str  # the knob value: --edition KEY
    nessus_type: str  # /server/properties "nessus_type"
    license_type: str  # license.type
    name: str  # license.name
    scan_api: bool  # license.features.scan_api
    ips: int | None  # licensed addresses (None: unlimited for the emulator)


EDITIONS: dict[str, Edition] = {
    e.key: e
    for e in (
        Edition("manager", "Nessus Manager", "manager", "Nessus Manager", True, None),
        Edition("professional", "Nessus", "pro", "Nessus Professional", False, None),
        Edition("expert", "Nessus", "expert", "Nessus Expert", False, None),
        Edition("essentials", "Nessus", "home", "Nessus Essentials", False, 16),
    )
}
DEFAULT_EDITION = "manager"
