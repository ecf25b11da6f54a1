//! A streaming scanner for pg_dump's plain-format SQL.
//!
//! [`SqlScanner`] is fed the dump in blocks of any size and any split (a line may span many
//! blocks; the bytes need not be UTF-8) and keeps constant memory: the start of the current
//! line (up to [`LINE_PREFIX`] bytes) and its last bytes, never a whole line. It finds:
//!
//! - pg_dump's header (`--`, `-- PostgreSQL database dump`, `--` as the first three lines);
//! - `-- Dumped from database version X` and `-- Dumped by pg_dump version Y`;
//! - the rows of every `COPY <table> (...) FROM stdin;` block up to its `\.` line (a data line
//!   is `\.` only at the end of a block: COPY text escapes a backslash as `\\`);
//! - the completion comment `-- PostgreSQL database dump complete`, which must be the last
//!   non-blank content. Since pg_dump 17.6 (CVE-2025-8714) a dump has `\restrict <key>` near
//!   the top and `\unrestrict <key>` after the completion block; that line may follow the
//!   completion (with the closing `--` and blank lines), and its key must match.
//!
//! A dump is data, never code for psql (see [`SqlScan::guard`]): outside COPY data, the only
//! lines that may start with a backslash are pg_dump's own `\restrict KEY` (once, before the
//! completion comment) and `\unrestrict KEY` (after it); any other meta-command (`\!`, `\o`,
//! `\c`, `\copy`, `\i`, `\set`, …) is refused. So are `TO PROGRAM` / `FROM PROGRAM` (a shell
//! command run by the server) and `lo_import` / `lo_export` (server files), which pg_dump never
//! writes. The word check runs on every byte outside COPY data, whatever the line length.
//!
//! A `COPY` line counts only where pg_dump writes one: after its `-- Data for Name: ...`
//! comment block (the previous non-blank line is a comment). That keeps a `COPY ... FROM
//! stdin;` line inside a function body from being taken for table data.

use std::collections::BTreeMap;

/// How much of a line the scanner keeps to classify it.
pub const LINE_PREFIX: usize = 64 * 1024;

const HEADER: [&[u8]; 3] = [b"--", b"-- PostgreSQL database dump", b"--"];
const COMPLETE: &[u8] = b"-- PostgreSQL database dump complete";
const FROM_STDIN: &[u8] = b" FROM stdin;";

/// The scanner's verdict, from [`SqlScanner::finish`].
#[derive(Clone, Debug)]
pub struct SqlScan {
    /// `Err(message)` when the dump does not start with pg_dump's header.
    pub header: Result<(), String>,
    /// `Err(message)` when the dump is not complete.
    pub complete: Result<(), String>,
    /// `Err(message)` (naming the line and the rule) when the dump holds something pg_dump
    /// never writes and psql would run as code: a meta-command, `TO PROGRAM`, `lo_import`.
    pub guard: Result<(), String>,
    pub summary: SqlSummary,
    /// Total bytes and lines scanned.
    pub bytes: u64,
    pub lines: u64,
}

impl Default for SqlScanner {
    fn default() -> Self {
        Self::new()
    }
}

/// Feed it the dump with [`SqlScanner::feed`], then call [`SqlScanner::finish`].
pub struct SqlScanner {
    /// The start of the current line (at most `LINE_PREFIX` bytes).
    line: Vec<u8>,
    /// Full length of the current line so far.
    line_len: u64,
    /// The last bytes of the current line (for `FROM stdin;` on very long lines).
    tail: [u8; 16],
    /// 1-based number of the current line.
    line_no: u64,
    bytes: u64,
    header: Option<Result<(), String>>,
    copy: Option<(String, u64, u64)>,
    tables: BTreeMap<String, u64>,
    server_version: Option<String>,
    dump_version: Option<String>,
    restrict_key: Option<String>,
    unrestrict_key: Option<String>,
    /// Line number of the completion comment.
    complete_at: Option<u64>,
    /// The first problem after the completion comment.
    after_complete: Option<String>,
    prev_nonblank_comment: bool,
    /// The last non-blank line (start of it), for "cut short" messages.
    last_nonblank: (u64, Vec<u8>),
    /// The first guard violation.
    guard: Option<String>,
    words: Words,
}

