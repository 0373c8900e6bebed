#!/usr/bin/env bash
# `make test`: the dashboard's browser test drives Debian's chromium through Playwright (the system browser;
# never `playwright install`). Install it with apt when run as root; otherwise say how (the test is skipped).
set -euo pipefail
if [ -x /usr/bin/chromium ] || command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo ">> chromium not found: installing Debian's chromium package with apt-get (for the dashboard's browser test)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }
  command -v chromium >/dev/null 2>&1 && exit 0
fi
echo "!! chromium is not installed: tests/test_dashboard_browser.py will be skipped." >&2
echo "   Debian/Ubuntu: sudo apt-get install chromium   (then run make test again)" >&2
exit 0
