#!/usr/bin/env bash
# Local images for the act end-to-end harness, and the helpers that make them.
#
#   scripts/act-images.sh [--force]   build predeploy-test/runner:latest (the act job
#                                     image) and rust:1.95-slim-bookworm (the Dockerfile's
#                                     FROM), each unless it exists
#   . scripts/act-images.sh           define the act_images::* functions only
#
# Helpers shared by scripts/images/rust-builder.sh and scripts/images/runner.sh.
#
# This machine has a Docker engine but no container registry: no image can be
# pulled. These helpers make local images from scratch with debootstrap, using
# the Debian mirror that apt on this host is already configured for (read at
# run time, never written down here).

# Print the first mirror URI that apt uses for Debian bookworm "main"
# (env DEBIAN_MIRROR overrides it). Understands deb822 *.sources files and
# one-line *.list files.
act_images::debian_mirror() {
    local f uri
    if [ -n "${DEBIAN_MIRROR:-}" ]; then printf '%s\n' "$DEBIAN_MIRROR"; return 0; fi
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        # deb822: paragraphs separated by blank lines.
        uri=$(awk '
            BEGIN { RS = ""; FS = "\n" }
            {
                uris = ""; suites = ""; comps = ""; types = ""
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^URIs:/)       { uris = $i;   sub(/^URIs:[ \t]*/, "", uris) }
                    if ($i ~ /^Suites:/)     { suites = $i; sub(/^Suites:[ \t]*/, "", suites) }
                    if ($i ~ /^Components:/) { comps = $i;  sub(/^Components:[ \t]*/, "", comps) }
                    if ($i ~ /^Types:/)      { types = $i }
                }
                if (types ~ /deb([ \t]|$)/ && (" " suites " ") ~ / bookworm / && (" " comps " ") ~ / main /) {
                    split(uris, u, /[ \t]+/); print u[1]; exit
                }
            }' "$f")
        if [ -n "$uri" ]; then printf '%s\n' "$uri"; return 0; fi
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        # deb [options] URI suite components...
        uri=$(sed -E 's/\[[^]]*\]//' "$f" | awk '$1 == "deb" && $3 == "bookworm" { for (i = 4; i <= NF; i++) if ($i == "main") { print $2; exit } }')
        if [ -n "$uri" ]; then printf '%s\n' "$uri"; return 0; fi
    done
    echo "act-images: no Debian bookworm mirror found in /etc/apt/sources.list{,.d}" >&2
    return 1
}

# Install debootstrap with apt when it is missing.
act_images::need_debootstrap() {
    command -v debootstrap >/dev/null 2>&1 && return 0
    echo "act-images: installing debootstrap" >&2
    if [ "$(id -u)" -ne 0 ]; then
        echo "act-images: debootstrap is missing and we are not root; install it first" >&2
        return 1
    fi
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}

# act_images::as_root "$0" "$@": re-run the calling script as root through sudo when
# we are not root (debootstrap, chroot and reading the rootfs need it), keeping
# the variables the scripts read.
act_images::as_root() {
    [ "$(id -u)" -eq 0 ] && return 0
    command -v sudo >/dev/null 2>&1 || {
        echo "act-images: need root (or sudo) to build images" >&2
        exit 1
    }
    exec sudo --preserve-env=PATH,DEBIAN_MIRROR,TMPDIR,HOST_CA_BUNDLE,RUST_TOOLCHAIN_DIR,RUST_BUILDER_IMAGE,RUNNER_IMAGE,DOCKER_HOST "$@"
}

act_images::image_exists() {
    docker image inspect "$1" >/dev/null 2>&1
}

# act_images::bootstrap DIR PKG,PKG,...
# debootstrap --variant=minbase bookworm into DIR with extra packages, then
# trim caches so the image stays small.
act_images::bootstrap() {
    local dir=$1 include=$2 mirror keyring=()
    act_images::need_debootstrap
    mirror=$(act_images::debian_mirror)
    if [ -f /usr/share/keyrings/debian-archive-keyring.gpg ]; then
        keyring=(--keyring=/usr/share/keyrings/debian-archive-keyring.gpg)
    fi
    echo "act-images: debootstrap bookworm (minbase, +$include) into $dir" >&2
    debootstrap --variant=minbase --include="$include" "${keyring[@]}" \
        bookworm "$dir" "$mirror" >"$dir.debootstrap.log" 2>&1 || {
        tail -n 30 "$dir.debootstrap.log" >&2
        return 1
    }
    rm -f "$dir.debootstrap.log"
    # What debian:bookworm-slim leaves out.
    rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* \
        "$dir"/var/log/*.log "$dir"/var/cache/debconf/*-old \
        "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/info/*
    # A container's /etc/hosts, /etc/resolv.conf and /etc/hostname are
    # provided by Docker at run time.
    : >"$dir/etc/hostname"
}

# act_images::trust_host_cas DIR
# Make the rootfs trust every CA that this host trusts and Debian's bundle
# does not (e.g. a TLS-inspecting proxy's CA in front of the package
# registries): such certificates go to /usr/local/share/ca-certificates and
# update-ca-certificates merges them into /etc/ssl/certs/ca-certificates.crt.
# Without this, `cargo` in a container fails with "self-signed certificate in
# certificate chain" on a machine whose traffic is inspected.
act_images::trust_host_cas() {
    local dir=$1 host_bundle=${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
    [ -s "$host_bundle" ] || return 0
    [ -s "$dir/etc/ssl/certs/ca-certificates.crt" ] || return 0
    mkdir -p "$dir/usr/local/share/ca-certificates"
    local n
    n=$(python3 - "$host_bundle" "$dir/etc/ssl/certs/ca-certificates.crt" "$dir/usr/local/share/ca-certificates" <<'PY'
import re, sys
pat = re.compile(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.S)
def certs(p):
    with open(p, encoding="ascii", errors="replace") as f:
        return pat.findall(f.read())
norm = lambda c: "".join(c.split())
have = {norm(c) for c in certs(sys.argv[2])}
n = 0
for c in certs(sys.argv[1]):
    if norm(c) not in have:
        n += 1
        with open(f"{sys.argv[3]}/host-extra-{n}.crt", "w") as f:
            f.write(c + "\n")
print(n)
PY
)
    [ "$n" -gt 0 ] || return 0
    echo "act-images: adding $n CA certificate(s) that the host trusts" >&2
    chroot "$dir" update-ca-certificates >/dev/null 2>&1 ||
        cat "$dir"/usr/local/share/ca-certificates/host-extra-*.crt >>"$dir/etc/ssl/certs/ca-certificates.crt"
}

# act_images::import DIR TAG [--change INSTR]...
act_images::import() {
    local dir=$1 tag=$2
    shift 2
    tar --numeric-owner --xattrs -C "$dir" -c . | docker import "$@" - "$tag" >/dev/null
    echo "act-images: built $tag ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))" >&2
}

# A scratch directory that is removed on exit (the caller installs the trap).
act_images::workdir() {
    local base=${TMPDIR:-/var/tmp}
    mktemp -d "$base/act-images.XXXXXX"
}

# Executed rather than sourced: build both images.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    _here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
    "$_here/images/runner.sh" "$@"
    "$_here/images/rust-builder.sh" "$@"
fi
