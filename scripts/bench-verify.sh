#!/usr/bin/env bash
# Verification and compression benchmark: our archive code against the seed's checks and
# GNU gzip, on the same files, in one run. Prints figures and ratios; never fails on a slow
# number. No Docker needed.
#
#   Data (generated once into the work folder, reused by later runs):
#     db.sql.gz   ~BENCH_DB_MB of pg_dump-like plain SQL (3 tables of COPY text: emails,
#                 names, timestamps, amounts, jsonb, escapes), `gzip -6`
#     vol.tar.gz  ~BENCH_VOL_MB of PDF-like incompressible files (random bytes behind a
#                 `%PDF-1.4` header, 100 KB-5 MB, nested folders), `tar czf`
#   Verification of both files:
#     seed  gzip -t db; gzip -t vol; tar -tzf vol >/dev/null; sha256sum db vol
#     ours  examples/verify_bench: verify_file on both (every gzip member with CRC/ISIZE, no
#           trailing bytes, SQL header/completion/row counts, every tar header to the end
#           marker, SHA-256), one streaming read per file
#   Compression (level 6):
#     GNU gzip -6 vs ParallelGzEncoder, on the dump text and on the uncompressed volume tar
#
# Usage: scripts/bench-verify.sh
# Environment:
#   BENCH_DB_MB=300     uncompressed size of the dump (MiB)
#   BENCH_VOL_MB=300    size of the volume's files (MiB)
#   BENCH_RUNS=3        timed runs per contender after one warm-up; the best is shown
#   BENCH_DIR           work folder (default <repo>/.work/bench/verify); kept between runs
#   BENCH_REGEN=1       regenerate the data
# All files are read from the page cache (warmed first): the figures are CPU cost.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export LC_ALL=C

DB_MB="${BENCH_DB_MB:-300}"
VOL_MB="${BENCH_VOL_MB:-300}"
RUNS="${BENCH_RUNS:-3}"
[[ "$DB_MB" =~ ^[1-9][0-9]*$ && "$VOL_MB" =~ ^[1-9][0-9]*$ && "$RUNS" =~ ^[1-9][0-9]*$ ]] ||
    die "BENCH_DB_MB, BENCH_VOL_MB and BENCH_RUNS must be whole numbers of at least 1"
[[ -x /usr/bin/time ]] || ensure_apt_packages time
for tool in gzip tar sha256sum mawk; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found"
done

ROOT="$(repo_root)"
DIR="${BENCH_DIR:-$(work_dir)/bench/verify}"
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd -P)"

# Build (others may be editing the sources: retry a build that fails part way).
for try in 1 2 3 4 5; do
    if (cd "$ROOT" && cargo build --release --quiet --example verify_bench); then
        break
    fi
    [[ $try -lt 5 ]] || die "cargo build --release --example verify_bench failed 5 times"
    log "build failed (a file mid-edit?); retrying in 30 s"
    sleep 30
done
BIN="$DIR/verify_bench"
cp "$ROOT/target/release/examples/verify_bench" "$BIN"

# ---------------------------------------------------------------------------------------
# Data

