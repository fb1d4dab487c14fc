#!/usr/bin/env bash
# Installs Debian packages once on a fresh machine: ensure-debian.sh COMMAND PACKAGE...
# (nothing to do when COMMAND is already on the PATH). For the tools `make test` needs
# besides Python: node and npm for the AsyncAPI CLI, docker-compose to check the compose file.
set -euo pipefail
command="$1"; shift
command -v "$command" >/dev/null && exit 0
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }
command -v "$command" >/dev/null || { echo "$command could not be installed (apt: $*)" >&2; exit 1; }
