//! Builders for the archive tests: realistic pg_dump text, gzip, tar, a tiny PRNG.

use std::io::Write;

/// xorshift64*: deterministic, no dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

/// gzip (one member) at level 6.
pub fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A pg_dump plain-format dump. `tables`: (qualified name as pg_dump writes it, rows).
/// With `restrict`, the pg_dump 17.6+ `\restrict`/`\unrestrict` lines are included.
pub fn dump_text(tables: &[(&str, usize)], restrict: Option<&str>) -> Vec<u8> {
    let mut s = String::new();
    s.push_str("--\n-- PostgreSQL database dump\n--\n\n");
    if let Some(k) = restrict {
        s.push_str(&format!("\\restrict {k}\n\n"));
    }
    s.push_str("-- Dumped from database version 16.4 (Debian 16.4-1.pgdg120+2)\n");
    s.push_str("-- Dumped by pg_dump version 16.4 (Debian 16.4-1.pgdg120+2)\n\n");
    s.push_str(
        "SET statement_timeout = 0;\nSET lock_timeout = 0;\nSET client_encoding = 'UTF8';\n",
    );
    s.push_str("SELECT pg_catalog.set_config('search_path', '', false);\n\n");
    // A function whose body has a line that looks like a COPY statement.
    s.push_str("--\n-- Name: f(); Type: FUNCTION; Schema: public; Owner: app\n--\n\n");
    s.push_str("CREATE FUNCTION public.f() RETURNS text\n    LANGUAGE sql\n    AS $$\nSELECT 'x';\nCOPY public.not_a_table (a) FROM stdin;\n$$;\n\n");
    for (i, (name, _)) in tables.iter().enumerate() {
        s.push_str(&format!(
            "--\n-- Name: t{i}; Type: TABLE; Schema: public; Owner: app\n--\n\nCREATE TABLE {name} (\n    id integer NOT NULL,\n    body text\n);\n\n"
        ));
    }
    for (i, (name, rows)) in tables.iter().enumerate() {
        s.push_str(&format!(
            "--\n-- Data for Name: t{i}; Type: TABLE DATA; Schema: public; Owner: app\n--\n\nCOPY {name} (id, body) FROM stdin;\n"
        ));
        for r in 0..*rows {
            match r % 5 {
                0 => s.push_str(&format!("{r}\tplain text row {r}\n")),
                1 => s.push_str(&format!(
                    "{r}\tescaped\\ttab\\nnewline and a backslash \\\\ here\n"
                )),
                2 => s.push_str("\\\\.\n"), // the value `\.`: not the end of the block
                3 => s.push_str(&format!("{r}\t\\N\n")),
                _ => s.push_str(&format!("{r}\t-- PostgreSQL database dump complete\n")),
            }
        }
        s.push_str("\\.\n\n\n");
    }
    s.push_str("--\n-- Name: t0 t0_pkey; Type: CONSTRAINT; Schema: public; Owner: app\n--\n\n");
    s.push_str("ALTER TABLE ONLY public.t0\n    ADD CONSTRAINT t0_pkey PRIMARY KEY (id);\n\n\n");
    s.push_str("--\n-- PostgreSQL database dump complete\n--\n\n");
    if let Some(k) = restrict {
        s.push_str(&format!("\\unrestrict {k}\n\n"));
    }
    s.into_bytes()
}

/// A tar built with the `tar` crate (GNU headers).
pub fn tar_of(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    build(&mut b);
    b.into_inner().unwrap()
}

/// A GNU header for `path` of `kind` with `size` bytes, checksum set.
pub fn header(path: &str, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_path(path).unwrap();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    h
}

/// A raw 512-byte ustar header with `name` written verbatim (no validation), checksum set.
pub fn raw_header(name: &[u8], typeflag: u8, size: u64, link: &[u8]) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"14540000000\0");
    h[156] = typeflag;
    h[157..157 + link.len().min(100)].copy_from_slice(&link[..link.len().min(100)]);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    set_cksum(&mut h);
    h
}

pub fn set_cksum(h: &mut [u8; 512]) {
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

/// Appends a header and its data (padded to 512) to a raw tar.
pub fn push(tar: &mut Vec<u8>, h: &[u8; 512], data: &[u8]) {
    tar.extend_from_slice(h);
    tar.extend_from_slice(data);
    let pad = (512 - data.len() % 512) % 512;
    tar.extend(std::iter::repeat_n(0u8, pad));
}

/// A PAX record `"<len> key=value\n"`.
pub fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body_len = key.len() + value.len() + 3; // space, '=', '\n'
    let mut len = body_len + 1;
    while format!("{len}").len() + body_len != len {
        len += 1;
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

/// Ends a raw tar with the two zero blocks.
pub fn end(tar: &mut Vec<u8>) {
    tar.extend(std::iter::repeat_n(0u8, 1024));
}
