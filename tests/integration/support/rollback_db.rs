//! A database fingerprint for the rollback tests: [`super::docker::Pg::fingerprint`]'s
//! content (per-table row counts and content checksums, sequence values, schema objects)
//! plus every column with its type, so that an added or dropped column is a difference too.
//!
//! Written here because `Pg::fingerprint_of` currently fails on PostgreSQL 15 with
//! `operator is not unique: text || "char"` (`c.relkind` and `t.typtype` are of type
//! `"char"` and need a `::text` cast); once the harness is fixed this can call it and only
//! add the columns.

use super::docker::{ident, literal, DbFingerprint, Pg};

const USER_SCHEMAS: &str =
    "NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND {} NOT LIKE 'pg_temp%' AND {} NOT LIKE 'pg_toast_temp%'";

fn cond(col: &str) -> String {
    format!("{col} {}", USER_SCHEMAS.replace("{}", col))
}

/// The fingerprint of the test database of `pg`.
pub fn fingerprint(pg: &Pg) -> DbFingerprint {
    fingerprint_of(pg, &pg.db)
}

/// The fingerprint of database `db` in `pg`'s server.
pub fn fingerprint_of(pg: &Pg, db: &str) -> DbFingerprint {
    let mut fp = DbFingerprint::default();
    let tables = pg.psql_in(
        db,
        &format!(
            "SELECT schemaname, tablename FROM pg_tables WHERE {} ORDER BY 1, 2",
            cond("schemaname")
        ),
    );
    let mut selects = vec![];
    for line in tables.lines().filter(|l| !l.is_empty()) {
        let (schema, table) = line.split_once('\u{1f}').expect("schema\\x1ftable");
        selects.push(format!(
            "SELECT {}, count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) FROM {}.{} AS t",
            literal(&format!("{schema}.{table}")),
            ident(schema),
            ident(table)
        ));
    }
    if !selects.is_empty() {
        for line in pg.psql_in(db, &selects.join(" UNION ALL ")).lines() {
            let parts: Vec<&str> = line.split('\u{1f}').collect();
            if let [name, count, md5] = parts[..] {
                fp.tables
                    .insert(name.to_string(), (count.parse().unwrap(), md5.to_string()));
            }
        }
    }
    for line in pg
        .psql_in(
            db,
            &format!(
                "SELECT schemaname || '.' || sequencename, coalesce(last_value::text, 'not called') FROM pg_sequences WHERE {} ORDER BY 1",
                cond("schemaname")
            ),
        )
        .lines()
    {
        if let Some((k, v)) = line.split_once('\u{1f}') {
            fp.sequences.insert(k.to_string(), v.to_string());
        }
    }
    let objects = pg.psql_in(
        db,
        &format!(
            "SELECT n.nspname || '.' || c.relname || ' ' || c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {n} \
             UNION ALL SELECT n.nspname || '.' || p.proname || '()' FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE {n} \
             UNION ALL SELECT n.nspname || '.' || t.typname || ' type ' || t.typtype::text FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE t.typtype = 'e' AND {n} \
             UNION ALL SELECT 'comment on ' || c.relname || ': ' || d.description FROM pg_description d JOIN pg_class c ON c.oid = d.objoid AND d.classoid = 'pg_class'::regclass JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {n} \
             UNION ALL SELECT 'column ' || table_schema || '.' || table_name || '.' || column_name || ' ' || data_type || ' null=' || is_nullable || ' default=' || coalesce(column_default, '') FROM information_schema.columns WHERE {s} \
             ORDER BY 1",
            n = cond("n.nspname"),
            s = cond("table_schema"),
        ),
    );
    fp.objects = objects.lines().map(String::from).collect();
    fp
}
