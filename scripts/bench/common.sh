# shellcheck shell=bash
# Shared helpers of scripts/bench-backup.sh and scripts/bench-restore.sh. Source it after
# setting BENCH_NAME; don't run it.
#
# What it gives:
#   bench_init                      work folder, unique resource names, cleanup trap, binary
#   start_postgres NAME             a predeploy-test/postgres:15 container, ready
#   fill_database C MB              ~MB of realistic table data (3 tables, indexes), analyzed
#   fill_volume V MB                ~MB of PDF-like incompressible files in nested folders
#   volume_stats V                  "FILES BYTES TREE-HASH" of V (to compare restores)
#   database_summary C, row_counts C  what the database holds
#   measure CMD...                  runs CMD once: M_WALL (s), M_RSS (KiB), M_CPU (s)
#   measure_stamped LOG OUT CMD...  the same, stderr lines time-stamped into LOG, stdout to OUT
#   stamp_of LOG REGEX              time stamp of the first line of LOG matching REGEX
#   record KEY LABEL [SIZE] [NOTE]  adds the last measure to KEY's best-of figures
#   record_time KEY LABEL SECONDS   a derived phase time, best of the runs
#   print_table TITLE BASELINE KEY...  the figures side by side, times relative to BASELINE
#   ratio_line TEXT VALUE OP TARGET   one ratio with its target (never fails)
#   ratio A B, fmt_size BYTES, verdict VALUE OP TARGET, output_value, manifest_timing
#
# Environment (all optional):
#   BENCH_BIN         the predeploy-backup binary to time (default: `cargo build --release`,
#                     then $CARGO_TARGET_DIR (or target)/release/predeploy-backup)
#   BENCH_KEEP=1      keep the work folder (backups, logs) instead of removing it
#   BENCH_PG_ARGS     extra server arguments for postgres (e.g. "-c shared_buffers=256MB")
#   PREDEPLOY_WORK_DIR  parent of the work folder (default <repo>/.work)
#
# Every container and volume made here carries the label org.predeploy-backup.bench=<run id>
# and is removed on exit. After a `kill -9`, remove leftovers with:
#   docker rm -f $(docker ps -aq --filter label=org.predeploy-backup.bench)
#   docker volume rm $(docker volume ls -q --filter label=org.predeploy-backup.bench)

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

export LC_ALL=C

readonly PG_IMAGE="predeploy-test/postgres:15"
readonly BB_IMAGE="predeploy-test/busybox:latest"
readonly PG_USER="bench"
readonly PG_DB="benchdb"
readonly BENCH_LABEL="org.predeploy-backup.bench"

BENCH_CONTAINERS=()
BENCH_VOLUMES=()
declare -A B_WALL=() B_RSS=() B_CPU=() B_RUNS=() B_SIZE=() B_NOTE=() B_LABEL=()

