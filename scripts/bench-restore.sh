#!/usr/bin/env bash
# Restore benchmark: our `rollback` against the seed's manual restore commands, on backups made
# by our tool, in one run, side by side. Prints figures and ratios; never fails on a slow number.
#
#   Database (BENCH_DB_MB of table data; a database-only backup made by our tool):
#     ours  predeploy-backup rollback --manifest M ...: checks (SHA-256, dump read-back), a
#           safety backup of the current state (by design, no way to skip it), then drop,
#           create and load. "restore phase" = from its `== Restoring database` log line to
#           its exit; "checks + safety backup" = everything before that line.
#     seed  psql -c 'DROP DATABASE … WITH (FORCE)' -c 'CREATE DATABASE …' &&
#           gunzip -c db.sql.gz | docker exec -i C psql -U u -d db   (drop/create timed too)
#   Volume (BENCH_VOL_MB of PDF-like random files; a volume-only backup made by our tool; no
#   container uses the volume):
#     ours  predeploy-backup rollback --manifest M ...; "restore phase" = from its
#           `Unpacking the backup of volume` log line (the archive is read, checked and
#           unpacked next to the live data, then swapped in) to its exit
#     seed  docker run --rm -v V:/data -v DIR:/backup IMAGE sh -c
#             'rm -rf /data/* && tar xzf /backup/x.tar.gz -C /data'
#           (IMAGE: predeploy-test/postgres:15, GNU tar 1.34 + gzip 1.12), on our .tar.gz
#   After every run the result is compared with the original (exact row counts; the volume's
#   listing of paths, types, sizes, owners and modes), so a fast wrong restore shows.
#
# Usage: scripts/bench-restore.sh
# Environment:
#   BENCH_DB_MB=300       MiB of table data (0: skip the database)
#   BENCH_VOL_MB=300      MiB of files in the volume (0: skip the volume)
#   BENCH_RUNS=2          timed runs per contender (order alternates between runs); best shown
#   BENCH_SEED_IMAGE      image of the seed's volume restore (default predeploy-test/postgres:15)
#   BENCH_BIN, BENCH_KEEP, BENCH_PG_ARGS, PREDEPLOY_WORK_DIR: see scripts/bench/common.sh
set -euo pipefail

BENCH_NAME=bench-restore
# shellcheck source=scripts/bench/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench/common.sh"

DB_MB="${BENCH_DB_MB:-300}"
VOL_MB="${BENCH_VOL_MB:-300}"
RUNS="${BENCH_RUNS:-2}"
SEED_IMAGE="${BENCH_SEED_IMAGE:-$PG_IMAGE}"
[[ "$DB_MB" =~ ^[0-9]+$ && "$VOL_MB" =~ ^[0-9]+$ && "$RUNS" =~ ^[1-9][0-9]*$ ]] ||
    die "BENCH_DB_MB, BENCH_VOL_MB must be whole numbers and BENCH_RUNS at least 1"

bench_init
WS="$BENCH_TMP/ws"
mkdir -p "$WS"

# our_cli LOG OUT ARGS...: runs the tool (untimed), dies with its log on failure.
our_cli() {
    local logf="$1" outf="$2"
    shift 2
    if ! "$BIN" "$@" --workspace "$WS" >"$outf" 2>"$logf"; then
        cat "$logf" >&2
        die "predeploy-backup $1 failed"
    fi
}

