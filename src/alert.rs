//! Alerts that always go out. (stub)