gen_dump() {
    local mb="$1"
    mawk -v target=$((mb * 1024 * 1024)) '
    function pick(a, n) { return a[int(rand() * n) + 1] }
    function ts() {
        return sprintf("2024-%02d-%02d %02d:%02d:%02d.%06d+00", int(rand()*12)+1, int(rand()*28)+1,
            int(rand()*24), int(rand()*60), int(rand()*60), int(rand()*1000000))
    }
    BEGIN {
        srand(42)
        split("Anna Ben Carla David Eva Farid Greta Hugo Ines Jonas Kira Luca Mia Noah Olga Paul", first, " ")
        split("Schmidt Meyer Rossi Dubois Novak Kowalski Jensen Silva Costa Berg Laurent Weber", last, " ")
        split("example.com mail.test corp.example shop.test uni.example", dom, " ")
        split("new paid shipped cancelled refunded pending", status, " ")
        split("EUR USD GBP CHF", cur, " ")
        split("login logout view_invoice download_pdf upload_pdf search export", kind, " ")
        split("Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0|Mozilla/5.0 (Macintosh) Safari/17.5|curl/8.5.0|Mozilla/5.0 (Windows NT 10.0) Chrome/126.0", ua, "|")
        split("Bitte Rechnung an die neue Adresse senden|Customer asked for a callback\\tre: invoice|Lieferung verspätet, Kunde informiert|Note with a backslash \\\\ and a newline\\nsecond line|", note, "|")
        printf "--\n-- PostgreSQL database dump\n--\n\n\\restrict Zq1TmA7bK2x9LpQ4vR8sW3yE6uN0cD5f\n\n"
        printf "-- Dumped from database version 16.4 (Debian 16.4-1.pgdg120+2)\n-- Dumped by pg_dump version 16.4 (Debian 16.4-1.pgdg120+2)\n\n"
        printf "SET statement_timeout = 0;\nSET lock_timeout = 0;\nSET client_encoding = '\''UTF8'\'';\nSET standard_conforming_strings = on;\n\n"
        n = split("customers orders events", tables, " ")
        for (t = 1; t <= n; t++)
            printf "--\n-- Name: %s; Type: TABLE; Schema: public; Owner: app\n--\n\nCREATE TABLE public.%s (\n    id bigint NOT NULL\n);\n\n", tables[t], tables[t]
        bytes = 0
        per = target / 3
        printf "--\n-- Data for Name: customers; Type: TABLE DATA; Schema: public; Owner: app\n--\n\nCOPY public.customers (id, email, name, created_at, status, notes) FROM stdin;\n"
        for (id = 1; bytes < per; id++) {
            f = pick(first, 16); l = pick(last, 12)
            line = sprintf("%d\t%s.%s%d@%s\t%s %s\t%s\t%s\t%s", id, tolower(f), tolower(l), id % 97, pick(dom, 5), f, l, ts(), pick(status, 6), (rand() < 0.3 ? "\\N" : pick(note, 5)))
            print line; bytes += length(line) + 1
        }
        customers = id
        printf "\\.\n\n\n--\n-- Data for Name: orders; Type: TABLE DATA; Schema: public; Owner: app\n--\n\nCOPY public.orders (id, customer_id, amount, currency, created_at, payload) FROM stdin;\n"
        for (id = 1; bytes < 2 * per; id++) {
            line = sprintf("%d\t%d\t%.2f\t%s\t%s\t{\"items\": [{\"sku\": \"SKU-%05d\", \"qty\": %d}], \"invoice\": \"INV-%08x\", \"pdf\": \"uploads/%04x/%08x.pdf\"}", id, int(rand()*customers)+1, rand()*2000, pick(cur, 4), ts(), int(rand()*40000), int(rand()*5)+1, int(rand()*2147483647), int(rand()*65535), int(rand()*2147483647))
            print line; bytes += length(line) + 1
        }
        printf "\\.\n\n\n--\n-- Data for Name: events; Type: TABLE DATA; Schema: public; Owner: app\n--\n\nCOPY public.events (id, kind, user_agent, at, detail) FROM stdin;\n"
        for (id = 1; bytes < target; id++) {
            line = sprintf("%d\t%s\t%s\t%s\t%s", id, pick(kind, 7), pick(ua, 4), ts(), (rand() < 0.5 ? "\\N" : sprintf("{\"ip\": \"10.%d.%d.%d\", \"ms\": %d}", int(rand()*256), int(rand()*256), int(rand()*256), int(rand()*900))))
            print line; bytes += length(line) + 1
        }
        printf "\\.\n\n\n--\n-- Name: customers customers_pkey; Type: CONSTRAINT; Schema: public; Owner: app\n--\n\n"
        printf "ALTER TABLE ONLY public.customers\n    ADD CONSTRAINT customers_pkey PRIMARY KEY (id);\n\n\n"
        printf "--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict Zq1TmA7bK2x9LpQ4vR8sW3yE6uN0cD5f\n\n"
    }'
}

