//! pg_dump plain-format scanner. (stub)
