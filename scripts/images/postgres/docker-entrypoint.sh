#!/usr/bin/env bash
# Entrypoint of the local test image predeploy-test/postgres:15 (built by scripts/images.sh).
# Behaves like the official `postgres` image for what the tests and the demo use:
#   POSTGRES_USER (default postgres), POSTGRES_PASSWORD (required unless
#   POSTGRES_HOST_AUTH_METHOD=trust), POSTGRES_DB (default = user), *_FILE variants,
#   POSTGRES_INITDB_ARGS, POSTGRES_HOST_AUTH_METHOD (default scram-sha-256),
#   /docker-entrypoint-initdb.d/*.sh|*.sql|*.sql.gz on first start,
#   `docker run IMAGE -c fsync=off` (arguments starting with '-' go to postgres).
# Auth: unix socket `trust` (so `docker exec C psql -U user -d db` works), TCP
# `scram-sha-256`, listening on *:5432, data in $PGDATA (/var/lib/postgresql/data).
# Unlike the official image, the temporary server used during initialisation listens on
# a private socket directory only, so `docker exec C pg_isready` never reports the
# init-time server as ready.
set -Eeo pipefail

# file_env VAR [DEFAULT]: VAR or the content of the file named by VAR_FILE.
file_env() {
    local var="$1" fileVar="${1}_FILE" def="${2:-}"
    if [[ -n "${!var:-}" && -n "${!fileVar:-}" ]]; then
        echo >&2 "error: both $var and $fileVar are set (but are exclusive)"
        exit 1
    fi
    local val="$def"
    if [[ -n "${!var:-}" ]]; then
        val="${!var}"
    elif [[ -n "${!fileVar:-}" ]]; then
        val="$(<"${!fileVar}")"
    fi
    export "$var"="$val"
    unset "$fileVar"
}

want_help() {
    local arg
    for arg; do
        case "$arg" in
        -'?' | --help | --describe-config | -V | --version) return 0 ;;
        esac
    done
    return 1
}

init_database() {
    file_env POSTGRES_PASSWORD
    file_env POSTGRES_USER postgres
    file_env POSTGRES_DB "$POSTGRES_USER"
    file_env POSTGRES_INITDB_ARGS
    local auth="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"

    if [[ -z "$POSTGRES_PASSWORD" && "$auth" != trust ]]; then
        cat >&2 <<'EOM'
Error: Database is uninitialized and superuser password is not specified.
       You must specify POSTGRES_PASSWORD to a non-empty value for the
       superuser. For example, "-e POSTGRES_PASSWORD=password" on "docker run".
       (or POSTGRES_HOST_AUTH_METHOD=trust to allow all connections without one)
EOM
        exit 1
    fi

    local pwargs=()
    local pwfile=""
    if [[ -n "$POSTGRES_PASSWORD" ]]; then
        pwfile="$(mktemp)"
        printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
        pwargs=(--pwfile="$pwfile")
    fi
    # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a word list, as in the official image
    initdb --username="$POSTGRES_USER" "${pwargs[@]}" -D "$PGDATA" \
        --encoding=UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host="$auth" \
        $POSTGRES_INITDB_ARGS
    if [[ -n "$pwfile" ]]; then
        rm -f "$pwfile"
    fi

    printf '\nhost all all all %s\n' "$auth" >>"$PGDATA/pg_hba.conf"
    printf "\nlisten_addresses = '*'\n" >>"$PGDATA/postgresql.conf"

    # Temporary server: no TCP, socket in a private directory.
    local sockdir
    sockdir="$(mktemp -d /tmp/pg-init.XXXXXX)"
    pg_ctl -D "$PGDATA" -w -o "-c listen_addresses='' -c unix_socket_directories=$sockdir" start

    export PGHOST="$sockdir" PGPORT=5432 PGUSER="$POSTGRES_USER" PGPASSWORD="$POSTGRES_PASSWORD"
    local psql=(psql -X -v ON_ERROR_STOP=1 --no-password)

    if [[ "$POSTGRES_DB" != postgres ]]; then
        local exists
        exists="$("${psql[@]}" --dbname postgres --set db="$POSTGRES_DB" --tuples-only --no-align <<'EOSQL'
SELECT 1 FROM pg_database WHERE datname = :'db';
EOSQL
)"
        if [[ -z "$exists" ]]; then
            "${psql[@]}" --dbname postgres --set db="$POSTGRES_DB" <<'EOSQL'
CREATE DATABASE :"db";
EOSQL
        fi
    fi

    local f
    shopt -s nullglob
    for f in /docker-entrypoint-initdb.d/*; do
        case "$f" in
        *.sh)
            if [[ -x "$f" ]]; then
                echo "$0: running $f"
                "$f"
            else
                echo "$0: sourcing $f"
                # shellcheck disable=SC1090
                . "$f"
            fi
            ;;
        *.sql)
            echo "$0: running $f"
            "${psql[@]}" --dbname "$POSTGRES_DB" -f "$f"
            ;;
        *.sql.gz)
            echo "$0: running $f"
            gunzip -c "$f" | "${psql[@]}" --dbname "$POSTGRES_DB"
            ;;
        *) echo "$0: ignoring $f" ;;
        esac
    done
    shopt -u nullglob

    pg_ctl -D "$PGDATA" -m fast -w stop
    rm -rf "$sockdir"
    unset PGHOST PGPORT PGUSER PGPASSWORD
    echo
    echo 'PostgreSQL init process complete; ready for start up.'
    echo
}

if [[ "${1:0:1}" == '-' ]]; then
    set -- postgres "$@"
fi

if [[ "$1" == postgres ]] && ! want_help "$@"; then
    if [[ "$(id -u)" == 0 ]]; then
        mkdir -p "$PGDATA" /var/run/postgresql
        # Only touch what is not ours yet (a big data dir stays fast to start).
        find "$PGDATA" \! -user postgres -exec chown postgres:postgres '{}' +
        chmod 0700 "$PGDATA"
        chown postgres:postgres /var/run/postgresql
        chmod 03775 /var/run/postgresql
        # Drop to the postgres user and run this script again (setpriv execs: no extra
        # process stays around, postgres gets the signals directly).
        exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
    fi
    if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
        init_database
    else
        echo 'PostgreSQL Database directory appears to contain a database; skipping initialization'
    fi
fi

exec "$@"
