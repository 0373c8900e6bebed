"""A Nessus REST API emulator for tests, demos and benchmarks (``manage.py nessus_emulator``).

Modules: ``server`` (HTTP, routing, control API, up/down), ``api`` (Nessus endpoints), ``instance``
(state and statistics of one scanner), ``scans`` (scan life over time), ``scenario`` (authentication
scenario from credentials), ``report``/``plugins``/``auth_plugins`` (the ``.nessus`` export),
``faults`` (fault knobs), ``tls`` (self-signed certificate). See docs/emulator.md.
"""