impl SqlScanner {
    pub fn new() -> Self {
        SqlScanner {
            line: Vec::with_capacity(256),
            line_len: 0,
            tail: [0; 16],
            line_no: 1,
            bytes: 0,
            header: None,
            copy: None,
            tables: BTreeMap::new(),
            server_version: None,
            dump_version: None,
            restrict_key: None,
            unrestrict_key: None,
            complete_at: None,
            after_complete: None,
            prev_nonblank_comment: false,
            last_nonblank: (0, Vec::new()),
            guard: None,
            words: Words::default(),
        }
    }

    /// Whether the header has already been seen to be wrong (the rest need not be fed).
    pub fn header_failed(&self) -> bool {
        matches!(self.header, Some(Err(_)))
    }

    /// Feeds the next bytes of the dump.
    pub fn feed(&mut self, data: &[u8]) {
        self.bytes += data.len() as u64;
        let mut pos = 0;
        while pos < data.len() {
            // Fast path: whole lines inside a COPY block, none carried over.
            if self.copy.is_some() && self.line_len == 0 {
                pos = self.copy_lines(data, pos);
                if pos >= data.len() {
                    break;
                }
            }
            match find_newline(&data[pos..]) {
                Some(i) => {
                    self.append(&data[pos..pos + i]);
                    pos += i + 1;
                    self.end_line();
                }
                None => {
                    self.append(&data[pos..]);
                    pos = data.len();
                }
            }
        }
    }

    /// Counts COPY data lines that lie wholly in `data[pos..]`; stops at the block's `\.`
    /// line (handled by `end_line`) or at a line that runs past the end of `data`.
    fn copy_lines(&mut self, data: &[u8], mut pos: usize) -> usize {
        let mut rows = 0u64;
        loop {
            let rest = &data[pos..];
            let Some(i) = find_newline(rest) else { break };
            if i == 2 && rest[0] == b'\\' && rest[1] == b'.' {
                break;
            }
            rows += 1;
            self.line_no += 1;
            pos += i + 1;
        }
        if let Some((_, n, _)) = &mut self.copy {
            *n += rows;
        }
        pos
    }

    fn append(&mut self, part: &[u8]) {
        if self.copy.is_none() && self.guard.is_none() {
            if let Some(rule) = self.words.feed(part) {
                self.refuse(rule);
            }
        }
        if self.line.len() < LINE_PREFIX {
            let n = part.len().min(LINE_PREFIX - self.line.len());
            self.line.extend_from_slice(&part[..n]);
        }
        push_tail(&mut self.tail, part);
        self.line_len += part.len() as u64;
    }

    fn refuse(&mut self, rule: String) {
        if self.guard.is_none() {
            self.guard = Some(format!(
                "line {}: {rule}; pg_dump never writes this, so the file is not a plain dump: refusing to restore it (take a new backup with pg_dump)",
                self.line_no
            ));
        }
    }

    fn end_line(&mut self) {
        if self.copy.is_none() && self.guard.is_none() {
            if let Some(rule) = self.words.feed(b"\n") {
                self.refuse(rule);
            }
        }
        let line = std::mem::take(&mut self.line);
        self.classify(&line);
        self.line = line;
        self.line.clear();
        self.line_len = 0;
        self.line_no += 1;
    }

