# predeploy-backup: GitHub Docker container action and CLI.
#
#   docker build -t predeploy-backup:dev .
#
# The result is FROM scratch: one fully static binary plus a CA bundle.
# It runs as root (container actions must, to write the workspace) and relies
# on no WORKDIR (the runner sets its own).
#
# On a machine without a registry, scripts/images/rust-builder.sh makes a
# local stand-in for rust:1.95-slim-bookworm first.

FROM rust:1.95-slim-bookworm AS build

ARG TARGET=x86_64-unknown-linux-gnu
# glibc + crt-static gives a static-pie binary with no extra toolchain.
ENV RUSTFLAGS="-C target-feature=+crt-static" \
    CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# The CA bundle for the final image. The official slim image keeps
# ca-certificates installed; install it only if a base image lacks it.
# hadolint ignore=DL3008
RUN if [ ! -s /etc/ssl/certs/ca-certificates.crt ]; then \
        apt-get update \
        && apt-get install -y --no-install-recommends ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && test -s /etc/ssl/certs/ca-certificates.crt

WORKDIR /src

# 1. Dependencies only, against a dummy crate: this layer is reused for as
#    long as Cargo.toml and Cargo.lock do not change.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src tests/integration \
    && echo 'fn main() {}' > src/main.rs \
    && : > src/lib.rs \
    && : > tests/integration/main.rs \
    && cargo build --release --locked --target "$TARGET" \
    && rm -rf src tests \
    && rm -rf target/"$TARGET"/release/.fingerprint/predeploy-backup-* \
              target/"$TARGET"/release/deps/predeploy_backup-* \
              target/"$TARGET"/release/deps/libpredeploy_backup-* \
              target/"$TARGET"/release/predeploy-backup*

# 2. The real sources.
COPY src ./src
RUN mkdir -p tests/integration && touch tests/integration/main.rs \
    && cargo build --release --locked --target "$TARGET" \
    && install -D -m 0755 target/"$TARGET"/release/predeploy-backup /out/predeploy-backup \
    && install -D -m 0644 /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/ca-certificates.crt \
    && install -d -m 1777 /out/tmp \
    && if readelf -lW /out/predeploy-backup | grep -q 'program interpreter'; then \
           echo "predeploy-backup is not statically linked" >&2; exit 1; \
       fi

FROM scratch
# /tmp (mode 1777) exists for temporary files; the rest is the binary and the
# CA bundle that rustls-native-certs reads.
COPY --from=build /out/ /
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
ENTRYPOINT ["/predeploy-backup"]
