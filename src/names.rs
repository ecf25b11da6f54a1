//! Names and revisions read from a manifest are data, never syntax.
//!
//! A manifest is only as trusted as whoever could write it (an artifact upload, the backup
//! folder), so every name rollback takes from it is checked here before it reaches libpq, the
//! Docker API or a step output:
//!
//! - PostgreSQL database and user names: 1..=63 bytes of `[A-Za-z0-9_.-]`, not starting with
//!   `-` (stricter than PostgreSQL, which allows almost anything quoted: no `=`, space, quote or
//!   `/` can reach a connection string). Rename such a database, or name it in `postgres-db`.
//! - Docker container, volume and compose names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 255 bytes.
//! - A commit: 40 or 64 hexadecimal digits. A branch: a git ref name (`git check-ref-format`
//!   rules, no control characters, at most 255 bytes).

/// Whether `s` is a database or user name rollback accepts from a manifest.
pub fn is_pg_name(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && !s.starts_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Whether `s` is a Docker container, volume or compose name.
pub fn is_docker_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 255
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// Whether `s` is a full commit id (SHA-1 or SHA-256).
pub fn is_commit(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether `s` is a branch name by `git check-ref-format --branch` rules.
pub fn is_branch(s: &str) -> bool {
    if s.is_empty()
        || s.len() > 255
        || s == "@"
        || s.starts_with('-')
        || s.starts_with('/')
        || s.ends_with('/')
        || s.ends_with('.')
        || s.contains("..")
        || s.contains("@{")
        || s.contains("//")
    {
        return false;
    }
    if s.bytes().any(|b| {
        b < 0x20 || b == 0x7f || matches!(b, b' ' | b'~' | b'^' | b':' | b'?' | b'*' | b'[' | b'\\')
    }) {
        return false;
    }
    s.split('/')
        .all(|c| !c.starts_with('.') && !c.ends_with(".lock"))
}

/// A libpq connection-string value: `'…'` with `\` and `'` escaped, so that nothing in it is
/// read as another keyword.
pub fn conninfo_value(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `s` for a message: at most 80 characters, control characters escaped.
pub fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(80).flat_map(char::escape_debug).collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["appdb", "app_db-2", "a.b", "A"] {
            assert!(is_pg_name(ok), "{ok}");
        }
        for bad in [
            "",
            "host=127.0.0.1 port=5 dbname=appdb",
            "postgres://x",
            "a b",
            "-a",
            "a'b",
            "a\"b",
            "a\0b",
            &"x".repeat(64),
        ] {
            assert!(!is_pg_name(bad), "{bad}");
        }
        assert!(is_docker_name("my-app_db.1"));
        for bad in ["", "-x", ".x", "a/b", "../x", "a b", "a?b"] {
            assert!(!is_docker_name(bad), "{bad}");
        }
    }

    #[test]
    fn revisions() {
        assert!(is_commit("0123456789abcdef0123456789abcdef01234567"));
        assert!(is_commit(&"a".repeat(64)));
        assert!(!is_commit("0123456789abcdef0123456789abcdef0123456\n"));
        assert!(!is_commit("main"));
        for ok in ["main", "release/2024.11", "feature/x-y_z", "v1.2"] {
            assert!(is_branch(ok), "{ok}");
        }
        for bad in [
            "",
            "main\n::error::x",
            "a..b",
            "a b",
            "-x",
            "x.lock",
            "a/.b",
            "a~1",
            "x/",
            "@",
            "a@{1}",
            "a\\b",
        ] {
            assert!(!is_branch(bad), "{bad}");
        }
    }

    #[test]
    fn conninfo_quoting() {
        assert_eq!(conninfo_value("a b"), "'a b'");
        assert_eq!(conninfo_value("it's\\"), "'it\\'s\\\\'");
    }
}
