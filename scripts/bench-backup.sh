#!/usr/bin/env bash
# Backup benchmark: our `backup` against the seed's shell pipelines, on the same data, in one
# run, side by side. Prints figures and ratios; never fails on a slow number.
#
#   Database (BENCH_DB_MB of table data: text, numbers, timestamps, jsonb, 3 tables, indexes):
#     ours  predeploy-backup backup --postgres-container C ... (dump + read-back verification);
#           its dump phase alone is the manifest's `timings: database dump`
#     seed  docker exec C pg_dump -U u -d db | gzip > file      (GNU gzip -6)
#     raw   docker exec C pg_dump -U u -d db > /dev/null        (the floor)
#     zstd  ours with --compression zstd (level 3), beside `pg_dump | zstd -3` (the zstd CLI)
#   Volume (BENCH_VOL_MB of PDF-like random files, 100 KiB-5 MiB, nested folders):
#     ours  predeploy-backup backup --volumes V ...
#     seed  docker run --rm -v V:/data:ro -v DIR:/backup IMAGE tar czf /backup/x.tar.gz -C /data .
#           (IMAGE: predeploy-test/postgres:15, i.e. GNU tar 1.34 + GNU gzip 1.12 -6)
#     raw   the same `docker run ... tar cf - -C /data . > /dev/null`, no gzip (reference)
#     zstd  ours with --compression zstd, beside `docker run ... tar cf - | zstd -3 > file`
#
# Usage: scripts/bench-backup.sh
# Environment:
#   BENCH_DB_MB=300       MiB of table data (0: skip the database; 2048 for the 2 GiB run whose
#                         peak RSS must stay within 64 MiB like the 300 MiB one)
#   BENCH_VOL_MB=300      MiB of files in the volume (0: skip the volume)
#   BENCH_RUNS=3          timed runs per contender, interleaved, after one warm-up; best shown
#   BENCH_BASE_BIN        a second predeploy-backup binary (e.g. the previous release) timed in
#                         the same run as "before" (gzip and zstd): before/after side by side
#   BENCH_ONLY            run only the contenders whose key matches this extended regex
#                         (keys: db_ours db_seed db_ours_zstd db_seed_zstd db_raw vol_ours
#                         vol_seed vol_ours_zstd vol_seed_zstd vol_raw, and db_base
#                         db_base_zstd vol_base vol_base_zstd with BENCH_BASE_BIN); ratios with a
#                         missing side print "-"
#   BENCH_SEED_IMAGE      image of the seed's volume archive (default predeploy-test/postgres:15;
#                         predeploy-test/busybox:latest for busybox tar + gzip)
#   BENCH_BIN, BENCH_KEEP, BENCH_PG_ARGS, PREDEPLOY_WORK_DIR: see scripts/bench/common.sh
# Peak RSS and CPU are of the local processes: for ours the whole tool; for the seed's
# pipelines the docker CLI and gzip (pg_dump and tar run inside containers, not counted).
set -euo pipefail

BENCH_NAME=bench-backup
# shellcheck source=scripts/bench/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench/common.sh"

DB_MB="${BENCH_DB_MB:-300}"
VOL_MB="${BENCH_VOL_MB:-300}"
RUNS="${BENCH_RUNS:-3}"
SEED_IMAGE="${BENCH_SEED_IMAGE:-$PG_IMAGE}"
[[ "$DB_MB" =~ ^[0-9]+$ && "$VOL_MB" =~ ^[0-9]+$ && "$RUNS" =~ ^[1-9][0-9]*$ ]] ||
    die "BENCH_DB_MB, BENCH_VOL_MB must be whole numbers and BENCH_RUNS at least 1"

command -v zstd >/dev/null 2>&1 || ensure_apt_packages zstd
bench_init
WS="$BENCH_TMP/ws"
mkdir -p "$WS" "$BENCH_TMP/seed"