gen_volume() {
    local dir="$1" mb="$2" total=0 i=0 size sub
    local target=$((mb * 1024 * 1024))
    rm -rf "$dir"
    mkdir -p "$dir"
    RANDOM=7
    while [[ $total -lt $target ]]; do
        size=$(((RANDOM * 32768 + RANDOM) % (5 * 1000 * 1000 - 100 * 1000) + 100 * 1000))
        sub="$dir/bucket/$(printf '%02x/%02x' $((i % 16)) $((i % 7)))"
        mkdir -p "$sub"
        { printf '%%PDF-1.4\n'; head -c "$size" /dev/urandom; } >"$sub/doc-$i.pdf"
        total=$((total + size))
        i=$((i + 1))
    done
    mkdir -p "$dir/bucket/empty"
    log "volume: $i files, $((total / 1024 / 1024)) MiB"
}

DB_SQL="$DIR/db.sql"
DB="$DIR/db.sql.gz"
VOL_DIR="$DIR/vol"
VOL_TAR="$DIR/vol.tar"
VOL="$DIR/vol.tar.gz"
STAMP="$DIR/params"
if [[ "${BENCH_REGEN:-0}" == 1 || ! -f "$STAMP" || "$(cat "$STAMP")" != "$DB_MB $VOL_MB" ]]; then
    log "generating ~$DB_MB MiB of dump text and ~$VOL_MB MiB of PDF-like files in $DIR"
    rm -f "$STAMP"
    gen_dump "$DB_MB" >"$DB_SQL"
    gzip -6 -c "$DB_SQL" >"$DB"
    gen_volume "$VOL_DIR" "$VOL_MB"
    tar cf "$VOL_TAR" -C "$VOL_DIR" .
    tar czf "$VOL" -C "$VOL_DIR" .
    echo "$DB_MB $VOL_MB" >"$STAMP"
fi
cat "$DB_SQL" "$DB" "$VOL_TAR" "$VOL" >/dev/null # warm the page cache

# ---------------------------------------------------------------------------------------
# Timing helpers

# best_of NAME CMD...: runs CMD once to warm up, then RUNS times; sets BEST (s) and
# RSS (KiB, max over runs). CMD's stdout goes to $DIR/NAME.out.
best_of() {
    local name="$1"
    shift
    local run t0 t1 wall rss
    BEST=""
    RSS=0
    "$@" >"$DIR/$name.out" 2>"$DIR/$name.err" || die "$name failed: $(tail -3 "$DIR/$name.err")"
    for ((run = 1; run <= RUNS; run++)); do
        t0=$(date +%s.%N)
        /usr/bin/time -v -o "$DIR/$name.time" "$@" >"$DIR/$name.out" 2>"$DIR/$name.err" ||
            die "$name failed: $(tail -3 "$DIR/$name.err")"
        t1=$(date +%s.%N)
        wall=$(echo "$t1 - $t0" | bc -l)
        rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$DIR/$name.time")
        if [[ -z "$BEST" || $(echo "$wall < $BEST" | bc -l) == 1 ]]; then
            BEST=$wall
        fi
        if [[ $rss -gt $RSS ]]; then
            RSS=$rss
        fi
    done
}

ratio() { echo "scale=2; $1 / $2" | bc -l; }
ratio4() { echo "scale=4; $1 / $2" | bc -l; }
size_of() { stat -c %s "$1"; }
mib() { echo "scale=1; $1 / 1048576" | bc -l; }

command -v bc >/dev/null 2>&1 || ensure_apt_packages bc

seed_check() {
    gzip -t "$DB" && gzip -t "$VOL" && tar -tzf "$VOL" >/dev/null && sha256sum "$DB" "$VOL" >/dev/null
}
export -f seed_check
export DB VOL

# ---------------------------------------------------------------------------------------
# Verification

log "verification: seed checks vs verify_file ($RUNS runs each, best shown)"
best_of seed bash -c seed_check
SEED_T=$BEST
best_of ours "$BIN" verify "$DB" "$VOL"
OURS_T=$BEST
OURS_RSS=$RSS
grep -q FAILED "$DIR/ours.out" && die "our verification failed: $(cat "$DIR/ours.out")"

