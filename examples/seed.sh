#!/usr/bin/env bash
# Seed the example stack (examples/docker-compose.yml) with a small, realistic data set:
# tables in PostgreSQL (awkward text, NULLs, bytea, a non-public schema) and fake PDF files
# in the MinIO-like volume. Re-running replaces the data with fresh data.
#
# Usage: examples/seed.sh [-p PROJECT]     (default: $COMPOSE_PROJECT_NAME or schedgen)
# The stack must be up:
#   scripts/compose.sh -p schedgen -f examples/docker-compose.yml up -d
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

project="${COMPOSE_PROJECT_NAME:-schedgen}"
while [[ $# -gt 0 ]]; do
    case "$1" in
    -p | --project)
        project="${2:?-p needs a project name}"
        shift 2
        ;;
    -h | --help)
        awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
        exit 0
        ;;
    *) die "unknown argument: $1 (see --help)" ;;
    esac
done

hint="start it: scripts/compose.sh -p $project -f examples/docker-compose.yml up -d"
pg="$(compose_container "$project" postgres)" || die "no running postgres service in compose project '$project'; $hint"
minio="$(compose_container "$project" minio)" || die "no running minio service in compose project '$project'; $hint"

# User and database as the container was configured.
container_env() {
    docker inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$1" |
        sed -n "s/^$2=//p" | head -n 1
}
db_user="$(container_env "$pg" POSTGRES_USER)"
db_user="${db_user:-postgres}"
db_name="$(container_env "$pg" POSTGRES_DB)"
db_name="${db_name:-$db_user}"

log "waiting for PostgreSQL in $(docker inspect -f '{{.Name}}' "$pg" | sed 's#^/##')"
wait_for_postgres "$pg" "$db_user" "$db_name" 120

# Twelve schedules, each with a PDF whose object key is also written into the volume below.
docker exec -i "$pg" psql -X -q -v ON_ERROR_STOP=1 -U "$db_user" -d "$db_name" <<'SQL'
SET client_min_messages = warning;
BEGIN;
DROP SCHEMA IF EXISTS audit CASCADE;
DROP TABLE IF EXISTS public.schedule_pdfs, public.shifts, public.schedules, public.employees CASCADE;
DROP TYPE IF EXISTS public.shift_kind;

CREATE TYPE public.shift_kind AS ENUM ('early', 'late', 'night', 'on_call');

CREATE TABLE public.employees (
    id          serial PRIMARY KEY,
    full_name   text NOT NULL,
    email       text UNIQUE,
    notes       text,
    avatar      bytea,
    hired_on    date NOT NULL
);

INSERT INTO public.employees (full_name, email, notes, avatar, hired_on) VALUES
    ('Anna Schmidt', 'anna@example.com', NULL, NULL, '2019-04-01'),
    ('Jürgen Müller', 'juergen@example.com', E'prefers\tearly shifts\nno nights', NULL, '2020-01-15'),
    ('Zoë O''Neil', 'zoe@example.com', E'path: C:\\schedules\\zoe', '\x89504e470d0a1a0a0000000d49484452'::bytea, '2021-06-30'),
    ('李小龍', NULL, 'unicode name, no email 🚀', NULL, '2022-11-11'),
    ('Empty Notes', 'empty@example.com', '', '\x'::bytea, '2023-02-28'),
    ('Multi Line', 'multi@example.com', E'line 1\r\nline 2\n\\N is text here', NULL, '2024-07-04');

CREATE TABLE public.schedules (
    id          serial PRIMARY KEY,
    title       text NOT NULL,
    week_start  date NOT NULL,
    published   boolean NOT NULL DEFAULT false,
    settings    jsonb
);

INSERT INTO public.schedules (title, week_start, published, settings)
SELECT 'Week ' || to_char(d, 'IYYY-"W"IW'),
       d::date,
       i <= 9,
       CASE WHEN i % 4 = 0 THEN NULL
            ELSE jsonb_build_object('min_staff', 2 + i % 3, 'note', E'auto-generated\tv' || i) END
FROM generate_series(1, 12) AS i,
     LATERAL (SELECT date '2024-09-02' + (i - 1) * 7 AS d) AS w;

CREATE TABLE public.shifts (
    id           bigserial PRIMARY KEY,
    schedule_id  integer NOT NULL REFERENCES public.schedules (id) ON DELETE CASCADE,
    employee_id  integer REFERENCES public.employees (id),
    kind         public.shift_kind NOT NULL,
    starts_at    timestamptz NOT NULL,
    comment      text
);