# ours_backup ARGS...: one timed `backup` into a fresh backup root; sets OUT (stdout file)
# and DIR (the backup folder).
ours_backup() {
    local root="$WS/backups"
    rm -rf "$root"
    mkdir -p "$root"
    OUT="$BENCH_TMP/ours.out"
    if ! measure_stamped "$BENCH_TMP/ours.log" "$OUT" "${OURS_BIN:-$BIN}" backup --backup-root "$root" \
        --workspace "$WS" --upload-artifact false --commit bench --branch bench "$@"; then
        cut -d' ' -f2- "$BENCH_TMP/ours.log" >&2
        die "our backup failed"
    fi
    DIR="$(output_value "$OUT" backup-dir)"
    [[ "$DIR" == /* ]] || DIR="$WS/$DIR"
    [[ -f "$DIR/manifest.yml" ]] || die "no manifest in $DIR"
}

declare -A CONTENT=()
ONLY="${BENCH_ONLY:-.}"
# want KEY: whether the contender KEY runs (BENCH_ONLY; the *_base* ones need BENCH_BASE_BIN).
want() {
    [[ "$1" != *_base* || -n "$BASE_BIN" ]] && [[ "$1" =~ $ONLY ]]
}
BASE_BIN=""
if [[ -n "${BENCH_BASE_BIN:-}" ]]; then
    [[ -x "$BENCH_BASE_BIN" ]] || die "BENCH_BASE_BIN: no binary at $BENCH_BASE_BIN"
    BASE_BIN="$BENCH_TMP/predeploy-backup-before"
    cp "$BENCH_BASE_BIN" "$BASE_BIN"
    log "before: $("$BASE_BIN" --version) ($(sha256sum "$BASE_BIN" | cut -c1-12))"
fi
# db_ours_run KEY LABEL BINARY ARGS...: one timed database backup by BINARY, recorded as KEY
# (total), KEY_dump and KEY_verify (the manifest's phases).
db_ours_run() {
    local key="$1" label="$2"
    OURS_BIN="$3"
    shift 3
    ours_backup --postgres-container "$C" --postgres-user "$PG_USER" --postgres-db "$PG_DB" "$@"
    record "$key" "$label: backup (total, incl. verify)" "$(output_value "$OUT" db-backup-size)"
    record_time "${key}_dump" "$label: dump phase (manifest)" \
        "$(manifest_timing "$DIR/manifest.yml" "database dump")"
    record_time "${key}_verify" "$label: verification phase (manifest)" \
        "$(manifest_timing "$DIR/manifest.yml" "verification")"
    log "database run $i: $label ${M_WALL}s"
}
# vol_ours_run KEY LABEL BINARY ARGS...: the same for the volume.
vol_ours_run() {
    local key="$1" label="$2"
    OURS_BIN="$3"
    shift 3
    ours_backup --volumes "$V" "$@"
    record "$key" "$label: backup (total, incl. verify)" "$(output_value "$OUT" volume-backup-sizes)"
    record_time "${key}_archive" "$label: archive phase (manifest)" \
        "$(manifest_timing "$DIR/manifest.yml" "volume archives")"
    record_time "${key}_verify" "$label: verification phase (manifest)" \
        "$(manifest_timing "$DIR/manifest.yml" "verification")"
    log "volume run $i: $label ${M_WALL}s"
}

if ((DB_MB > 0)); then
    C="$(new_name pg)"
    log "database: starting $C"
    start_postgres "$C"
    log "database: generating ~$DB_MB MiB of table data"
    start=$SECONDS
    fill_database "$C" "$DB_MB"
    CONTENT[db]="$(database_summary "$C")"
    log "database: ${CONTENT[db]} ($((SECONDS - start)) s)"

    # Warm-up: one full dump (caches), which also gives the plain SQL size.
    SQL_BYTES="$(docker exec "$C" pg_dump -U "$PG_USER" -d "$PG_DB" | wc -c)"
    log "database: plain SQL dump is $(fmt_size "$SQL_BYTES"); $RUNS timed runs per contender"

    SEED_FILE="$BENCH_TMP/seed/db.sql.gz"
    for ((i = 1; i <= RUNS; i++)); do
        if want db_ours; then
            db_ours_run db_ours "ours gzip" "$BIN"
        fi
        if want db_base; then
            db_ours_run db_base "before gzip" "$BASE_BIN"
        fi

        if want db_seed; then
            rm -f "$SEED_FILE"
            # shellcheck disable=SC2016 # expanded by the inner shell
            measure bash -c 'set -o pipefail; docker exec "$1" pg_dump -U "$2" -d "$3" | gzip >"$4"' \
                _ "$C" "$PG_USER" "$PG_DB" "$SEED_FILE" || die "the seed's pg_dump | gzip failed"
            record db_seed "seed: docker exec pg_dump | gzip (-6)" "$(stat -c %s "$SEED_FILE")"
            log "database run $i: seed ${M_WALL}s"
        fi

        if want db_ours_zstd; then
            db_ours_run db_ours_zstd "ours zstd" "$BIN" --compression zstd
        fi
        if want db_base_zstd; then
            db_ours_run db_base_zstd "before zstd" "$BASE_BIN" --compression zstd
        fi

        if want db_seed_zstd; then
            rm -f "$SEED_FILE.zst"
            # shellcheck disable=SC2016 # expanded by the inner shell
            measure bash -c 'set -o pipefail; docker exec "$1" pg_dump -U "$2" -d "$3" | zstd -q -3 >"$4"' \
                _ "$C" "$PG_USER" "$PG_DB" "$SEED_FILE.zst" || die "pg_dump | zstd -3 failed"
            record db_seed_zstd "baseline: docker exec pg_dump | zstd -3" "$(stat -c %s "$SEED_FILE.zst")"
            log "database run $i: pg_dump | zstd -3 ${M_WALL}s"
        fi

        if want db_raw; then
            # shellcheck disable=SC2016
            measure bash -c 'docker exec "$1" pg_dump -U "$2" -d "$3" >/dev/null' \
                _ "$C" "$PG_USER" "$PG_DB" || die "pg_dump failed"
            record db_raw "raw: docker exec pg_dump > /dev/null" "$SQL_BYTES" "plain SQL"
            log "database run $i: raw ${M_WALL}s"
        fi
    done
    rm -rf "$WS/backups" "$SEED_FILE" "$SEED_FILE.zst"
fi

if ((VOL_MB > 0)); then
    V="$(new_name vol)"
    new_volume "$V"
    log "volume: writing ~$VOL_MB MiB of PDF-like files into $V"
    start=$SECONDS
    fill_volume "$V" "$VOL_MB"
    read -r files bytes < <(volume_stats "$V")
    CONTENT[vol]="$files files, $(fmt_size "$bytes")"
    log "volume: ${CONTENT[vol]} ($((SECONDS - start)) s)"

    # Warm-up: read the whole volume once (page cache), which also gives the plain tar size.
    TAR_BYTES="$(docker run --rm --label "$BENCH_LABEL=$BENCH_RUN_ID" -v "$V:/data:ro" \
        --entrypoint tar "$SEED_IMAGE" cf - -C /data . | wc -c)"
    log "volume: plain tar is $(fmt_size "$TAR_BYTES"); $RUNS timed runs per contender"

    SEED_DIR="$BENCH_TMP/seed/vol"
    for ((i = 1; i <= RUNS; i++)); do
        if want vol_ours; then
            vol_ours_run vol_ours "ours gzip" "$BIN"
        fi
        if want vol_base; then
            vol_ours_run vol_base "before gzip" "$BASE_BIN"
        fi

        if want vol_seed; then
            rm -rf "$SEED_DIR"
            mkdir -p "$SEED_DIR"
            measure docker run --rm --label "$BENCH_LABEL=$BENCH_RUN_ID" -v "$V:/data:ro" \
                -v "$SEED_DIR:/backup" --entrypoint sh "$SEED_IMAGE" \
                -c 'tar czf /backup/x.tar.gz -C /data .' || die "the seed's tar czf failed"
            record vol_seed "seed: docker run tar czf (-6)" "$(stat -c %s "$SEED_DIR/x.tar.gz")" \
                "image $SEED_IMAGE"
            log "volume run $i: seed ${M_WALL}s"
        fi

        if want vol_ours_zstd; then
            vol_ours_run vol_ours_zstd "ours zstd" "$BIN" --compression zstd
        fi
        if want vol_base_zstd; then
            vol_ours_run vol_base_zstd "before zstd" "$BASE_BIN" --compression zstd
        fi

        if want vol_seed_zstd; then
            mkdir -p "$SEED_DIR"
            # shellcheck disable=SC2016
            measure bash -c 'set -o pipefail; docker run --rm --label "$1" -v "$2:/data:ro" --entrypoint tar "$3" cf - -C /data . | zstd -q -3 >"$4"' \
                _ "$BENCH_LABEL=$BENCH_RUN_ID" "$V" "$SEED_IMAGE" "$SEED_DIR/x.tar.zst" || die "tar | zstd -3 failed"
            record vol_seed_zstd "baseline: docker run tar cf - | zstd -3" "$(stat -c %s "$SEED_DIR/x.tar.zst")"
            log "volume run $i: tar | zstd -3 ${M_WALL}s"
        fi

        if want vol_raw; then
            # shellcheck disable=SC2016
            measure bash -c 'docker run --rm --label "$1" -v "$2:/data:ro" --entrypoint tar "$3" cf - -C /data . >/dev/null' \
                _ "$BENCH_LABEL=$BENCH_RUN_ID" "$V" "$SEED_IMAGE" || die "tar failed"
            record vol_raw "raw: docker run tar cf - > /dev/null" "$TAR_BYTES" "plain tar, reference"
            log "volume run $i: raw ${M_WALL}s"
        fi
    done
    rm -rf "$WS/backups" "$SEED_DIR"
fi

# The report.
printf '\n== predeploy-backup backup benchmark (%s, %s cores, load %s)\n' \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '   binary %s\n' "$("$BIN" --version)"
if ((DB_MB > 0)); then
    print_table "Database: ${CONTENT[db]}; plain SQL $(fmt_size "$SQL_BYTES") (best of $RUNS)" db_seed \
        db_ours db_ours_dump db_ours_verify db_ours_zstd db_ours_zstd_dump db_ours_zstd_verify \
        db_base db_base_dump db_base_verify db_base_zstd db_base_zstd_dump db_base_zstd_verify \
        db_seed_zstd db_seed db_raw
    echo
    ratio_line "gzip time: seed / ours (total)" "$(ratio "${B_WALL[db_seed]:-}" "${B_WALL[db_ours]:-}")" ">=" 1.25
    ratio_line "gzip time: ours (total) / raw pg_dump" "$(ratio "${B_WALL[db_ours]:-}" "${B_WALL[db_raw]:-}")" "<=" 1.5
    ratio_line "gzip time: before / ours (total)" "$(ratio "${B_WALL[db_base]:-}" "${B_WALL[db_ours]:-}")" ">=" 1.0
    ratio_line "zstd time: before / ours (total)" "$(ratio "${B_WALL[db_base_zstd]:-}" "${B_WALL[db_ours_zstd]:-}")" ">=" 1.0
    ratio_line "size: ours / gzip -6" "$(ratio "${B_SIZE[db_ours]:-}" "${B_SIZE[db_seed]:-}")" "<=" 1.05
    ratio_line "zstd time: seed / ours zstd (total)" "$(ratio "${B_WALL[db_seed]:-}" "${B_WALL[db_ours_zstd]:-}")" ">=" 1.8
    ratio_line "zstd peak RSS: ours zstd (MiB)" "$(ratio "${B_RSS[db_ours_zstd]:-}" 1024)" "<=" 64
    ratio_line "gzip peak RSS: ours (MiB)" "$(ratio "${B_RSS[db_ours]:-}" 1024)" "<=" 64
    ratio_line "zstd time: ours zstd (total) / raw pg_dump" "$(ratio "${B_WALL[db_ours_zstd]:-}" "${B_WALL[db_raw]:-}")" "<=" 1.25
    ratio_line "zstd time: ours zstd (total) / pg_dump | zstd -3" "$(ratio "${B_WALL[db_ours_zstd]:-}" "${B_WALL[db_seed_zstd]:-}")" "<=" 1.0
    ratio_line "zstd size: ours zstd / zstd -3" "$(ratio "${B_SIZE[db_ours_zstd]:-}" "${B_SIZE[db_seed_zstd]:-}")" "<=" 1.05
    ratio_line "zstd size: ours zstd / gzip -6" "$(ratio "${B_SIZE[db_ours_zstd]:-}" "${B_SIZE[db_seed]:-}")" "<=" 1.0
fi
if ((VOL_MB > 0)); then
    print_table "Volume: ${CONTENT[vol]}; plain tar $(fmt_size "$TAR_BYTES") (best of $RUNS)" vol_seed \
        vol_ours vol_ours_archive vol_ours_verify vol_ours_zstd vol_ours_zstd_archive \
        vol_ours_zstd_verify vol_base vol_base_archive vol_base_verify vol_base_zstd \
        vol_base_zstd_archive vol_base_zstd_verify vol_seed_zstd vol_seed vol_raw
    echo
    ratio_line "time: seed / ours (total)" "$(ratio "${B_WALL[vol_seed]:-}" "${B_WALL[vol_ours]:-}")" ">=" 8
    ratio_line "time: seed / ours (archive phase)" "$(ratio "${B_WALL[vol_seed]:-}" "${B_WALL[vol_ours_archive]:-}")" ">=" 8
    ratio_line "time: ours (total) / raw tar" "$(ratio "${B_WALL[vol_ours]:-}" "${B_WALL[vol_raw]:-}")" "<=" 1.5
    ratio_line "gzip time: before / ours (total)" "$(ratio "${B_WALL[vol_base]:-}" "${B_WALL[vol_ours]:-}")" ">=" 1.0
    ratio_line "zstd time: before / ours (total)" "$(ratio "${B_WALL[vol_base_zstd]:-}" "${B_WALL[vol_ours_zstd]:-}")" ">=" 1.0
    ratio_line "size: ours / seed" "$(ratio "${B_SIZE[vol_ours]:-}" "${B_SIZE[vol_seed]:-}")" "<=" 1.01
    ratio_line "zstd time: seed / ours zstd (total)" "$(ratio "${B_WALL[vol_seed]:-}" "${B_WALL[vol_ours_zstd]:-}")" ">=" 10
    ratio_line "zstd time: ours zstd / tar | zstd -3" "$(ratio "${B_WALL[vol_ours_zstd]:-}" "${B_WALL[vol_seed_zstd]:-}")" "<=" 1.0
    ratio_line "zstd size: ours zstd / seed" "$(ratio "${B_SIZE[vol_ours_zstd]:-}" "${B_SIZE[vol_seed]:-}")" "<=" 1.01
    ratio_line "peak RSS: ours gzip (MiB)" "$(ratio "${B_RSS[vol_ours]:-}" 1024)" "<=" 64
    ratio_line "peak RSS: ours zstd (MiB)" "$(ratio "${B_RSS[vol_ours_zstd]:-}" 1024)" "<=" 64
fi
echo
echo "  best = fastest of the runs; peak RSS = highest of the runs; CPU = user+sys of the local"
echo "  processes in the fastest run (container-side pg_dump/tar/gzip are not local)."
