//! The bytes we write and read back: gzip streams, pg_dump plain SQL, tar archives.
//!
//! Everything here is synchronous and streaming (constant memory whatever the input size):
//! callers run it on a blocking thread and bridge it to async Docker/HTTP streams.
//! Nothing in this module touches Docker or the network, which is what makes it fuzzable.
//!
//! - [`codec`]: gzip / zstd / none: the writer stack, the strict and the plain reader.
//! - [`gzip`]: the parallel gzip writer used for every backup file.
//! - [`hash`]: SHA-256 while writing or reading.
//! - [`inflate`]: strict multi-member gzip decoding (where exactly a stream is broken).
//! - [`sql`]: the pg_dump plain-format scanner (header, completion, rows per table).
//! - [`tarwalk`]: the strict tar header walker shared by verification and restore.
//! - [`verify`]: what "verified" means, in one streaming pass.
//! - [`restore`]: the pre-restore safety check of a volume archive.

pub mod codec;
pub mod crypt;
pub mod gzip;
pub mod hash;
pub mod inflate;
pub mod restore;
pub mod special;
pub mod sql;
pub mod tarwalk;
pub mod verify;

#[cfg(test)]
pub(crate) mod testutil;
