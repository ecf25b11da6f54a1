//! Benchmark driver for `scripts/bench-verify.sh` (and a handy manual check).
//!
//! ```text
//! verify_bench verify FILE...            # .sql.gz -> dump checks, anything else -> tar
//! verify_bench gzip LEVEL INPUT OUTPUT   # ParallelGzEncoder
//! ```
use std::fs::File;
use std::io::{self, BufReader, BufWriter};
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use predeploy_backup::archive::gzip::ParallelGzEncoder;
use predeploy_backup::archive::verify::{verify_file, Expect};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("verify") if args.len() > 1 => verify(&args[1..]),
        Some("gzip") if args.len() == 4 => match gzip(&args[1], &args[2], &args[3]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("gzip failed: {e}");
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!("usage: verify_bench verify FILE... | verify_bench gzip LEVEL INPUT OUTPUT");
            ExitCode::from(2)
        }
    }
}

fn verify(paths: &[String]) -> ExitCode {
    let mut ok = true;
    for p in paths {
        let expect = if p.ends_with(".sql.gz") {
            Expect::SqlDump
        } else {
            Expect::Tar
        };
        let started = Instant::now();
        let r = verify_file(Path::new(p), expect, 0);
        let secs = started.elapsed().as_secs_f64();
        let checks: Vec<&str> = r.passed.iter().map(|c| c.as_str()).collect();
        println!(
            "{p}: {} bytes in {secs:.3} s ({:.0} MB/s)",
            r.size,
            r.size as f64 / secs / 1e6
        );
        println!("  passed: {}", checks.join(", "));
        if let Some(f) = &r.failure {
            println!("  FAILED {}: {}", f.check.as_str(), f.message);
            ok = false;
        }
        if let Some(s) = &r.sha256 {
            println!("  sha256: {s}");
        }
        if let Some(sql) = &r.sql {
            let rows: u64 = sql.tables.values().sum();
            println!(
                "  dump: server {:?}, pg_dump {:?}, {} tables, {rows} rows",
                sql.server_version,
                sql.dump_version,
                sql.tables.len()
            );
        }
        if let Some(t) = &r.tar {
            println!(
                "  tar: {} entries, {} bytes in files",
                t.entries, t.total_bytes
            );
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn gzip(level: &str, input: &str, output: &str) -> io::Result<()> {
    let level: u32 = level
        .parse()
        .map_err(|_| io::Error::other("LEVEL must be 0-9"))?;
    let mut reader = BufReader::with_capacity(1 << 20, File::open(input)?);
    let out = BufWriter::with_capacity(1 << 20, File::create(output)?);
    let mut gz = ParallelGzEncoder::new(out, level);
    io::copy(&mut reader, &mut gz)?;
    gz.finish()?;
    Ok(())
}
