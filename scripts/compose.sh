#!/usr/bin/env bash
# Run Docker Compose whichever way this machine has it: the `docker compose` plugin (v2)
# when it works, else the standalone `docker-compose` (v1, Debian's package).
# COMPOSE_CMD overrides, e.g. COMPOSE_CMD=docker-compose scripts/compose.sh ps
#   scripts/compose.sh -p schedgen -f examples/docker-compose.yml up -d
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
compose_init
exec "${COMPOSE[@]}" "$@"