    fn classify(&mut self, line: &[u8]) {
        let full = self.line_len as usize == line.len();
        if let Some((_, rows, _)) = &mut self.copy {
            if full && line == b"\\." {
                let (name, rows, _) = self.copy.take().expect("in a COPY block");
                *self.tables.entry(name).or_insert(0) += rows;
                self.prev_nonblank_comment = false;
            } else {
                *rows += 1;
            }
            return;
        }
        if self.header.is_none() {
            let i = (self.line_no - 1) as usize;
            if i < 3 && !(full && line == HEADER[i]) {
                self.header = Some(Err(if i == 0 && line.is_empty() && self.line_len == 0 {
                    "the dump starts with an empty line instead of pg_dump's header `-- PostgreSQL database dump`".to_string()
                } else {
                    format!(
                        "line {} is `{}` where pg_dump's header `{}` belongs: this is not a pg_dump plain-format dump",
                        i + 1,
                        shorten(line),
                        String::from_utf8_lossy(HEADER[i])
                    )
                }));
            } else if i == 2 {
                self.header = Some(Ok(()));
            }
        }
        let blank = line.iter().all(|b| b.is_ascii_whitespace());
        if blank {
            return;
        }
        let is_comment = line.starts_with(b"--");

        if let Some(done_line) = self.complete_at {
            // Only the closing `--`, blank lines and `\unrestrict <key>` may follow.
            if self.after_complete.is_some() {
                return;
            }
            if line == b"--" && self.unrestrict_key.is_none() {
                return;
            }
            if let Some(key) = line.strip_prefix(b"\\unrestrict ") {
                if self.unrestrict_key.is_none() && full && is_key(key) {
                    let key = String::from_utf8_lossy(key).trim().to_string();
                    match &self.restrict_key {
                        Some(r) if *r == key => {}
                        Some(_) => {
                            self.after_complete = Some(format!(
                                "the `\\unrestrict` key on line {} does not match the dump's `\\restrict` key: the file mixes two dumps",
                                self.line_no
                            ))
                        }
                        None => {
                            self.after_complete = Some(format!(
                                "line {} has `\\unrestrict` but the dump has no `\\restrict` line",
                                self.line_no
                            ))
                        }
                    }
                    self.unrestrict_key = Some(key);
                    return;
                }
            }
            if line.starts_with(b"\\") {
                self.refuse(format!(
                    "`{}` is a psql meta-command after the completion comment (only `\\unrestrict KEY` may be there)",
                    shorten(&line[..line.len().min(24)])
                ));
            }
            self.after_complete = Some(format!(
                "line {} `{}` follows the completion line (line {}): the file holds more than one complete dump, or was appended to",
                self.line_no,
                shorten(line),
                done_line
            ));
            return;
        }

        if full && line == COMPLETE {
            self.complete_at = Some(self.line_no);
        } else if is_comment {
            if self.server_version.is_none() {
                if let Some(v) = line.strip_prefix(b"-- Dumped from database version ") {
                    self.server_version = Some(version_text(v));
                }
            }
            if self.dump_version.is_none() {
                if let Some(v) = line.strip_prefix(b"-- Dumped by pg_dump version ") {
                    self.dump_version = Some(version_text(v));
                }
            }
        } else if line.starts_with(b"\\") {
            match line.strip_prefix(b"\\restrict ") {
                Some(key) if self.restrict_key.is_none() && full && is_key(key) => {
                    self.restrict_key = Some(String::from_utf8_lossy(key).to_string());
                }
                Some(_) if self.restrict_key.is_some() => {
                    self.refuse("a second `\\restrict` line".to_string())
                }
                _ => self.refuse(format!(
                    "`{}` is a psql meta-command (only pg_dump's own `\\restrict KEY` before the completion comment and `\\unrestrict KEY` after it may start with a backslash outside COPY data)",
                    shorten(&line[..line.len().min(24)])
                )),
            }
        } else if self.prev_nonblank_comment
            && line.starts_with(b"COPY ")
            && self.ends_with_from_stdin(line)
        {
            if let Some(name) = copy_table(&line[5..]) {
                self.tables.entry(name.clone()).or_insert(0);
                self.copy = Some((name, 0, self.line_no));
            }
        }
        self.prev_nonblank_comment = is_comment;
        self.last_nonblank.0 = self.line_no;
        self.last_nonblank.1.clear();
        self.last_nonblank
            .1
            .extend_from_slice(&line[..line.len().min(80)]);
    }

    fn ends_with_from_stdin(&self, line: &[u8]) -> bool {
        if self.line_len as usize == line.len() {
            line.ends_with(FROM_STDIN)
        } else {
            self.tail.ends_with(FROM_STDIN)
        }
    }

    /// The verdict. A last line without a final newline is still scanned.
    pub fn finish(mut self) -> SqlScan {
        if self.line_len > 0 {
            self.end_line();
        }
        let lines = self.line_no - 1;
        let header = match self.header.take() {
            Some(h) => h,
            None if self.bytes == 0 => Err("the dump is empty".to_string()),
            None => Err(format!(
                "the dump ends after {lines} line(s), inside pg_dump's header"
            )),
        };
        let complete = if let Some((table, rows, start)) = &self.copy {
            Err(format!(
                "the dump ends inside the data of table {table} (COPY on line {start}, {rows} rows so far, no `\\.` line): it was cut short while being written; take a new backup"
            ))
        } else if let Some(problem) = &self.after_complete {
            Err(format!("{problem}; take a new backup"))
        } else if self.complete_at.is_none() {
            Err(format!(
                "the completion line `-- PostgreSQL database dump complete` is missing (the last line is {} `{}`): pg_dump was interrupted or failed, or the file was cut short; take a new backup",
                self.last_nonblank.0,
                shorten(&self.last_nonblank.1)
            ))
        } else if self.restrict_key.is_some() && self.unrestrict_key.is_none() {
            Err("the dump has `\\restrict` but its closing `\\unrestrict` line after the completion comment is missing: the file was cut short; take a new backup".to_string())
        } else {
            Ok(())
        };
        SqlScan {
            header,
            complete,
            guard: match self.guard {
                Some(g) => Err(g),
                None => Ok(()),
            },
            summary: SqlSummary {
                server_version: self.server_version,
                dump_version: self.dump_version,
                tables: self.tables,
            },
            bytes: self.bytes,
            lines,
        }
    }
}

