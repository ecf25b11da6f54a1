//! One file per mode. (stub)