_bench_cleanup() {
    local rc=$?
    set +e
    if [[ ${#BENCH_CONTAINERS[@]} -gt 0 ]]; then
        docker rm -f -v "${BENCH_CONTAINERS[@]}" >/dev/null 2>&1
    fi
    # Helpers of an interrupted run of ours (it removes its own otherwise).
    local v ids
    for v in "${BENCH_VOLUMES[@]}"; do
        mapfile -t ids < <(docker ps -aq --filter "label=org.predeploy-backup.helper" --filter "volume=$v" 2>/dev/null)
        [[ ${#ids[@]} -eq 0 ]] || docker rm -f "${ids[@]}" >/dev/null 2>&1
    done
    if [[ ${#BENCH_VOLUMES[@]} -gt 0 ]]; then
        docker volume rm -f "${BENCH_VOLUMES[@]}" >/dev/null 2>&1
    fi
    if [[ -n "${BENCH_TMP:-}" && -d "$BENCH_TMP" ]]; then
        if [[ "${BENCH_KEEP:-0}" == 1 ]]; then
            log "kept $BENCH_TMP"
        else
            rm -rf "$BENCH_TMP"
        fi
    fi
    exit "$rc"
}

# bench_init: checks the tools, builds the binary, makes the work folder and the trap.
bench_init() {
    command -v docker >/dev/null 2>&1 || die "docker CLI not found"
    docker info >/dev/null 2>&1 || die "cannot talk to the Docker engine"
    [[ -x /usr/bin/time ]] || ensure_apt_packages time
    command -v gzip >/dev/null 2>&1 || ensure_apt_packages gzip
    # Plain CLI runs: outputs on stdout, no Actions runtime, no stray password.
    unset GITHUB_ACTIONS GITHUB_OUTPUT GITHUB_STEP_SUMMARY GITHUB_ENV ACTIONS_RUNTIME_TOKEN \
        ACTIONS_RESULTS_URL POSTGRES_PASSWORD

    local root
    root="$(repo_root)"
    "$root/scripts/images.sh" postgres busybox

    if [[ -n "${BENCH_BIN:-}" ]]; then
        BIN="$BENCH_BIN"
    else
        # Others may be editing the sources: retry a build that fails part way.
        local try
        for try in 1 2 3 4 5; do
            if (cd "$root" && cargo build --release --quiet); then
                break
            fi
            [[ $try -lt 5 ]] || die "cargo build --release failed 5 times"
            log "build failed (a file mid-edit?); retrying in 30 s"
            sleep 30
        done
        BIN="${CARGO_TARGET_DIR:-$root/target}/release/predeploy-backup"
    fi
    [[ -x "$BIN" ]] || die "no binary at $BIN"
    # A private copy: a concurrent build cannot swap the binary between two runs.
    BENCH_RUN_ID="$(date +%H%M%S)-$$-$RANDOM"
    mkdir -p "$(work_dir)/bench"
    BENCH_TMP="$(mktemp -d "$(work_dir)/bench/$BENCH_NAME.XXXXXX")"
    trap _bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    cp "$BIN" "$BENCH_TMP/predeploy-backup"
    BIN="$BENCH_TMP/predeploy-backup"
    log "binary: $("$BIN" --version) ($(sha256sum "$BIN" | cut -c1-12)); work folder: $BENCH_TMP"
    local load
    load="$(cut -d' ' -f1 /proc/loadavg)"
    if awk -v l="$load" -v n="$(nproc)" 'BEGIN { exit !(l > n) }'; then
        log "warning: load average $load on $(nproc) cores: other work is running, figures will be skewed"
    fi
}

# bench_container_name SUFFIX / bench_volume_name SUFFIX: unique names, registered for removal.
new_name() {
    printf 'predeploy-bench-%s-%s' "$1" "$BENCH_RUN_ID"
}

start_postgres() {
    local name="$1"
    BENCH_CONTAINERS+=("$name")
    # 256 MiB of /dev/shm: the default 64 MiB fails parallel queries on a 2 GiB database.
    # shellcheck disable=SC2086 # BENCH_PG_ARGS is a list of server arguments
    docker run -d --name "$name" --label "$BENCH_LABEL=$BENCH_RUN_ID" --shm-size=256m \
        -e POSTGRES_USER="$PG_USER" -e POSTGRES_PASSWORD=bench -e POSTGRES_DB="$PG_DB" \
        "$PG_IMAGE" ${BENCH_PG_ARGS:-} >/dev/null
    wait_for_postgres "$name" "$PG_USER" "$PG_DB" 120
}

new_volume() {
    local name="$1"
    BENCH_VOLUMES+=("$name")
    docker volume create --label "$BENCH_LABEL=$BENCH_RUN_ID" "$name" >/dev/null
}

psql_in() {
    local c="$1"
    shift
    docker exec -i "$c" psql -X -q -v ON_ERROR_STOP=1 -U "$PG_USER" -d "$PG_DB" "$@"
}

# The INSERT that adds rows FROM..TO (ids) to TABLE. Text, numbers, timestamps, NULLs and
# jsonb, with the repetition real application data has (statuses, user agents, phrases)
# and the entropy it has too (hashes, amounts, times).
_rows_sql() {
    local table="$1" from="$2" to="$3"
    case "$table" in
    customers)
        cat <<EOF
INSERT INTO customers
SELECT g,
       initcap(substr(md5(g::text), 1, 5 + g % 4)) || ' ' || initcap(substr(md5((g * 7)::text), 3, 6 + g % 5)),
       lower(substr(md5(g::text), 1, 8)) || '.' || g || '@' || (ARRAY['example.com','mail.test','corp.example','shop.test'])[1 + g % 4],
       (ARRAY['DE','FR','US','GB','NL','ES','IT','PL','SE','AT'])[1 + (random() * 9)::int],
       timestamptz '2019-01-01 00:00:00+00' + random() * interval '5 years',
       CASE WHEN random() < 0.3 THEN 'VIP since ' || (2015 + (random() * 8)::int) || ', prefers ' || (ARRAY['email','phone','post'])[1 + (random() * 2)::int] END
FROM generate_series($from, $to) AS g;
EOF
        ;;
    orders)
        cat <<EOF
INSERT INTO orders
SELECT g,
       1 + (random() * 99999)::int,
       (ARRAY['new','paid','packed','shipped','delivered','cancelled','refunded'])[1 + (random() * 6)::int],
       round((random() * 2000)::numeric, 2),
       (ARRAY['EUR','USD','GBP'])[1 + (random() * 2)::int],
       t,
       CASE WHEN random() < 0.7 THEN t + random() * interval '9 days' END,
       CASE WHEN random() < 0.35 THEN 'Please leave the parcel at the ' || (ARRAY['front door','reception','neighbour''s','garage','back door'])[1 + (random() * 4)::int] || '. Ref ' || substr(md5(random()::text), 1, 10)
            WHEN random() < 0.5 THEN 'gift wrap: ' || (ARRAY['yes','no'])[1 + (random())::int] || '; invoice ' || upper(substr(md5(random()::text), 1, 12))
       END,
       'ORD-' || to_char(t, 'YYYYMMDD') || '-' || lpad(g::text, 9, '0')
FROM generate_series($from, $to) AS g,
     LATERAL (SELECT timestamptz '2020-01-01 00:00:00+00' + random() * interval '4 years' + g * interval '0 s' AS t) AS x;
EOF
        ;;
    events)
        cat <<EOF
INSERT INTO events
SELECT g,
       1 + (random() * 999999)::bigint,
       (ARRAY['page_view','add_to_cart','checkout','payment','login','logout','search'])[1 + (random() * 6)::int],
       jsonb_build_object(
           'ip', '10.' || (random() * 255)::int || '.' || (random() * 255)::int || '.' || (random() * 255)::int,
           'user_agent', (ARRAY['Mozilla/5.0 (X11; Linux x86_64; rv:124.0) Gecko/20100101 Firefox/124.0',
                                'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0 Safari/537.36',
                                'Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148',
                                'curl/8.5.0'])[1 + (random() * 3)::int],
           'session', md5(random()::text),
           'path', '/' || (ARRAY['shop','cart','account','search','product'])[1 + (random() * 4)::int] || '/' || (random() * 5000)::int,
           'items', (random() * 12)::int,
           'total', round((random() * 500)::numeric, 2)),
       timestamptz '2020-01-01 00:00:00+00' + random() * interval '4 years'
FROM generate_series($from, $to) AS g;
EOF
        ;;
    esac
}

# fill_database C MB: about MB MiB of table data (heap + TOAST, indexes not counted):
# customers 10%, orders 50%, events 40%. A first batch measures the bytes per row.
fill_database() {
    local c="$1" mb="$2"
    psql_in "$c" <<'EOF'
CREATE TABLE customers (
    id integer PRIMARY KEY, name text NOT NULL, email text NOT NULL, country char(2) NOT NULL,
    created_at timestamptz NOT NULL, notes text);
CREATE TABLE orders (
    id bigint PRIMARY KEY, customer_id integer NOT NULL, status text NOT NULL,
    amount numeric(12,2) NOT NULL, currency char(3) NOT NULL, created_at timestamptz NOT NULL,
    shipped_at timestamptz, note text, reference text NOT NULL);
CREATE INDEX orders_customer_id ON orders (customer_id);
CREATE TABLE events (
    id bigint PRIMARY KEY, order_id bigint NOT NULL, kind text NOT NULL, payload jsonb NOT NULL,
    at timestamptz NOT NULL);
EOF
    local table share first=5000 bytes target rows from to batch=400000
    for table in customers orders events; do
        case "$table" in
        customers) share=10 ;;
        orders) share=50 ;;
        events) share=40 ;;
        esac
        _rows_sql "$table" 1 "$first" | psql_in "$c"
        bytes="$(psql_in "$c" -tAc "SELECT pg_table_size('$table')")"
        target=$((mb * 1048576 * share / 100))
        rows=$((target * first / (bytes > 0 ? bytes : 1)))
        from=$((first + 1))
        while ((from <= rows)); do
            to=$((from + batch - 1))
            ((to <= rows)) || to=$rows
            _rows_sql "$table" "$from" "$to" | psql_in "$c"
            from=$((to + 1))
        done
    done
    psql_in "$c" -c 'VACUUM ANALYZE'
}

# database_summary C: one line: tables' size, database size, row counts.
database_summary() {
    psql_in "$1" -tAc "SELECT 'tables ' || pg_size_pretty(sum(pg_table_size(c.oid))) || ', database ' || pg_size_pretty(pg_database_size(current_database())) || ', rows: ' || string_agg(c.relname || ' ' || c.reltuples::bigint, ', ' ORDER BY c.relname) FROM pg_class c WHERE c.relname IN ('customers','orders','events')"
}

# row_counts C: "customers N orders N events N" (exact).
row_counts() {
    psql_in "$1" -tAc "SELECT (SELECT count(*) FROM customers) || ' ' || (SELECT count(*) FROM orders) || ' ' || (SELECT count(*) FROM events)"
}

# fill_volume V MB: PDF-like files (a %PDF-1.4 header, random bytes, %%EOF), 100 KiB to
# 5 MiB (log-uniform), in nested folders, owned by www-data, about MB MiB in total. The list
# is drawn on the host with a fixed seed, so the same MB gives the same tree.
fill_volume() {
    local v="$1" mb="$2"
    awk -v total="$((mb * 1048576))" 'BEGIN {
        srand(20240601)
        lo = log(100 * 1024); hi = log(5 * 1024 * 1024)
        print "set -e"
        n = 0; sum = 0
        while (sum < total) {
            size = int(exp(lo + rand() * (hi - lo)))
            if (sum + size > total) size = total - sum
            if (size < 1024) break
            n++
            if (n % 3 == 0) dir = sprintf("invoices/customer-%04d", int(rand() * 60))
            else dir = sprintf("uploads/%d/%02d", 2021 + int(rand() * 4), 1 + int(rand() * 12))
            if (!(dir in made)) { printf "mkdir -p /data/%s\n", dir; made[dir] = 1 }
            body = size - 16
            printf "{ echo \047%%PDF-1.4\047; head -c %d /dev/urandom; echo; echo \047%%%%EOF\047; } >/data/%s/doc-%05d.pdf\n", body, dir, n
            sum += size
        }
        print "chown -R 33:33 /data"
    }' | docker run --rm -i --label "$BENCH_LABEL=$BENCH_RUN_ID" -v "$v:/data" "$BB_IMAGE" sh -s
}

# volume_stats V: "FILES BYTES TREE" of V: the number and total size of its regular files,
# and a hash of the sorted listing of every entry (path, type, size, owner, mode).
volume_stats() {
    docker run --rm --label "$BENCH_LABEL=$BENCH_RUN_ID" -v "$1:/data:ro" --entrypoint sh "$PG_IMAGE" \
        -c "cd /data && find . -mindepth 1 -printf '%P %y %s %u:%g %m\n' | sort >/tmp/l &&
            awk '\$2 == \"f\" { s += \$3; n++ } END { printf \"%d %d \", n, s }' /tmp/l &&
            md5sum </tmp/l | cut -c1-12"
}

# measure CMD...: runs CMD once under /usr/bin/time -v; sets M_WALL (seconds, our clock),
# M_RSS (peak RSS of the largest local process, KiB) and M_CPU (user + system seconds of
# the local processes). Processes inside containers are not local: not counted.
measure() {
    local tfile="$BENCH_TMP/time.out" t0 t1 rc=0
    sync
    t0=$EPOCHREALTIME
    /usr/bin/time -v -o "$tfile" "$@" || rc=$?
    t1=$EPOCHREALTIME
    _measured "$t0" "$t1" "$tfile"
    return "$rc"
}

# measure_stamped LOG OUT CMD...: like measure, stdout to OUT, and each stderr line written
# to LOG prefixed with the time it arrived (seconds since the start, to the microsecond).
measure_stamped() {
    local logf="$1" outf="$2"
    shift 2
    local tfile="$BENCH_TMP/time.out" t0 t1 rc=0
    sync
    t0=$EPOCHREALTIME
    { /usr/bin/time -v -o "$tfile" "$@" 2>&1 >"$outf"; } | _stamp "$t0" >"$logf" || rc=$?
    t1=$EPOCHREALTIME
    _measured "$t0" "$t1" "$tfile"
    return "$rc"
}

_stamp() {
    local t0="${1/./}" line us
    while IFS= read -r line; do
        us=$((${EPOCHREALTIME/./} - t0))
        printf '%d.%06d %s\n' $((us / 1000000)) $((us % 1000000)) "$line"
    done
}

_measured() {
    local t0="$1" t1="$2" tfile="$3"
    M_WALL="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')"
    M_RSS="$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$tfile")"
    M_CPU="$(awk -F': ' '/User time/ { u = $2 } /System time/ { s = $2 } END { printf "%.2f", u + s }' "$tfile")"
}

# stamp_of LOG REGEX: the time stamp of the first line matching REGEX (empty if none).
stamp_of() {
    awk -v re="$2" '{ t = $1; sub(/^[^ ]* /, "") } $0 ~ re { print t; exit }' "$1"
}

# record KEY LABEL [SIZE] [NOTE]: keeps the best wall time (and that run's CPU), the highest
# peak RSS, the last size.
record() {
    local key="$1"
    B_LABEL[$key]="$2"
    [[ -n "${3:-}" ]] && B_SIZE[$key]="$3"
    [[ -n "${4:-}" ]] && B_NOTE[$key]="$4"
    B_RUNS[$key]=$((${B_RUNS[$key]:-0} + 1))
    if [[ -z "${B_WALL[$key]:-}" ]] || awk -v a="$M_WALL" -v b="${B_WALL[$key]}" 'BEGIN { exit !(a < b) }'; then
        B_WALL[$key]="$M_WALL"
        B_CPU[$key]="$M_CPU"
    fi
    if [[ -z "${B_RSS[$key]:-}" || "${M_RSS:-0}" -gt "${B_RSS[$key]}" ]]; then
        B_RSS[$key]="${M_RSS:-0}"
    fi
}

# record_time KEY LABEL SECONDS [NOTE]: a derived figure (a phase), best of the runs.
record_time() {
    local key="$1"
    B_LABEL[$key]="$2"
    [[ -n "${4:-}" ]] && B_NOTE[$key]="$4"
    B_RUNS[$key]=$((${B_RUNS[$key]:-0} + 1))
    if [[ -z "${B_WALL[$key]:-}" ]] || awk -v a="$3" -v b="${B_WALL[$key]}" 'BEGIN { exit !(a < b) }'; then
        B_WALL[$key]="$3"
    fi
}

fmt_size() {
    awk -v b="$1" 'BEGIN {
        if (b == "") { print "-"; exit }
        if (b >= 1048576) printf "%.1f MiB", b / 1048576
        else if (b >= 1024) printf "%.1f KiB", b / 1024
        else printf "%d B", b }'
}

