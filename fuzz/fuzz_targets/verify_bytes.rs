//! `verify_reader` on arbitrary bytes must never panic, and must never report a stream as
//! verified with a SHA-256 other than the stream's own.
//!
//! The first byte picks the mode: the rest is checked as-is (as a `.sql.gz` or `.tar.gz`),
//! or first wrapped in gzip so that the SQL scanner and the tar walker see arbitrary
//! *decompressed* input (random bytes almost never get past the gzip CRC otherwise).
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use predeploy_backup::archive::verify::{verify_reader, Expect};
use sha2::{Digest, Sha256};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let expect = if mode & 1 == 0 { Expect::SqlDump } else { Expect::Tar };
    let wrapped;
    let bytes: &[u8] = if mode & 2 == 0 {
        rest
    } else {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(1));
        e.write_all(rest).unwrap();
        wrapped = e.finish().unwrap();
        &wrapped
    };
    let r = verify_reader(bytes, expect);
    assert_eq!(r.size, bytes.len() as u64);
    if r.verified() {
        assert_eq!(r.sha256.as_deref(), Some(hex::encode(Sha256::digest(bytes)).as_str()));
    } else {
        assert!(r.failure.is_some() && r.sha256.is_none());
    }
});
