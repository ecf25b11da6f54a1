#!/usr/bin/env bash
# Encryption benchmark: our `backup` with and without age encryption (encrypt-recipients), on
# the same database and volume, in one run, interleaved. Prints figures and the ratio
# encrypted / clear (target <= 1.10); never fails on a slow number.
#
#   clear      predeploy-backup backup --postgres-container C --volumes V   (read-back verify)
#   encrypted  the same with --encrypt-recipients age1…  (verified while written, see crypt.rs)
#   age CLI    the reference `age -r` over our clear files (what encrypting afterwards costs)
#
# Usage: scripts/bench-encrypt.sh
# Environment:
#   BENCH_DB_MB=200     MiB of table data (0: no database)
#   BENCH_VOL_MB=200    MiB of files in the volume (0: no volume)
#   BENCH_RUNS=3        timed runs per contender, interleaved, after one warm-up; best shown
#   BENCH_COMPRESSION   gzip (default) or zstd
#   BENCH_BIN, BENCH_KEEP, BENCH_PG_ARGS, PREDEPLOY_WORK_DIR: see scripts/bench/common.sh
set -euo pipefail

BENCH_NAME=bench-encrypt
# shellcheck source=scripts/bench/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench/common.sh"

DB_MB="${BENCH_DB_MB:-200}"
VOL_MB="${BENCH_VOL_MB:-200}"
RUNS="${BENCH_RUNS:-3}"
CODEC="${BENCH_COMPRESSION:-gzip}"
[[ "$DB_MB" =~ ^[0-9]+$ && "$VOL_MB" =~ ^[0-9]+$ && "$RUNS" =~ ^[1-9][0-9]*$ ]] ||
    die "BENCH_DB_MB, BENCH_VOL_MB must be whole numbers and BENCH_RUNS at least 1"
((DB_MB + VOL_MB > 0)) || die "nothing to back up: set BENCH_DB_MB and/or BENCH_VOL_MB"

command -v age-keygen >/dev/null 2>&1 || ensure_apt_packages age
bench_init
WS="$BENCH_TMP/ws"
mkdir -p "$WS"
age-keygen -o "$BENCH_TMP/key.txt" 2>/dev/null
PUBLIC="$(age-keygen -y "$BENCH_TMP/key.txt")"

TARGET=()
if ((DB_MB > 0)); then
    C="$(new_name pg)"
    log "database: starting $C"
    start_postgres "$C"
    log "database: generating ~$DB_MB MiB of table data"
    fill_database "$C" "$DB_MB"
    log "database: $(database_summary "$C")"
    TARGET+=(--postgres-container "$C" --postgres-user "$PG_USER" --postgres-db "$PG_DB")
fi
if ((VOL_MB > 0)); then
    V="$(new_name vol)"
    new_volume "$V"
    log "volume: writing ~$VOL_MB MiB of PDF-like files into $V"
    fill_volume "$V" "$VOL_MB"
    read -r files bytes < <(volume_stats "$V")
    log "volume: $files files, $(fmt_size "$bytes")"
    TARGET+=(--volumes "$V")
fi

# ours_backup ARGS...: one timed `backup` into a fresh backup root; sets OUT and DIR.
ours_backup() {
    local root="$WS/backups"
    rm -rf "$root"
    mkdir -p "$root"
    OUT="$BENCH_TMP/ours.out"
    if ! measure_stamped "$BENCH_TMP/ours.log" "$OUT" "$BIN" backup --backup-root "$root" \
        --workspace "$WS" --upload-artifact false --commit bench --branch bench \
        --compression "$CODEC" "${TARGET[@]}" "$@"; then
        cut -d' ' -f2- "$BENCH_TMP/ours.log" >&2
        die "our backup failed"
    fi
    DIR="$(output_value "$OUT" backup-dir)"
    [[ "$DIR" == /* ]] || DIR="$WS/$DIR"
    [[ -f "$DIR/manifest.yml" ]] || die "no manifest in $DIR"
}

# total_size DIR: bytes of the backup files (manifest excluded).
total_size() {
    find "$1" -type f ! -name manifest.yml -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }'
}

log "warm-up (caches), then $RUNS timed runs per contender"
ours_backup
for ((i = 1; i <= RUNS; i++)); do
    ours_backup
    record clear "ours: backup, clear ($CODEC)" "$(total_size "$DIR")"
    log "run $i: clear ${M_WALL}s"
    # The reference CLI over the clear files: the cost of encrypting in a second pass.
    mapfile -t plain < <(find "$DIR" -type f ! -name manifest.yml)
    # shellcheck disable=SC2016 # expanded by the inner shell
    measure bash -c 'for f in "${@:2}"; do age -r "$1" -o "$f.age" "$f" || exit 1; done' \
        _ "$PUBLIC" "${plain[@]}" || die "age -r failed"
    record agecli "age -r over those files (a second pass)" "$(find "$DIR" -name '*.age' -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')"
    log "run $i: age -r ${M_WALL}s"

    ours_backup --encrypt-recipients "$PUBLIC"
    record sealed "ours: backup, encrypted ($CODEC + age)" "$(total_size "$DIR")"
    log "run $i: encrypted ${M_WALL}s"
    grep -q 'encrypted: age' "$DIR/manifest.yml" || die "the encrypted backup's manifest does not say so"
done
rm -rf "$WS/backups"

printf '\n== predeploy-backup encryption benchmark (%s, %s cores, load %s)\n' \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '   binary %s; database %s MiB, volume %s MiB, %s\n' "$("$BIN" --version)" "$DB_MB" "$VOL_MB" "$CODEC"
print_table "Backup with and without age (best of $RUNS)" clear clear sealed agecli
echo
ratio_line "time: encrypted / clear backup" "$(ratio "${B_WALL[sealed]}" "${B_WALL[clear]}")" "<=" 1.10
ratio_line "size: encrypted / clear" "$(ratio "${B_SIZE[sealed]}" "${B_SIZE[clear]}")" "<=" 1.01
echo
echo "  best = fastest of the runs; peak RSS = highest of the runs; CPU = user+sys of the local"
echo "  processes in the fastest run (container-side pg_dump/tar are not local)."