/// Keeps the last 16 bytes of a line seen in pieces (`part` appended to `tail`).
fn push_tail(tail: &mut [u8; 16], part: &[u8]) {
    if part.len() >= 16 {
        tail.copy_from_slice(&part[part.len() - 16..]);
    } else if !part.is_empty() {
        tail.copy_within(part.len().., 0);
        tail[16 - part.len()..].copy_from_slice(part);
    }
}

/// Removes pg_dump's own `\restrict KEY` / `\unrestrict KEY` lines from a dump on its way to
/// psql, so that the load can run under a key of ours (blank lines take their place, so line
/// numbers in psql's messages stay right). Lines inside COPY data are passed as they are.
///
/// It only ever blanks such lines: whatever it gets wrong, psql runs no meta-command that was
/// not already there (the scanner refused those), and a line it missed makes the load fail.
#[derive(Default)]
pub struct RestrictFilter {
    /// The current line's first bytes, held back until it is known whether to drop it.
    head: Vec<u8>,
    /// `Some(drop)` once the line's head was judged.
    decided: Option<bool>,
    starts_copy: bool,
    line_len: u64,
    tail: [u8; 16],
    in_copy: bool,
}

const HEAD: usize = 12; // `\unrestrict `

impl RestrictFilter {
    pub fn new() -> Self {
        Self::default()
    }

    /// The filtered form of the next bytes of the dump.
    pub fn feed(&mut self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() + HEAD);
        let mut pos = 0;
        while pos < data.len() {
            if let Some(drop) = self.decided {
                let rest = &data[pos..];
                let (seg, nl) = match find_newline(rest) {
                    Some(i) => (&rest[..i], true),
                    None => (rest, false),
                };
                if !drop {
                    out.extend_from_slice(seg);
                }
                self.track_tail(seg);
                pos += seg.len();
                if nl {
                    self.end_line(&mut out);
                    pos += 1;
                }
                continue;
            }
            let b = data[pos];
            pos += 1;
            if b == b'\n' {
                self.decide(&mut out);
                self.end_line(&mut out);
            } else {
                self.head.push(b);
                self.track_tail(&[b]);
                if self.head.len() == HEAD {
                    self.decide(&mut out);
                }
            }
        }
        out
    }

    /// The held-back start of a last line without a newline.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        self.decide(&mut out);
        out
    }

    fn track_tail(&mut self, part: &[u8]) {
        push_tail(&mut self.tail, part);
        self.line_len += part.len() as u64;
    }

    fn decide(&mut self, out: &mut Vec<u8>) {
        if self.decided.is_some() {
            return;
        }
        let h = &self.head;
        let drop =
            !self.in_copy && (h.starts_with(b"\\restrict ") || h.starts_with(b"\\unrestrict "));
        self.starts_copy = !self.in_copy && h.starts_with(b"COPY ");
        if !drop {
            out.extend_from_slice(h);
        }
        self.decided = Some(drop);
    }

    fn end_line(&mut self, out: &mut Vec<u8>) {
        out.push(b'\n');
        if self.in_copy {
            if self.line_len == 2 && self.tail[14..] == *b"\\." {
                self.in_copy = false;
            }
        } else if self.starts_copy && self.tail.ends_with(FROM_STDIN) {
            self.in_copy = true;
        }
        self.head.clear();
        self.decided = None;
        self.starts_copy = false;
        self.line_len = 0;
        self.tail = [0; 16];
    }
}

