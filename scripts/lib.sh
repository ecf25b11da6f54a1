# shellcheck shell=bash
# Shared helpers for the predeploy-backup helper scripts. Source it, don't run it:
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Functions:
#   log MSG...                 one line on stderr, prefixed with the script name
#   die MSG...                 log and exit 1
#   repo_root                  absolute path of the repository
#   work_dir                   $PREDEPLOY_WORK_DIR or <repo>/.work (git-ignored), created
#   ensure_apt_packages PKG..  install missing Debian packages (apt-get update once)
#   debian_mirror [SUITE]      the Debian mirror URL apt uses for SUITE (default bookworm)
#   compose_init               set the array COMPOSE to `docker compose` or `docker-compose`
#   compose_container P S      id of the running container of compose project P, service S
#   wait_for_postgres C U D [T]  wait until container C accepts `psql -U U -d D` (T seconds)

# Guard against double sourcing.
if [[ -n "${_PREDEPLOY_LIB_SOURCED:-}" ]]; then
    return 0
fi
_PREDEPLOY_LIB_SOURCED=1

_lib_name="$(basename "${0:-lib.sh}")"

log() {
    printf '%s: %s\n' "$_lib_name" "$*" >&2
}

die() {
    log "error: $*"
    exit 1
}

repo_root() {
    (cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
}

work_dir() {
    local dir="${PREDEPLOY_WORK_DIR:-$(repo_root)/.work}"
    mkdir -p "$dir"
    (cd "$dir" && pwd -P)
}

# Run a command as root: directly when we are root, through sudo otherwise.
as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

_pkg_installed() {
    [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" == "installed" ]]
}

# ensure_apt_packages PKG... : install the packages that are missing. Output goes to
# $APT_LOG when set (else /dev/null); the log is shown on failure.
ensure_apt_packages() {
    local missing=() pkg
    for pkg in "$@"; do
        _pkg_installed "$pkg" || missing+=("$pkg")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get to install them"
    local logf="${APT_LOG:-/dev/null}"
    log "installing Debian packages: ${missing[*]}"
    if ! {
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update &&
            as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
    } >>"$logf" 2>&1; then
        [[ "$logf" != /dev/null ]] && tail -n 20 "$logf" >&2
        die "apt-get install ${missing[*]} failed${APT_LOG:+ (log: $APT_LOG)}"
    fi
}

# debian_mirror [SUITE]: print the mirror URI that apt is configured with for SUITE
# (default bookworm): deb822 *.sources files first, then one-line *.list files.
# $DEBIAN_MIRROR overrides.
debian_mirror() {
    local suite="${1:-bookworm}"
    if [[ -n "${DEBIAN_MIRROR:-}" ]]; then
        printf '%s\n' "$DEBIAN_MIRROR"
        return 0
    fi
    local f uri=""
    shopt -s nullglob
    local sources=(/etc/apt/sources.list.d/*.sources)
    local lists=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list)
    shopt -u nullglob
    for f in "${sources[@]}"; do
        # deb822: paragraphs separated by blank lines; want Types: deb, Suites containing
        # exactly SUITE, and not Enabled: no.
        uri="$(awk -v suite="$suite" '
            function flush() {
                if (found) return
                if (types ~ /(^| )deb( |$)/ && enabled != "no" && uris != "") {
                    n = split(suites, s, /[ \t]+/)
                    for (i = 1; i <= n; i++) if (s[i] == suite) { split(uris, u, /[ \t]+/); print u[1]; found = 1; exit }
                }
                types = ""; suites = ""; uris = ""; enabled = ""
            }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            {
                line = $0; key = tolower(line); sub(/:.*/, "", key)
                val = line; sub(/^[^:]*:[ \t]*/, "", val); sub(/[ \t]+$/, "", val)
                if (key == "types") types = val
                else if (key == "suites") suites = val
                else if (key == "uris") uris = val
                else if (key == "enabled") enabled = tolower(val)
            }
            END { flush() }' "$f")"
        if [[ -n "$uri" ]]; then
            printf '%s\n' "${uri%/}"
            return 0
        fi
    done
    for f in "${lists[@]}"; do
        [[ -f "$f" ]] || continue
        # deb [options] URI SUITE COMPONENT...
        uri="$(awk -v suite="$suite" '
            $1 == "deb" {
                i = 2
                if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                if ($(i + 1) == suite) { print $i; exit }
            }' "$f")"
        if [[ -n "$uri" ]]; then
            printf '%s\n' "${uri%/}"
            return 0
        fi
    done
    return 1
}

# compose_init: COMPOSE=(docker compose) when the plugin works, else (docker-compose).
# $COMPOSE_CMD overrides (e.g. COMPOSE_CMD=docker-compose).
# shellcheck disable=SC2034 # COMPOSE is for the caller
compose_init() {
    if [[ -n "${COMPOSE_CMD:-}" ]]; then
        # shellcheck disable=SC2206 # deliberate word splitting of an override
        COMPOSE=($COMPOSE_CMD)
    elif docker compose version >/dev/null 2>&1; then
        COMPOSE=(docker compose)
    elif command -v docker-compose >/dev/null 2>&1; then
        COMPOSE=(docker-compose)
    else
        die "neither 'docker compose' nor 'docker-compose' is available (apt-get install docker-compose)"
    fi
}

# compose_container PROJECT SERVICE: id of the (first) running container of that service,
# found by the labels every compose version sets (container names differ: v1 uses
# project_service_1, v2 project-service-1).
compose_container() {
    local id
    id="$(docker ps -q \
        --filter "label=com.docker.compose.project=$1" \
        --filter "label=com.docker.compose.service=$2" | head -n 1)"
    [[ -n "$id" ]] || return 1
    printf '%s\n' "$id"
}

# wait_for_postgres CONTAINER USER DB [TIMEOUT_SECONDS=60]: wait until a real query over
# the default unix socket succeeds inside CONTAINER. Fails early when the container stops.
wait_for_postgres() {
    local c="$1" user="$2" db="$3" timeout="${4:-60}"
    local deadline=$((SECONDS + timeout)) state
    while :; do
        state="$(docker inspect -f '{{.State.Status}}' "$c" 2>/dev/null || echo missing)"
        if [[ "$state" != running ]]; then
            docker logs --tail 20 "$c" >&2 2>&1 || true
            die "container $c is $state while waiting for PostgreSQL"
        fi
        if docker exec "$c" pg_isready -q -U "$user" -d "$db" >/dev/null 2>&1 &&
            docker exec "$c" psql -X -q -U "$user" -d "$db" -tAc 'SELECT 1' >/dev/null 2>&1; then
            return 0
        fi
        if ((SECONDS >= deadline)); then
            docker logs --tail 20 "$c" >&2 2>&1 || true
            die "PostgreSQL in $c not ready after ${timeout}s"
        fi
        sleep 0.5
    done
}
