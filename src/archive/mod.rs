//! The bytes we write and read back: gzip streams, pg_dump plain SQL, tar archives.
//!
//! Everything here is synchronous and streaming (constant memory whatever the input size):
//! callers run it on a blocking thread and bridge it to async Docker/HTTP streams.
//! Nothing in this module touches Docker or the network, which is what makes it fuzzable.

pub mod gzip;
pub mod hash;
pub mod restore;
pub mod sql;
pub mod verify;