/// `schema.table` from what follows `COPY `: identifiers as pg_dump writes them, with the
/// double quotes of quoted identifiers removed (`""` inside becomes `"`).
fn copy_table(s: &[u8]) -> Option<String> {
    let mut parts: Vec<Vec<u8>> = Vec::new();
    let mut i = 0;
    loop {
        let mut part = Vec::new();
        if s.get(i) == Some(&b'"') {
            i += 1;
            loop {
                match s.get(i) {
                    None => return None,
                    Some(b'"') if s.get(i + 1) == Some(&b'"') => {
                        part.push(b'"');
                        i += 2;
                    }
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(&c) => {
                        part.push(c);
                        i += 1;
                    }
                }
            }
        } else {
            while let Some(&c) = s.get(i) {
                if c == b'.' || c == b' ' || c == b'(' {
                    break;
                }
                part.push(c);
                i += 1;
            }
            if part.is_empty() {
                return None;
            }
        }
        parts.push(part);
        if s.get(i) == Some(&b'.') {
            i += 1;
            continue;
        }
        break;
    }
    let joined = parts.join(&b'.');
    Some(String::from_utf8_lossy(&joined[..joined.len().min(1024)]).into_owned())
}

/// pg_dump's `\restrict` keys are letters and digits.
fn is_key(key: &[u8]) -> bool {
    !key.is_empty() && key.len() <= 256 && key.iter().all(u8::is_ascii_alphanumeric)
}

/// Finds `TO PROGRAM '…'`, `FROM PROGRAM '…'` (whitespace and comments between the words, any
/// case, `E'`/`U&'`/`$$` strings) and the words `lo_import` / `lo_export`, in a stream of SQL
/// bytes, one byte at a time, in constant memory.
#[derive(Default)]
struct Words {
    /// The current word, lower-cased (only its first 12 bytes; `len` counts them all).
    word: [u8; 12],
    len: usize,
    after: After,
    prev: u8,
    /// Inside `/* … */` (depth) or `-- …` between the words of a match.
    block: u32,
    line_comment: bool,
}

#[derive(Default, Clone, Copy, PartialEq)]
enum After {
    #[default]
    Nothing,
    /// `to` / `from`
    Direction,
    /// `to program` / `from program`
    Program,
}

impl Words {
    fn feed(&mut self, data: &[u8]) -> Option<String> {
        for &b in data {
            if let Some(r) = self.byte(b) {
                return Some(r);
            }
        }
        None
    }

    fn word(&self) -> &[u8] {
        &self.word[..self.len.min(12)]
    }

    fn byte(&mut self, b: u8) -> Option<String> {
        let prev = std::mem::replace(&mut self.prev, b);
        if self.line_comment {
            if b == b'\n' {
                self.line_comment = false;
            }
            return None;
        }
        if self.block > 0 {
            if prev == b'*' && b == b'/' {
                self.block -= 1;
                self.prev = 0;
            } else if prev == b'/' && b == b'*' {
                self.block += 1;
                self.prev = 0;
            }
            return None;
        }
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'$' && self.len > 0 || b >= 0x80 {
            if self.len < 12 {
                self.word[self.len] = b.to_ascii_lowercase();
            }
            self.len += 1;
            return None;
        }
        // A word ended at `b` (or there was none).
        if self.len > 0 {
            let w = self.word();
            if w == b"lo_import" || w == b"lo_export" {
                return Some(format!(
                    "`{}` reads or writes a file on the database server",
                    String::from_utf8_lossy(w)
                ));
            }
            let single = self.len == 1;
            let first = self.word[0];
            self.after = match self.after {
                After::Program if single && first == b'e' && b == b'\'' => {
                    return Some(program_rule())
                }
                After::Program if single && first == b'u' && b == b'&' => {
                    return Some(program_rule())
                }
                After::Direction if w == b"program" => After::Program,
                _ if w == b"to" || w == b"from" => After::Direction,
                _ => After::Nothing,
            };
            self.len = 0;
        }
        if self.after == After::Nothing || b.is_ascii_whitespace() {
            return None;
        }
        match b {
            b'\'' | b'$' if self.after == After::Program => Some(program_rule()),
            b'*' if prev == b'/' => {
                self.block = 1;
                self.prev = 0;
                None
            }
            b'-' if prev == b'-' => {
                self.line_comment = true;
                None
            }
            b'/' | b'-' => None,
            _ => {
                self.after = After::Nothing;
                None
            }
        }
    }
}

fn program_rule() -> String {
    "`TO PROGRAM` / `FROM PROGRAM` runs a shell command on the database server".to_string()
}

