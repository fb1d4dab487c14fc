#!/usr/bin/env bash
# The console's end-to-end test drives Debian's Chromium through Playwright (no browser
# download: Playwright uses this executable). Installs it once on a fresh machine.
set -euo pipefail
command -v chromium >/dev/null && exit 0
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
command -v chromium >/dev/null || { echo "chromium could not be installed" >&2; exit 1; }
