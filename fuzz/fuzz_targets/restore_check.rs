//! The restore pre-check on arbitrary bytes must never panic; gzip'd and raw input must get
//! the same verdict.
//!
//! The first byte picks the mode: the rest is a `.tar.gz` as-is, or a raw tar that is
//! checked both directly (`check_tar`) and after gzip (`check_archive`).
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use predeploy_backup::archive::restore::{check_archive, check_tar};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode & 1 == 0 {
        let _ = check_archive(rest, predeploy_backup::archive::codec::Codec::Gzip, "fuzz.tar.gz");
        return;
    }
    let raw = check_tar(rest, "fuzz.tar");
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(1));
    e.write_all(rest).unwrap();
    let gz = e.finish().unwrap();
    let via_gz = check_archive(&gz[..], predeploy_backup::archive::codec::Codec::Gzip, "fuzz.tar");
    assert_eq!(raw.as_ref().ok(), via_gz.as_ref().ok());
    assert_eq!(
        raw.as_ref().err().map(|e| e.to_string()),
        via_gz.as_ref().err().map(|e| e.to_string())
    );
    if let Ok(plan) = raw {
        assert!(plan.files + plan.dirs + plan.symlinks + plan.hardlinks <= plan.entries);
    }
});