fn version_text(v: &[u8]) -> String {
    String::from_utf8_lossy(&v[..v.len().min(200)])
        .trim()
        .to_string()
}

/// A line for a message: at most 80 characters, escaped.
fn shorten(line: &[u8]) -> String {
    let s = String::from_utf8_lossy(&line[..line.len().min(80)]);
    let mut out: String = s.escape_debug().collect();
    if line.len() > 80 {
        out.push('…');
    }
    out
}

/// Position of the first `\n`, a word at a time.
#[inline]
pub fn find_newline(hay: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    const NL: u64 = LO * b'\n' as u64;
    let mut i = 0;
    while i + 16 <= hay.len() {
        let a = u64::from_le_bytes(hay[i..i + 8].try_into().unwrap()) ^ NL;
        let b = u64::from_le_bytes(hay[i + 8..i + 16].try_into().unwrap()) ^ NL;
        let ta = a.wrapping_sub(LO) & !a & HI;
        let tb = b.wrapping_sub(LO) & !b & HI;
        if ta | tb != 0 {
            if ta != 0 {
                return Some(i + (ta.trailing_zeros() / 8) as usize);
            }
            return Some(i + 8 + (tb.trailing_zeros() / 8) as usize);
        }
        i += 16;
    }
    hay[i..].iter().position(|&b| b == b'\n').map(|p| p + i)
}

/// Facts read from a pg_dump plain-format dump while verifying it.
#[derive(Clone, Debug, Default)]
pub struct SqlSummary {
    /// "Dumped from database version X"
    pub server_version: Option<String>,
    /// "Dumped by pg_dump version Y"
    pub dump_version: Option<String>,
    /// Rows per table, counted from the dump's `COPY ... FROM stdin;` blocks, keyed `schema.table`.
    pub tables: BTreeMap<String, u64>,
}

