//! A database fingerprint for the rollback tests: [`Pg::fingerprint_of`] (per-table row
//! counts and content checksums, sequence values, schema objects) plus every column with its
//! type, nullability and default, so that an added or dropped column is a difference too.

use super::docker::{DbFingerprint, Pg};

/// The fingerprint of the test database of `pg`.
pub fn fingerprint(pg: &Pg) -> DbFingerprint {
    fingerprint_of(pg, &pg.db)
}

/// The fingerprint of database `db` in `pg`'s server.
pub fn fingerprint_of(pg: &Pg, db: &str) -> DbFingerprint {
    let mut fp = pg.fingerprint_of(db);
    let columns = pg.psql_in(
        db,
        "SELECT 'column ' || table_schema || '.' || table_name || '.' || column_name || ' ' || data_type \
                || ' null=' || is_nullable || ' default=' || coalesce(column_default, '') \
         FROM information_schema.columns \
         WHERE table_schema NOT IN ('pg_catalog', 'information_schema', 'pg_toast') \
           AND table_schema NOT LIKE 'pg_temp%' AND table_schema NOT LIKE 'pg_toast_temp%' \
         ORDER BY 1",
    );
    fp.objects.extend(columns.lines().map(String::from));
    fp.objects.sort();
    fp
}