# source_backup NAME ARGS...: a backup by our tool into $WS/src-NAME; sets MANIFEST and OUT.
source_backup() {
    local name="$1"
    shift
    OUT="$BENCH_TMP/src-$name.out"
    our_cli "$BENCH_TMP/src-$name.log" "$OUT" backup --backup-root "$WS/src-$name" \
        --upload-artifact false --commit "$(printf "%040d" 0 | tr 0 b)" --branch bench "$@"
    local dir
    dir="$(output_value "$OUT" backup-dir)"
    [[ "$dir" == /* ]] || dir="$WS/$dir"
    MANIFEST="$dir/manifest.yml"
    [[ -f "$MANIFEST" ]] || die "no manifest in $dir"
}

# ours_rollback KEY MANIFEST RESTORE_LINE_REGEX FILE TIMING TARGET...: one timed rollback of the
# targets TARGET names (rollback restores only what its inputs name); records the
# total (size: FILE of the backup), the restore phase (from the first log line matching the
# regex to the end), what came before it, and the safety backup's TIMING from its manifest;
# removes the safety backup afterwards.
ours_rollback() {
    local key="$1" manifest="$2" re="$3" file="$4" timing="$5"
    shift 5
    local logf="$BENCH_TMP/rollback.log" outf="$BENCH_TMP/rollback.out"
    if ! measure_stamped "$logf" "$outf" "$BIN" rollback --manifest "$manifest" \
        --backup-root "$WS/safety" --workspace "$WS" "$@"; then
        cut -d' ' -f2- "$logf" >&2
        die "our rollback failed"
    fi
    local at
    at="$(stamp_of "$logf" "$re")"
    [[ -n "$at" ]] || {
        cat "$logf" >&2
        die "no line matching '$re' in the rollback's log"
    }
    record "$key" "ours: rollback (total)" "$(stat -c %s "$(dirname "$manifest")"/"$file")" "input: our backup"
    record_time "${key}_pre" "ours: checks + safety backup (before restore)" "$at"
    record_time "${key}_restore" "ours: restore phase" "$(awk -v a="$M_WALL" -v b="$at" 'BEGIN { printf "%.3f", a - b }')"
    local safety
    safety="$(output_value "$outf" safety-backup-dir)"
    [[ -n "$safety" ]] || die "no safety-backup-dir in the rollback's outputs"
    [[ "$safety" == /* ]] || safety="$WS/$safety"
    record_time "${key}_safety_dump" "ours: safety backup's dump/archive (its manifest)" \
        "$(manifest_timing "$safety/manifest.yml" "$timing")"
    rm -rf "$WS/safety"
    cp "$logf" "$BENCH_TMP/last-$key.log"
}

declare -A CONTENT=()

if ((DB_MB > 0)); then
    C="$(new_name pg)"
    log "database: starting $C"
    start_postgres "$C"
    log "database: generating ~$DB_MB MiB of table data"
    start=$SECONDS
    fill_database "$C" "$DB_MB"
    CONTENT[db]="$(database_summary "$C")"
    EXPECT_ROWS="$(row_counts "$C")"
    log "database: ${CONTENT[db]} ($((SECONDS - start)) s)"
    source_backup db --postgres-container "$C" --postgres-user "$PG_USER" --postgres-db "$PG_DB"
    DB_MANIFEST="$MANIFEST"
    DB_FILE="$(output_value "$OUT" db-backup-path)"
    [[ "$DB_FILE" == /* ]] || DB_FILE="$WS/$DB_FILE"
    DB_GZ_BYTES="$(stat -c %s "$DB_FILE")"
    log "database: our backup $(basename "$DB_FILE") is $(fmt_size "$DB_GZ_BYTES"); $RUNS timed runs per contender"

    db_check() {
        local got
        got="$(row_counts "$C")"
        [[ "$got" == "$EXPECT_ROWS" ]] || die "$1 left rows '$got', expected '$EXPECT_ROWS'"
    }
    for ((i = 1; i <= RUNS; i++)); do
        for who in $( ((i % 2)) && echo "ours seed" || echo "seed ours"); do
            if [[ "$who" == ours ]]; then
                ours_rollback db_ours "$DB_MANIFEST" '^== Restoring database' \
                    "$(basename "$DB_FILE")" "database dump" \
                    --postgres-container "$C" --postgres-user "$PG_USER" --postgres-db "$PG_DB"
            else
                # shellcheck disable=SC2016 # expanded by the inner shell
                measure bash -c 'set -o pipefail
                    docker exec "$1" psql -X -q -v ON_ERROR_STOP=1 -U "$2" -d postgres \
                        -c "DROP DATABASE IF EXISTS \"$3\" WITH (FORCE)" -c "CREATE DATABASE \"$3\" OWNER \"$2\"" &&
                    gunzip -c "$4" | docker exec -i "$1" psql -U "$2" -d "$3" >/dev/null 2>"$5"' \
                    _ "$C" "$PG_USER" "$PG_DB" "$DB_FILE" "$BENCH_TMP/seed-psql.err" ||
                    die "the seed's gunzip | psql failed"
                record db_seed "seed: drop/create + gunzip -c | psql" "$DB_GZ_BYTES" "input: our backup"
            fi
            db_check "$who"
            log "database run $i: $who ${M_WALL}s"
        done
    done
fi

if ((VOL_MB > 0)); then
    V="$(new_name vol)"
    new_volume "$V"
    log "volume: writing ~$VOL_MB MiB of PDF-like files into $V"
    start=$SECONDS
    fill_volume "$V" "$VOL_MB"
    read -r files bytes tree < <(volume_stats "$V")
    EXPECT_TREE="$files $bytes $tree"
    CONTENT[vol]="$files files, $(fmt_size "$bytes")"
    log "volume: ${CONTENT[vol]} ($((SECONDS - start)) s)"
    source_backup vol --volumes "$V"
    VOL_MANIFEST="$MANIFEST"
    VOL_FILE="$(output_value "$OUT" volume-backup-paths)"
    [[ "$VOL_FILE" == /* ]] || VOL_FILE="$WS/$VOL_FILE"
    VOL_GZ_BYTES="$(stat -c %s "$VOL_FILE")"
    log "volume: our backup $(basename "$VOL_FILE") is $(fmt_size "$VOL_GZ_BYTES"); $RUNS timed runs per contender"

    vol_check() {
        local got
        got="$(volume_stats "$V")"
        [[ "$got" == "$EXPECT_TREE" ]] || die "$1 left the volume as '$got', expected '$EXPECT_TREE'"
    }
    for ((i = 1; i <= RUNS; i++)); do
        for who in $( ((i % 2)) && echo "ours seed" || echo "seed ours"); do
            if [[ "$who" == ours ]]; then
                ours_rollback vol_ours "$VOL_MANIFEST" '^Unpacking the backup of volume' \
                    "$(basename "$VOL_FILE")" "volume archives" --volumes "$V"
            else
                measure docker run --rm --label "$BENCH_LABEL=$BENCH_RUN_ID" -v "$V:/data" \
                    -v "$(dirname "$VOL_FILE"):/backup:ro" --entrypoint sh "$SEED_IMAGE" \
                    -c "rm -rf /data/* && tar xzf /backup/$(basename "$VOL_FILE") -C /data" ||
                    die "the seed's tar xzf failed"
                record vol_seed "seed: docker run rm -rf + tar xzf" "$VOL_GZ_BYTES" "image $SEED_IMAGE"
            fi
            vol_check "$who"
            log "volume run $i: $who ${M_WALL}s"
        done
    done
fi

# The report.
printf '\n== predeploy-backup rollback benchmark (%s, %s cores, load %s)\n' \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '   binary %s\n' "$("$BIN" --version)"
if ((DB_MB > 0)); then
    print_table "Database: ${CONTENT[db]}; backup $(fmt_size "$DB_GZ_BYTES") (best of $RUNS)" db_seed \
        db_ours db_ours_pre db_ours_safety_dump db_ours_restore db_seed
    echo
    ratio_line "time: ours (restore phase) / seed" "$(ratio "${B_WALL[db_ours_restore]}" "${B_WALL[db_seed]}")" "<=" 1.0
    ratio_line "time: ours (total) / seed" "$(ratio "${B_WALL[db_ours]}" "${B_WALL[db_seed]}")" "<=" 2.5
fi
if ((VOL_MB > 0)); then
    print_table "Volume: ${CONTENT[vol]}; backup $(fmt_size "$VOL_GZ_BYTES") (best of $RUNS)" vol_seed \
        vol_ours vol_ours_pre vol_ours_safety_dump vol_ours_restore vol_seed
    echo
    ratio_line "time: seed / ours (restore phase)" "$(ratio "${B_WALL[vol_seed]}" "${B_WALL[vol_ours_restore]}")" ">=" 2
    ratio_line "time: seed / ours (total)" "$(ratio "${B_WALL[vol_seed]}" "${B_WALL[vol_ours]}")" ">=" 2
    echo "  (our volume restore phase starts at its 'Unpacking the backup of volume' line: reading,"
    echo "  checking and unpacking the archive, then the swap; the probe for a helper image with a"
    echo "  shell, just before it, is counted in 'checks + safety backup')"
fi
echo
echo "  best = fastest of the runs; peak RSS = highest of the runs; CPU = user+sys of the local"
echo "  processes in the fastest run (psql, tar and the Docker daemon's work are not local)."
echo "  Our total includes, by design, the SHA-256 and read-back checks and a safety backup of"
echo "  the current state; 'restore phase' is what the seed's command does."