/// The major version in a version text: `15.8 (Debian 15.8-1)` → 15,
/// `pg_dump (PostgreSQL) 18.1` → 18, `9.6.24` → 9.
pub fn major_of(version: &str) -> Option<u32> {
    let start = version.find(|c: char| c.is_ascii_digit())?;
    let digits: String = version[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// A dump must load into the server it came from: a dump whose header says it was made by a
/// pg_dump newer (major) than the server is refused (pg_dump 17+ writes
/// `SET transaction_timeout`, which 16 and older reject). Unknown versions pass: the header
/// check already requires pg_dump's header.
pub fn dump_fits_server(server: Option<&str>, dumper: Option<&str>) -> Result<(), String> {
    let (Some(sv), Some(dv)) = (server, dumper) else {
        return Ok(());
    };
    match (major_of(sv), major_of(dv)) {
        (Some(s), Some(d)) if d > s => Err(format!(
            "the dump was made by pg_dump {dv} from a PostgreSQL {sv} server: a pg_dump newer than the server writes SQL that server may reject (pg_dump 17+ writes `SET transaction_timeout`), so this dump cannot be trusted to restore into the database it came from; take a new backup with pg_dump {s} (set env PG_BIN_DIR to its bin directory) or with postgres-container"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::testutil::{dump_text, Rng};

    fn scan_in_pieces(data: &[u8], rng: &mut Rng, max: u64) -> SqlScan {
        let mut s = SqlScanner::new();
        let mut rest = data;
        while !rest.is_empty() {
            let n = (1 + rng.below(max) as usize).min(rest.len());
            s.feed(&rest[..n]);
            rest = &rest[n..];
        }
        s.finish()
    }

    #[test]
    fn any_split_of_the_input_gives_the_same_result() {
        let text = dump_text(
            &[("public.a", 101), ("s.\"B c\"", 0), ("x", 12)],
            Some("key1"),
        );
        let whole = {
            let mut s = SqlScanner::new();
            s.feed(&text);
            s.finish()
        };
        assert!(whole.header.is_ok() && whole.complete.is_ok(), "{whole:?}");
        let t = &whole.summary.tables;
        assert_eq!((t["public.a"], t["s.B c"], t["x"]), (101, 0, 12));
        assert_eq!(t.len(), 3, "{t:?}");
        let mut rng = Rng::new(9);
        for max in [1, 2, 3, 7, 64, 4096] {
            let split = scan_in_pieces(&text, &mut rng, max);
            assert_eq!(split.summary.tables, whole.summary.tables, "max {max}");
            assert_eq!(split.summary.server_version, whole.summary.server_version);
            assert_eq!(split.header, whole.header);
            assert_eq!(split.complete, whole.complete);
            assert_eq!(split.lines, whole.lines);
        }
    }

    #[test]
    fn copy_data_is_binary_safe_and_only_a_bare_backslash_dot_ends_it() {
        let mut d = b"--\n-- PostgreSQL database dump\n--\n\n--\n-- Data for Name: t\n--\n\nCOPY public.t (a) FROM stdin;\n".to_vec();
        d.extend_from_slice(b"\xff\xfe\x00 binary \\.\n"); // `\.` not alone
        d.extend_from_slice(b"\\\\.\n"); // the value `\.`
        d.extend_from_slice(b" \\.\n");
        d.extend_from_slice(b"\\.x\n");
        d.extend_from_slice(&vec![b'y'; 3 * LINE_PREFIX]); // a very long row
        d.extend_from_slice(b"\n\\.\n\n--\n-- PostgreSQL database dump complete\n--\n\n");
        let s = scan_in_pieces(&d, &mut Rng::new(1), 5000);
        assert_eq!(s.summary.tables["public.t"], 5);
        assert!(s.complete.is_ok(), "{:?}", s.complete);
    }

    #[test]
    fn a_copy_line_without_its_comment_block_is_not_data() {
        let d = b"--\n-- PostgreSQL database dump\n--\n\nCREATE FUNCTION f() AS $$\nCOPY public.t (a) FROM stdin;\n$$;\n\n--\n-- PostgreSQL database dump complete\n--\n";
        let mut s = SqlScanner::new();
        s.feed(d);
        let s = s.finish();
        assert!(s.summary.tables.is_empty());
        assert!(s.complete.is_ok());
    }

    #[test]
    fn header_problems_are_reported() {
        for (text, needle) in [
            (&b""[..], "empty"),
            (
                b"--\n-- PostgreSQL database dump\n",
                "inside pg_dump's header",
            ),
            (b"\n--\n", "empty line"),
            (b"SET x = 1;\n", "not a pg_dump"),
            (b"--\n-- PostgreSQL database cluster dump\n--\n", "line 2"),
        ] {
            let mut s = SqlScanner::new();
            s.feed(text);
            let e = s.finish().header.unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
    }

    /// A complete dump (with pg_dump's `\restrict` pair) with `body` in the middle.
    fn dump_with(body: &str) -> Vec<u8> {
        format!(
            "--\n-- PostgreSQL database dump\n--\n\n\\restrict abcDEF123\n\nSET x = 1;\n{body}\n\n--\n-- Data for Name: t\n--\n\nCOPY public.t (a) FROM stdin;\n\\N\n\\! not a command: COPY data\nto program 'x'\n\\.\n\n--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict abcDEF123\n\n"
        )
        .into_bytes()
    }

    fn guard_of(d: &[u8]) -> Result<(), String> {
        let mut rng = Rng::new(5);
        let a = scan_in_pieces(d, &mut rng, 3);
        let b = scan_in_pieces(d, &mut rng, 100_000);
        assert_eq!(a.guard, b.guard);
        a.guard
    }

    #[test]
    fn pg_dump_output_passes_the_guard() {
        let d = dump_with(
            "CREATE TABLE public.program (a int);\nCREATE VIEW v AS SELECT * FROM public.program;\nCOMMENT ON TABLE x IS 'back\\slash \\! inside';\nSELECT pg_catalog.lo_create('1');\nCREATE FUNCTION f() RETURNS int AS $$ SELECT a FROM program; $$ LANGUAGE sql;\nCOPY t TO stdout;",
        );
        let s = scan_in_pieces(&d, &mut Rng::new(1), 7);
        assert!(s.complete.is_ok() && s.header.is_ok(), "{s:?}");
        assert_eq!(s.guard, Ok(()));
        assert_eq!(s.summary.tables["public.t"], 3);
        let t = dump_text(&[("public.a", 50)], Some("k1"));
        assert_eq!(guard_of(&t), Ok(()));
    }

    #[test]
    fn every_meta_command_outside_copy_data_is_refused() {
        for meta in [
            "\\! touch /tmp/x",
            "\\o /tmp/x",
            "\\c other",
            "\\connect other",
            "\\copy t to '/tmp/x'",
            "\\i /etc/passwd",
            "\\ir x.sql",
            "\\set ON_ERROR_STOP 0",
            "\\unrestrict abcDEF123",
            "\\restrict other",
            "\\g /tmp/x",
            "\\w /tmp/x",
            "\\setenv PAGER x",
            "\\",
        ] {
            let e = guard_of(&dump_with(meta)).expect_err(meta);
            assert!(e.starts_with("line 8: "), "{meta}: {e}");
            assert!(
                e.contains("meta-command") || e.contains("second"),
                "{meta}: {e}"
            );
        }
        // Before the header's `\restrict` too, and after the completion comment.
        let d = b"--\n-- PostgreSQL database dump\n--\n\\! id\n--\n-- PostgreSQL database dump complete\n--\n";
        assert!(guard_of(d).unwrap_err().starts_with("line 4: "));
        let mut d = dump_with("");
        d.extend_from_slice(b"\\! id\n");
        assert!(guard_of(&d).unwrap_err().contains("after the completion"));
    }

    #[test]
    fn program_and_server_files_are_refused_in_any_spelling() {
        for sql in [
            "COPY (SELECT 1) TO PROGRAM 'touch /tmp/x';",
            "copy t from program 'id';",
            "COPY t TO\n  PROGRAM\n 'id';",
            "COPY t TO /* c */ PROGRAM E'id';",
            "COPY t TO -- c\nPROGRAM $$id$$;",
            "COPY t FROM Program U&'id';",
            "COPY t TO PROGRAM'id';",
            "SELECT lo_import('/etc/passwd');",
            "SELECT pg_catalog.LO_EXPORT(1, '/tmp/x');",
            "SELECT \"lo_import\"('/etc/passwd');",
        ] {
            let e = guard_of(&dump_with(sql)).expect_err(sql);
            assert!(
                e.contains("PROGRAM") || e.contains("file on the database server"),
                "{sql}: {e}"
            );
        }
        // On a line longer than what the scanner keeps.
        let long = format!("SELECT '{}' TO PROGRAM 'id';", "x".repeat(3 * LINE_PREFIX));
        assert!(guard_of(&dump_with(&long)).is_err());
    }

    #[test]
    fn the_restrict_filter_blanks_only_pg_dumps_own_lines() {
        let d = dump_with("SELECT 1;");
        let expect = String::from_utf8(d.clone())
            .unwrap()
            .replace("\\restrict abcDEF123", "")
            .replace("\\unrestrict abcDEF123", "");
        // COPY data that looks like the lines stays.
        let mut d2 = b"--\n-- Data for Name: t\n--\n\nCOPY public.t (a) FROM stdin;\n\\restrict x\n\\unrestrict x\n\\.\n\\restrict y\n".to_vec();
        d2.extend_from_slice(&vec![b'z'; 100_000]);
        d2.extend_from_slice(b"\nend");
        let expect2 = String::from_utf8(d2.clone())
            .unwrap()
            .replace("\\restrict y", "");
        let mut rng = Rng::new(11);
        for (input, want) in [(d, expect), (d2, expect2)] {
            for max in [1, 2, 5, 13, 4096, 1 << 20] {
                let mut f = RestrictFilter::new();
                let mut out = Vec::new();
                let mut rest = &input[..];
                while !rest.is_empty() {
                    let n = (1 + rng.below(max) as usize).min(rest.len());
                    out.extend(f.feed(&rest[..n]));
                    rest = &rest[n..];
                }
                out.extend(f.finish());
                assert_eq!(String::from_utf8(out).unwrap(), want, "max {max}");
            }
        }
    }

    #[test]
    fn copy_table_names() {
        assert_eq!(
            copy_table(b"public.users (a) FROM stdin;").unwrap(),
            "public.users"
        );
        assert_eq!(
            copy_table(b"\"My\"\"S\".\"T.x\" (a) FROM stdin;").unwrap(),
            "My\"S.T.x"
        );
        assert_eq!(copy_table(b"t FROM stdin;").unwrap(), "t");
        assert!(copy_table(b"\"open").is_none());
    }

    #[test]
    fn find_newline_agrees_with_a_naive_search() {
        let mut rng = Rng::new(3);
        for _ in 0..2000 {
            let n = rng.below(70) as usize;
            let v: Vec<u8> = (0..n)
                .map(|_| {
                    if rng.below(20) == 0 {
                        b'\n'
                    } else {
                        rng.next() as u8
                    }
                })
                .collect();
            assert_eq!(find_newline(&v), v.iter().position(|&b| b == b'\n'));
        }
    }
}
