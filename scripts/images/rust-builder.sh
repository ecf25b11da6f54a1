#!/usr/bin/env bash
# Build a LOCAL image tagged `rust:1.95-slim-bookworm` that stands in for the
# official one, so that `docker build .` works on a machine with no container
# registry (Docker's classic builder uses a local FROM image without pulling).
#
#   scripts/images/rust-builder.sh           # build unless the image exists
#   scripts/images/rust-builder.sh --force   # rebuild
#
# Contents, mimicking the official rust:*-slim-bookworm:
#   - debootstrap --variant=minbase bookworm + gcc libc6-dev ca-certificates pkg-config
#   - plus any CA certificate the host trusts beyond Debian's (see
#     act_images::trust_host_cas), so cargo can reach crates.io from
#     `docker build` behind a TLS-inspecting proxy
#   - the host's Rust toolchain (must be 1.95.x, x86_64-unknown-linux-gnu) under
#     /usr/local/rustup/toolchains/<name> (RUSTUP_HOME=/usr/local/rustup), its
#     bin/ on PATH after CARGO_HOME=/usr/local/cargo/bin (empty, for `cargo
#     install`). No rustup binary: it could not download anything here anyway.
#     (rustc finds librustc_driver through RUNPATH $ORIGIN/../lib, resolved via
#     /proc/self/exe: so it runs in a container, not in a bare chroot.)
set -euo pipefail

TAG=${RUST_BUILDER_IMAGE:-rust:1.95-slim-bookworm}
WANT_VERSION=1.95
TRIPLE=x86_64-unknown-linux-gnu

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/act-images.sh
. "$here/../act-images.sh"

force=0
for a in "$@"; do
    case $a in
    --force) force=1 ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "usage: $0 [--force]" >&2; exit 2 ;;
    esac
done

if [ $force -eq 0 ] && act_images::image_exists "$TAG"; then
    echo "rust-builder: $TAG exists (use --force to rebuild)" >&2
    exit 0
fi

# Locate the host toolchain (env RUST_TOOLCHAIN_DIR overrides), then become root.
if [ -z "${RUST_TOOLCHAIN_DIR:-}" ]; then
    rustc_path=$(rustup which rustc 2>/dev/null || command -v rustc)
    RUST_TOOLCHAIN_DIR=$(dirname "$(dirname "$(readlink -f "$rustc_path")")")
    export RUST_TOOLCHAIN_DIR
fi
act_images::as_root "$0" "$@"
toolchain=$RUST_TOOLCHAIN_DIR
version=$("$toolchain/bin/rustc" -V | awk '{print $2}')
case $version in
"$WANT_VERSION" | "$WANT_VERSION".*) ;;
*) echo "rust-builder: host rustc is $version, need $WANT_VERSION.x" >&2; exit 1 ;;
esac
[ -d "$toolchain/lib/rustlib/$TRIPLE/lib" ] || {
    echo "rust-builder: $toolchain has no rust-std for $TRIPLE" >&2
    exit 1
}
tc_name="$version-$TRIPLE"

work=$(act_images::workdir)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
mkdir -p "$root"

act_images::bootstrap "$root" gcc,libc6-dev,ca-certificates,pkg-config
act_images::trust_host_cas "$root"

# Copy what building needs: cargo, rustc, rustdoc (doctests), clippy and
# rustfmt, their shared libraries and the x86_64 std. Docs (share/) are 800 MB
# and are left out.
dest=$root/usr/local/rustup/toolchains/$tc_name
mkdir -p "$dest/bin" "$dest/lib" "$root/usr/local/cargo/bin"
for b in cargo rustc rustdoc cargo-clippy clippy-driver cargo-fmt rustfmt; do
    [ -x "$toolchain/bin/$b" ] && cp -a "$toolchain/bin/$b" "$dest/bin/"
done
cp -a "$toolchain"/lib/*.so* "$dest/lib/"
mkdir -p "$dest/lib/rustlib"
cp -a "$toolchain/lib/rustlib/$TRIPLE" "$dest/lib/rustlib/"
for f in "$toolchain"/lib/rustlib/*; do
    [ -f "$f" ] && cp -a "$f" "$dest/lib/rustlib/"
done
[ -d "$toolchain/lib/rustlib/etc" ] && cp -a "$toolchain/lib/rustlib/etc" "$dest/lib/rustlib/"
[ -d "$toolchain/libexec" ] && cp -a "$toolchain/libexec" "$dest/"
printf '[overrides]\n\n[settings]\ndefault_toolchain = "%s"\nversion = "12"\n' "$tc_name" >"$root/usr/local/rustup/settings.toml"
chmod -R a+rX "$root/usr/local/rustup" "$root/usr/local/cargo"

act_images::import "$root" "$TAG" \
    --change 'ENV RUSTUP_HOME=/usr/local/rustup' \
    --change 'ENV CARGO_HOME=/usr/local/cargo' \
    --change "ENV PATH=/usr/local/cargo/bin:/usr/local/rustup/toolchains/$tc_name/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --change "ENV RUST_VERSION=$version" \
    --change 'CMD ["bash"]'

# Check it works (in a container: see the note on $ORIGIN above).
if ! docker run --rm --network none "$TAG" sh -c 'rustc -V && cargo -V && cc --version | head -n1 && test -s /etc/ssl/certs/ca-certificates.crt' >&2; then
    docker image rm "$TAG" >/dev/null 2>&1 || true
    echo "rust-builder: the new image does not work; removed it" >&2
    exit 1
fi
