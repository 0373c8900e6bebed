#!/usr/bin/env python
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "scanpool_site.settings")
    from scanpool_site.preflight import load_settings_or_exit

    load_settings_or_exit()  # a configuration error: one line and exit status 1, not a traceback
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
