//! Benchmark driver for `scripts/bench-verify.sh` (and a handy manual check).
//!
//! ```text
//! verify_bench verify FILE...            # verify_file, one after the other (as a backup does): .sql.gz -> dump checks, else tar
//! verify_bench gzip LEVEL INPUT OUTPUT   # ParallelGzEncoder
//! verify_bench parts FILE.gz FILE        # time each stage alone (inflate, scan, hash)
//! verify_bench tune FILE                 # encoder size/speed per level and chunk size
//! ```
use std::fs::File;
use std::io::{self, BufReader, BufWriter};
use std::path::PathBuf;
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
        Some("parts") if args.len() == 3 => parts(&args[1], &args[2]),
        Some("tune") if args.len() == 2 => tune(&args[1]),
        _ => {
            eprintln!("usage: verify_bench verify FILE... | verify_bench gzip LEVEL INPUT OUTPUT");
            ExitCode::from(2)
        }
    }
}

fn verify(paths: &[String]) -> ExitCode {
    let mut ok = true;
    let files: Vec<(PathBuf, Expect, u64)> = paths
        .iter()
        .map(|p| {
            let expect = if p.ends_with(".sql.gz") {
                Expect::SqlDump
            } else {
                Expect::Tar
            };
            (PathBuf::from(p), expect, 0)
        })
        .collect();
    let started = Instant::now();
    let reports: Vec<_> = files
        .iter()
        .map(|(p, e, m)| verify_file(p, *e, *m))
        .collect();
    let secs = started.elapsed().as_secs_f64();
    let total: u64 = reports.iter().map(|r| r.size).sum();
    println!("{} file(s), {total} bytes in {secs:.3} s", reports.len());
    for r in &reports {
        let checks: Vec<&str> = r.passed.iter().map(|c| c.as_str()).collect();
        println!("{}: {} bytes", r.path.display(), r.size);
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

/// Each stage of the verification alone, single-threaded, from memory.
fn parts(gz_path: &str, raw_path: &str) -> ExitCode {
    use predeploy_backup::archive::{inflate, sql::SqlScanner, tarwalk::TarWalker};
    let gz = std::fs::read(gz_path).expect("read gz");
    let raw = std::fs::read(raw_path).expect("read raw");
    let mb = |n: usize, t: Instant| n as f64 / t.elapsed().as_secs_f64() / 1e6;

    for size in [64 << 10, 256 << 10, 1 << 20, 4 << 20] {
        let mut best = 0f64;
        for _ in 0..3 {
            let t = Instant::now();
            let mut out = vec![0u8; size];
            let stats = inflate::decode(&mut &gz[..], &mut out, &mut |_| true).expect("inflate");
            best = best.max(mb(stats.uncompressed as usize, t));
        }
        println!(
            "inflate+crc, {} KiB out: {best:.0} MB/s of output",
            size >> 10
        );
    }

    let t = Instant::now();
    let c = crc32fast::hash(&raw);
    println!("crc32: {:.0} MB/s ({c:08x})", mb(raw.len(), t));

    let t = Instant::now();
    let mut s = SqlScanner::new();
    for chunk in raw.chunks(256 * 1024) {
        s.feed(chunk);
    }
    let scan = s.finish();
    println!(
        "sql scan: {:.0} MB/s ({} lines)",
        mb(raw.len(), t),
        scan.lines
    );

    let t = Instant::now();
    let mut w = TarWalker::new();
    for chunk in raw.chunks(256 * 1024) {
        let _ = w.feed(chunk, &mut |_| Ok(()));
    }
    let _ = w.finish();
    println!("tar walk: {:.0} MB/s", mb(raw.len(), t));

    let t = Instant::now();
    let h = predeploy_backup::archive::hash::sha256_hex(&gz);
    println!("sha256: {:.0} MB/s ({})", mb(gz.len(), t), &h[..8]);
    ExitCode::SUCCESS
}

/// ParallelGzEncoder output size and time for a few levels and chunk sizes.
fn tune(path: &str) -> ExitCode {
    use std::io::Write;
    let data = std::fs::read(path).expect("read");
    let single = {
        let t = Instant::now();
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        e.write_all(&data).unwrap();
        let n = e.finish().unwrap().len();
        println!(
            "flate2 one stream, level 6: {n} bytes, {:.2} s",
            t.elapsed().as_secs_f64()
        );
        n
    };
    for level in [6, 7, 8, 9] {
        for chunk in [1usize << 20, 2 << 20, 4 << 20] {
            let t = Instant::now();
            let mut e = ParallelGzEncoder::with_options(Vec::new(), level, 0, chunk);
            e.write_all(&data).unwrap();
            let n = e.finish().unwrap().len();
            println!(
                "level {level}, {} MiB chunks: {n} bytes ({:.4} of one stream), {:.2} s",
                chunk >> 20,
                n as f64 / single as f64,
                t.elapsed().as_secs_f64()
            );
        }
    }
    ExitCode::SUCCESS
}