# ratio A B: A / B to two decimals ("-" when either is missing or B is 0).
ratio() {
    awk -v a="${1:-}" -v b="${2:-}" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "-"; else printf "%.2f", a / b }'
}

# verdict VALUE OP TARGET: "meets" / "misses" (OP is >= or <=). Never fails.
verdict() {
    awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN {
        if (v == "-" || v == "") { print "n/a"; exit }
        ok = (op == ">=") ? (v + 0 >= t + 0) : (v + 0 <= t + 0)
        print (ok ? "meets target" : "MISSES target") }'
}

# print_table TITLE BASELINE KEY...: one line per contender: best wall time, runs, time
# relative to BASELINE, output size, peak RSS and CPU of the local processes.
print_table() {
    local title="$1" base="$2"
    shift 2
    local k
    printf '\n%s\n' "$title"
    printf '  %-52s %8s %5s %8s %11s %9s %7s  %s\n' \
        "contender" "best s" "runs" "vs base" "size" "peak RSS" "CPU s" "note"
    for k in "$@"; do
        [[ -n "${B_WALL[$k]:-}" ]] || continue
        printf '  %-52s %8.2f %5s %8s %11s %9s %7s  %s\n' \
            "${B_LABEL[$k]}" "${B_WALL[$k]}" "${B_RUNS[$k]}" \
            "$(ratio "${B_WALL[$k]}" "${B_WALL[$base]:-}")x" \
            "$(fmt_size "${B_SIZE[$k]:-}")" \
            "$([[ -n "${B_RSS[$k]:-}" ]] && fmt_size "$((B_RSS[$k] * 1024))" || echo -)" \
            "${B_CPU[$k]:--}" "${B_NOTE[$k]:-}"
    done
}

# ratio_line TEXT VALUE OP TARGET: one line of the ratio summary.
ratio_line() {
    printf '  %-52s %8s   (target %s %s: %s)\n' "$1" "$2" "$3" "$4" "$(verdict "$2" "$3" "$4")"
}

# output_value FILE NAME: a `name=value` line of our stdout (the CLI prints its outputs).
output_value() {
    awk -v k="$2" 'index($0, k "=") == 1 { print substr($0, length(k) + 2); exit }' "$1"
}

# manifest_timing MANIFEST KEY: a value of the manifest's `timings:` map.
manifest_timing() {
    awk -v k="$2" '
        /^timings:/ { on = 1; next }
        on && /^[^ ]/ { on = 0 }
        on {
            line = $0; sub(/^ +/, "", line); gsub(/["\047]/, "", line)
            n = index(line, ":"); key = substr(line, 1, n - 1); val = substr(line, n + 1)
            gsub(/ /, "", val)
            if (key == k) { print val; exit }
        }' "$1"
}