# ---------------------------------------------------------------------------------------
# Compression

log "compression: gzip -6 vs ParallelGzEncoder level 6"
# shellcheck disable=SC2016 # $0/$1 expand in the inner shell
best_of gzip_db bash -c 'gzip -6 -c "$0" >"$1"' "$DB_SQL" "$DIR/gnu.sql.gz"
GZ_DB_T=$BEST
best_of ours_db "$BIN" gzip 6 "$DB_SQL" "$DIR/ours.sql.gz"
OURS_DB_T=$BEST
OURS_DB_RSS=$RSS
# shellcheck disable=SC2016
best_of gzip_vol bash -c 'gzip -6 -c "$0" >"$1"' "$VOL_TAR" "$DIR/gnu.tar.gz"
GZ_VOL_T=$BEST
best_of ours_vol "$BIN" gzip 6 "$VOL_TAR" "$DIR/ours.tar.gz"
OURS_VOL_T=$BEST
OURS_VOL_RSS=$RSS
# Our output must be valid for both gzip and our verifier.
gzip -t "$DIR/ours.sql.gz" "$DIR/ours.tar.gz" || die "gzip -t rejects our output"
"$BIN" verify "$DIR/ours.sql.gz" "$DIR/ours.tar.gz" >"$DIR/ours-verify.out" ||
    die "our verifier rejects our output: $(cat "$DIR/ours-verify.out")"

# ---------------------------------------------------------------------------------------
# Report

SQL_RAW=$(size_of "$DB_SQL")
TAR_RAW=$(size_of "$VOL_TAR")
echo
echo "== predeploy-backup archive benchmark ($(nproc) cores; $(uname -m); best of $RUNS) =="
printf 'data: dump %s MiB text -> %s MiB gzip -6; volume %s MiB tar -> %s MiB tar.gz\n' \
    "$(mib "$SQL_RAW")" "$(mib "$(size_of "$DB")")" "$(mib "$TAR_RAW")" "$(mib "$(size_of "$VOL")")"
echo
echo "-- verification of both files --"
printf '  seed (gzip -t x2, tar -tzf, sha256sum x2)  %7.2f s\n' "$SEED_T"
printf '  ours (verify_file x2, full checks)         %7.2f s   peak RSS %s MiB\n' "$OURS_T" "$(mib $((OURS_RSS * 1024)))"
printf '  speed-up: %sx (target >= 3x); peak RSS target < 64 MiB\n' "$(ratio "$SEED_T" "$OURS_T")"
sed 's/^/    /' "$DIR/ours.out"
echo
echo "-- compression, level 6 --"
printf '  dump text:   gzip -6 %6.2f s, %s MiB | ours %6.2f s, %s MiB, RSS %s MiB | speed %sx, size %s\n' \
    "$GZ_DB_T" "$(mib "$(size_of "$DIR/gnu.sql.gz")")" "$OURS_DB_T" "$(mib "$(size_of "$DIR/ours.sql.gz")")" \
    "$(mib $((OURS_DB_RSS * 1024)))" "$(ratio "$GZ_DB_T" "$OURS_DB_T")" \
    "$(ratio4 "$(size_of "$DIR/ours.sql.gz")" "$(size_of "$DIR/gnu.sql.gz")")"
printf '  volume tar:  gzip -6 %6.2f s, %s MiB | ours %6.2f s, %s MiB, RSS %s MiB | speed %sx, size %s\n' \
    "$GZ_VOL_T" "$(mib "$(size_of "$DIR/gnu.tar.gz")")" "$OURS_VOL_T" "$(mib "$(size_of "$DIR/ours.tar.gz")")" \
    "$(mib $((OURS_VOL_RSS * 1024)))" "$(ratio "$GZ_VOL_T" "$OURS_VOL_T")" \
    "$(ratio4 "$(size_of "$DIR/ours.tar.gz")" "$(size_of "$DIR/gnu.tar.gz")")"
echo "  (size = ours / gzip -6; targets: text <= 1.05, incompressible <= 1.01)"