INSERT INTO public.shifts (schedule_id, employee_id, kind, starts_at, comment)
SELECT s.id,
       CASE WHEN n % 9 = 0 THEN NULL ELSE (n % 6) + 1 END,
       (ARRAY['early', 'late', 'night', 'on_call'])[n % 4 + 1]::public.shift_kind,
       s.week_start + (n % 7) * interval '1 day' + (6 + (n % 4) * 8) * interval '1 hour',
       CASE WHEN n % 5 = 0 THEN NULL ELSE md5(s.id || '-' || n) END
FROM public.schedules AS s, generate_series(1, 20) AS n;

CREATE TABLE public.schedule_pdfs (
    id           serial PRIMARY KEY,
    schedule_id  integer NOT NULL REFERENCES public.schedules (id) ON DELETE CASCADE,
    bucket       text NOT NULL DEFAULT 'schedgen-pdfs',
    object_key   text NOT NULL UNIQUE,
    sha256       text
);

INSERT INTO public.schedule_pdfs (schedule_id, object_key)
SELECT id, 'schedules/' || to_char(week_start, 'YYYY/MM') || '/schedule-' || id || '.pdf'
FROM public.schedules ORDER BY id;

CREATE SCHEMA audit;

CREATE TABLE audit.events (
    id          bigserial PRIMARY KEY,
    actor       text,
    action      text NOT NULL,
    detail      jsonb,
    at          timestamptz NOT NULL DEFAULT now()
);

INSERT INTO audit.events (actor, action, detail, at)
SELECT CASE WHEN i % 7 = 0 THEN NULL ELSE 'user' || (i % 6 + 1) END,
       (ARRAY['login', 'publish', 'export_pdf', 'edit_shift'])[i % 4 + 1],
       jsonb_build_object('i', i, 'ip', '192.0.2.' || (i % 250)),
       timestamptz '2024-09-01 00:00:00+00' + i * interval '17 minutes'
FROM generate_series(1, 150) AS i;
COMMIT;
SQL

rows="$(docker exec "$pg" psql -X -qtA -U "$db_user" -d "$db_name" -c "
    SELECT (SELECT count(*) FROM public.employees) + (SELECT count(*) FROM public.schedules)
         + (SELECT count(*) FROM public.shifts) + (SELECT count(*) FROM public.schedule_pdfs)
         + (SELECT count(*) FROM audit.events)")"
keys="$(docker exec "$pg" psql -X -qtA -U "$db_user" -d "$db_name" \
    -c "SELECT object_key FROM public.schedule_pdfs ORDER BY id")"

# Fake PDFs (a %PDF-1.4 header, random bytes, %%EOF) at the keys above, plus a few other
# files laid out like MinIO's data directory. Some files owned by 1000:1000 with mode 0640
# so that a restore can be checked for ownership and modes.
printf '%s\n' "$keys" | docker exec -i "$minio" sh -euc '
    root=/data
    rm -rf "$root/schedgen-pdfs" "$root/.minio.sys"
    mkdir -p "$root/.minio.sys/buckets/schedgen-pdfs" "$root/schedgen-pdfs/exports/2024 Q3"
    printf "{\"version\":\"1\",\"format\":\"fs\",\"fs\":{\"version\":\"2\"}}\n" >"$root/.minio.sys/format.json"
    printf "{\"name\":\"schedgen-pdfs\",\"created\":\"2024-09-01T00:00:00Z\"}\n" \
        >"$root/.minio.sys/buckets/schedgen-pdfs/.metadata.json"
    fake_pdf() { # fake_pdf FILE KIB
        {
            printf "%%PDF-1.4\n%%\342\343\317\323\n"
            head -c "$(($2 * 1024))" /dev/urandom
            printf "\n%%%%EOF\n"
        } >"$1"
    }
    n=0
    while IFS= read -r key; do
        [ -n "$key" ] || continue
        n=$((n + 1))
        mkdir -p "$root/schedgen-pdfs/$(dirname "$key")"
        fake_pdf "$root/schedgen-pdfs/$key" $((2 + n % 5 * 3))
    done
    fake_pdf "$root/schedgen-pdfs/exports/2024 Q3/all schedules.pdf" 24
    fake_pdf "$root/schedgen-pdfs/exports/2024 Q3/private.pdf" 3
    chown -R 1000:1000 "$root/schedgen-pdfs/exports"
    chmod 0640 "$root/schedgen-pdfs/exports/2024 Q3/private.pdf"
    chmod 0750 "$root/schedgen-pdfs/exports/2024 Q3"
'
files="$(docker exec "$minio" sh -c 'find /data -type f | wc -l')"
kib="$(docker exec "$minio" sh -c 'du -sk /data | cut -f1')"
volume="$(docker inspect -f '{{range .Mounts}}{{if eq .Destination "/data"}}{{.Name}}{{end}}{{end}}' "$minio")"
log "seeded database $db_name: $rows rows (public + audit schemas); volume ${volume:-?}: $files files, ${kib} KiB"
