# shellcheck shell=bash
# Helpers shared by scripts/images/rust-builder.sh and scripts/images/runner.sh.
#
# This machine has a Docker engine but no container registry: no image can be
# pulled. These helpers make local images from scratch with debootstrap, using
# the Debian mirror that apt on this host is already configured for (read at
# run time, never written down here).
#
# Source this file; it defines functions only.

# Print the first mirror URI that apt uses for Debian bookworm "main".
# Understands deb822 *.sources files and one-line *.list files.
act_images::debian_mirror() {
    local f uri
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
