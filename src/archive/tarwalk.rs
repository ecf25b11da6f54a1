//! A strict, streaming tar header walker.
//!
//! Both verification (`verify`) and the restore pre-check (`restore`) walk tar archives with
//! this one parser, so the two can never disagree about what an archive contains. It is fed
//! the decompressed stream in blocks of any size ([`TarWalker::feed`]), keeps only one
//! 512-byte header and the current entry's extended-header data (bounded), and skips file
//! data without copying it.
//!
//! What it checks (failing with a [`TarError`] that names the entry and byte offset):
//! - every header's checksum (the unsigned sum, or the historic signed sum GNU tar accepts);
//! - numeric fields (size, mode, uid, gid, mtime) are valid octal or GNU base-256;
//! - each entry's data is present in full, with the size its header says, after PAX and GNU
//!   overrides; the archive ends with the two zero blocks of the end-of-archive marker, and
//!   only zero bytes follow (GNU tar and Docker pad to a record size);
//! - nothing that different tar readers interpret differently (the parser differentials
//!   behind RUSTSEC-2026-0068 / CVE-2025-62518): a PAX `size` that disagrees with a non-zero
//!   ustar size, or replaces a zero ustar size that could have held the value; links,
//!   folders, devices and FIFOs whose header claims data; two extended headers of one kind
//!   before one entry; a GNU long name with bytes after its NUL terminator; NUL bytes in
//!   PAX paths; malformed PAX records; a PAX global header that sets `path`/`size`; a lone
//!   zero block followed by more headers.
//!
//! Long names (GNU `L`/`K`, PAX `path`/`linkpath`), symlinks, hard links, folders and GNU
//! sparse files walk fine. Path *safety* (absolute paths, `..`, links leaving the root) is
//! not this module's business; see [`super::restore`].

use std::fmt;

/// Largest GNU long name / long link we accept (Linux PATH_MAX is 4096).
const MAX_LONG_NAME: u64 = 64 * 1024;
/// Largest PAX extended header we accept.
const MAX_PAX: u64 = 1024 * 1024;
/// Largest value a ustar octal size field (11 digits) can hold.
const USTAR_SIZE_MAX: u64 = 0o77777777777;

/// One archive entry, with GNU and PAX overrides applied.
#[derive(Debug)]
pub struct Entry<'a> {
    /// 0-based index among real entries (extended headers are not counted).
    pub index: u64,
    /// Byte offset of this entry's (main) header in the tar stream.
    pub offset: u64,
    /// The ustar type flag (`b'0'` file, `b'5'` folder, `b'2'` symlink, ...).
    pub typeflag: u8,
    /// The entry's path as stored (long name and PAX applied, no normalisation).
    pub path: &'a [u8],
    /// The link target (symlinks and hard links), as stored.
    pub link: &'a [u8],
    /// The data size that follows the header.
    pub size: u64,
    pub mode: u64,
    pub uid: u64,
    pub gid: u64,
    /// Whether PAX or a GNU long name/link supplied the path or target.
    pub long_path: bool,
    /// PAX keys seen for this entry (names only), for callers with policies about them.
    pub pax_keys: &'a [String],
}

impl Entry<'_> {
    /// The path as (lossy) text, for messages.
    pub fn path_lossy(&self) -> String {
        String::from_utf8_lossy(self.path).into_owned()
    }

    /// Regular file (including the contiguous-file type GNU tar treats as one).
    pub fn is_file(&self) -> bool {
        matches!(self.typeflag, b'0' | 0 | b'7')
    }
}

/// Why the walk stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TarError {
    /// Byte offset in the (decompressed) tar stream.
    pub offset: u64,
    /// The entry concerned: its index and path, when one is known.
    pub entry: Option<(u64, String)>,
    pub message: String,
    /// `true` when the caller's entry callback refused the entry (not a format problem).
    pub refused: bool,
}

impl fmt::Display for TarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.entry {
            Some((i, p)) => write!(
                f,
                "entry {} `{}` (byte {}): {}",
                i + 1,
                p,
                self.offset,
                self.message
            ),
            None => write!(f, "at byte {}: {}", self.offset, self.message),
        }
    }
}

impl std::error::Error for TarError {}

/// Counts of a walked archive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TarCounts {
    /// Real entries (files, folders, links, ...).
    pub entries: u64,
    /// Sum of regular-file sizes.
    pub file_bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Collect {
    /// Skip the data (file contents).
    Skip,
    LongName,
    LongLink,
    Pax,
    PaxGlobal,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Accumulating a 512-byte header block.
    Header,
    /// Inside an entry's data (`remaining` bytes left, then `pad`).
    Data,
    /// Old-GNU sparse extension blocks follow the header.
    SparseExt,
    /// Saw one zero block; the next must be zero too.
    SecondZero,
    /// After the end-of-archive marker: only zero bytes may follow.
    End,
    /// A problem was reported; everything else is ignored.
    Failed,
}

/// Extended-header state that applies to the next real entry.
#[derive(Default)]
struct Pending {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax_seen: bool,
    pax_path: Option<Vec<u8>>,
    pax_link: Option<Vec<u8>>,
    pax_size: Option<u64>,
    pax_uid: Option<u64>,
    pax_gid: Option<u64>,
    pax_keys: Vec<String>,
    /// Offset of the first extended header of this group, for messages.
    first_offset: Option<u64>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.long_name.is_none() && self.long_link.is_none() && !self.pax_seen
    }
}

/// The walker. Feed it the decompressed tar stream, then call [`TarWalker::finish`].
pub struct TarWalker {
    state: State,
    /// Bytes of the stream consumed.
    pos: u64,
    block: [u8; 512],
    block_len: usize,
    /// Data bytes left in the current entry, then padding bytes.
    remaining: u64,
    pad: u64,
    collect: Collect,
    buf: Vec<u8>,
    pending: Pending,
    /// The current data-carrying entry, for "ends inside entry" messages.
    current: Option<(u64, String, u64)>,
    counts: TarCounts,
    error: Option<TarError>,
    /// Offset of the first end-of-archive zero block.
    zero_at: u64,
    /// The last entry's index and path, for "missing end marker" messages.
    last: Option<(u64, String)>,
    /// Pending sparse-header data size while reading old-GNU sparse extension blocks.
    sparse_size: u64,
}

impl Default for TarWalker {
    fn default() -> Self {
        Self::new()
    }
}

impl TarWalker {
    pub fn new() -> Self {
        TarWalker {
            state: State::Header,
            pos: 0,
            block: [0; 512],
            block_len: 0,
            remaining: 0,
            pad: 0,
            collect: Collect::Skip,
            buf: Vec::new(),
            pending: Pending::default(),
            current: None,
            counts: TarCounts::default(),
            error: None,
            zero_at: 0,
            last: None,
            sparse_size: 0,
        }
    }

    /// The first problem found so far, if any.
    pub fn error(&self) -> Option<&TarError> {
        self.error.as_ref()
    }

    /// Whether a problem has been found (further input is ignored).
    pub fn failed(&self) -> bool {
        self.state == State::Failed
    }

    /// Feeds the next bytes of the tar stream. `on_entry` sees every real entry once its
    /// header (and extended headers) are complete; returning `Err(reason)` refuses the entry
    /// and stops the walk. After an error, further calls do nothing and return it again.
    pub fn feed(
        &mut self,
        mut data: &[u8],
        on_entry: &mut dyn FnMut(&Entry<'_>) -> Result<(), String>,
    ) -> Result<(), TarError> {
        while !data.is_empty() {
            match self.state {
                State::Failed => break,
                State::Header | State::SecondZero | State::SparseExt => {
                    let n = (512 - self.block_len).min(data.len());
                    self.block[self.block_len..self.block_len + n].copy_from_slice(&data[..n]);
                    self.block_len += n;
                    data = &data[n..];
                    self.pos += n as u64;
                    if self.block_len == 512 {
                        self.block_len = 0;
                        let at = self.pos - 512;
                        let r = match self.state {
                            State::Header => self.header(at, on_entry),
                            State::SecondZero => self.second_zero(at),
                            _ => self.sparse_ext(at),
                        };
                        if let Err(e) = r {
                            self.fail(e);
                        }
                    }
                }
                State::Data => {
                    if self.remaining > 0 {
                        let n = (self.remaining.min(data.len() as u64)) as usize;
                        if self.collect != Collect::Skip {
                            self.buf.extend_from_slice(&data[..n]);
                        }
                        self.remaining -= n as u64;
                        self.pos += n as u64;
                        data = &data[n..];
                        if self.remaining > 0 {
                            continue;
                        }
                        if let Err(e) = self.data_done() {
                            self.fail(e);
                            continue;
                        }
                    }
                    if self.pad > 0 {
                        let n = (self.pad.min(data.len() as u64)) as usize;
                        self.pad -= n as u64;
                        self.pos += n as u64;
                        data = &data[n..];
                    }
                    if self.remaining == 0 && self.pad == 0 {
                        self.state = State::Header;
                        self.current = None;
                    }
                }
                State::End => {
                    if let Some(i) = data.iter().position(|&b| b != 0) {
                        let at = self.pos + i as u64;
                        self.fail(TarError {
                            offset: at,
                            entry: None,
                            message: format!(
                                "data follows the end-of-archive marker (at byte {}): the archive was altered or two archives were concatenated",
                                self.zero_at
                            ),
                            refused: false,
                        });
                        break;
                    }
                    self.pos += data.len() as u64;
                    data = &[];
                }
            }
        }
        match &self.error {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// The end of the stream: the archive must have ended with its end-of-archive marker.
    pub fn finish(&mut self) -> Result<TarCounts, TarError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let err = |walker: &TarWalker, message: String, entry: Option<(u64, String)>| TarError {
            offset: walker.pos,
            entry,
            message,
            refused: false,
        };
        let e = match self.state {
            State::End => return Ok(self.counts),
            State::Failed => unreachable!("error is set"),
            State::Header if self.pos == 0 => err(self, "the archive is empty".into(), None),
            State::Header | State::SparseExt if self.block_len > 0 => err(
                self,
                format!("the archive ends inside a header ({} of 512 bytes)", self.block_len),
                self.last.clone(),
            ),
            State::Header if !self.pending.is_empty() => err(
                self,
                "the archive ends after an extended header, without the entry it describes".into(),
                None,
            ),
            State::Header => err(
                self,
                match &self.last {
                    Some((i, p)) => format!(
                        "the end-of-archive marker is missing: the archive stops after entry {} `{}`",
                        i + 1,
                        p
                    ),
                    None => "the end-of-archive marker is missing".into(),
                },
                None,
            ),
            State::SecondZero => err(
                self,
                "only one of the two end-of-archive zero blocks is present".into(),
                None,
            ),
            State::SparseExt => err(self, "the archive ends inside a sparse-file header".into(), self.last.clone()),
            State::Data if self.collect != Collect::Skip => err(
                self,
                "the archive ends inside an extended header (long name or PAX data)".into(),
                None,
            ),
            State::Data => {
                let (idx, path, size) = self.current.clone().unwrap_or((0, String::new(), 0));
                let missing = self.remaining + self.pad;
                let message = if self.remaining > 0 {
                    format!(
                        "the archive ends inside this entry's data: {} of {} bytes present",
                        size.saturating_sub(self.remaining),
                        size
                    )
                } else {
                    format!("the archive ends inside the padding after this entry ({missing} bytes missing)")
                };
                err(self, message, Some((idx, path)))
            }
        };
        self.fail(e.clone());
        Err(e)
    }

    fn fail(&mut self, e: TarError) {
        if self.error.is_none() {
            self.error = Some(e);
        }
        self.state = State::Failed;
    }

    fn header(
        &mut self,
        at: u64,
        on_entry: &mut dyn FnMut(&Entry<'_>) -> Result<(), String>,
    ) -> Result<(), TarError> {
        let h = self.block;
        let fmt_err = |message: String| TarError {
            offset: at,
            entry: None,
            message,
            refused: false,
        };
        if h.iter().all(|&b| b == 0) {
            if !self.pending.is_empty() {
                return Err(fmt_err(
                    "an extended header is followed by the end-of-archive marker instead of its entry".into(),
                ));
            }
            self.zero_at = at;
            self.state = State::SecondZero;
            return Ok(());
        }
        verify_checksum(&h).map_err(fmt_err)?;
        let magic = &h[257..263];
        let ustar = magic == b"ustar\0";
        let gnu = magic == b"ustar " && &h[263..265] == b" \0";
        if !(ustar || gnu || magic.iter().all(|&b| b == 0)) {
            return Err(fmt_err(format!(
                "unknown header format (magic {:?})",
                String::from_utf8_lossy(magic)
            )));
        }
        let typeflag = h[156];
        let ustar_size =
            numeric(&h[124..136]).map_err(|e| fmt_err(format!("invalid size field: {e}")))?;
        let mode =
            numeric(&h[100..108]).map_err(|e| fmt_err(format!("invalid mode field: {e}")))?;
        let uid = numeric(&h[108..116]).map_err(|e| fmt_err(format!("invalid uid field: {e}")))?;
        let gid = numeric(&h[116..124]).map_err(|e| fmt_err(format!("invalid gid field: {e}")))?;
        numeric(&h[136..148]).map_err(|e| fmt_err(format!("invalid mtime field: {e}")))?;

        // Extended headers: collect their data, apply to the next real entry.
        let collect = match typeflag {
            b'L' => Some(Collect::LongName),
            b'K' => Some(Collect::LongLink),
            b'x' => Some(Collect::Pax),
            b'g' => Some(Collect::PaxGlobal),
            _ => None,
        };
        if let Some(kind) = collect {
            let (dup, limit) = match kind {
                Collect::LongName => (self.pending.long_name.is_some(), MAX_LONG_NAME),
                Collect::LongLink => (self.pending.long_link.is_some(), MAX_LONG_NAME),
                Collect::Pax => (self.pending.pax_seen, MAX_PAX),
                _ => (false, MAX_PAX),
            };
            if dup {
                return Err(fmt_err(format!(
                    "two extended headers of type '{}' precede one entry: tar readers disagree about which applies",
                    typeflag as char
                )));
            }
            if ustar_size > limit {
                return Err(fmt_err(format!(
                    "extended header of type '{}' is {} bytes, more than the {} allowed",
                    typeflag as char, ustar_size, limit
                )));
            }
            if kind != Collect::PaxGlobal {
                self.pending.first_offset.get_or_insert(at);
            }
            self.buf.clear();
            self.collect = kind;
            self.start_data(ustar_size);
            if ustar_size == 0 {
                self.data_done()?;
                self.state = State::Header;
            }
            return Ok(());
        }

        // A real entry.
        let index = self.counts.entries;
        let pending = std::mem::take(&mut self.pending);
        let name = field_str(&h[0..100]);
        let mut path: Vec<u8> = Vec::new();
        if ustar && h[345] != 0 {
            path.extend_from_slice(field_str(&h[345..500]));
            path.push(b'/');
        }
        path.extend_from_slice(name);
        let mut long_path = false;
        let entry_err = |path: &[u8], message: String| TarError {
            offset: at,
            entry: Some((index, String::from_utf8_lossy(path).into_owned())),
            message,
            refused: false,
        };
        if let Some(ln) = &pending.long_name {
            if let Some(pp) = &pending.pax_path {
                if pp != ln {
                    return Err(entry_err(
                        pp,
                        format!(
                            "a GNU long name `{}` and a PAX path disagree: tar readers disagree about which applies",
                            String::from_utf8_lossy(ln)
                        ),
                    ));
                }
            }
            path = ln.clone();
            long_path = true;
        }
        if let Some(pp) = pending.pax_path {
            path = pp;
            long_path = true;
        }
        let mut link: Vec<u8> = field_str(&h[157..257]).to_vec();
        if let Some(ll) = &pending.long_link {
            if let Some(pl) = &pending.pax_link {
                if pl != ll {
                    return Err(entry_err(
                        &path,
                        "a GNU long link target and a PAX linkpath disagree".into(),
                    ));
                }
            }
            link = ll.clone();
            long_path = true;
        }
        if let Some(pl) = pending.pax_link {
            link = pl;
            long_path = true;
        }
        if path.is_empty() {
            return Err(entry_err(&path, "the entry has an empty name".into()));
        }

        let size = match pending.pax_size {
            None => ustar_size,
            Some(p) if p == ustar_size => p,
            Some(p) if ustar_size == 0 && p > USTAR_SIZE_MAX => p,
            Some(p) => {
                return Err(entry_err(
                    &path,
                    format!(
                        "its PAX size ({p}) disagrees with its header size ({ustar_size}): tar readers disagree about where the next entry starts (a smuggling pattern, CVE-2025-62518 / RUSTSEC-2026-0068)"
                    ),
                ))
            }
        };
        let header_only = matches!(typeflag, b'1' | b'2' | b'3' | b'4' | b'5' | b'6');
        if header_only && size != 0 {
            return Err(entry_err(
                &path,
                format!(
                    "a {} whose header claims {size} bytes of data: tar readers disagree about whether that data exists",
                    type_name(typeflag)
                ),
            ));
        }
        // Old-GNU sparse files: extension blocks may follow the header before the data.
        let sparse_ext = typeflag == b'S' && gnu && h[482] != 0;

        let entry = Entry {
            index,
            offset: at,
            typeflag,
            path: &path,
            link: &link,
            size,
            mode,
            uid: pending.pax_uid.unwrap_or(uid),
            gid: pending.pax_gid.unwrap_or(gid),
            long_path,
            pax_keys: &pending.pax_keys,
        };
        if let Err(reason) = on_entry(&entry) {
            return Err(TarError {
                offset: at,
                entry: Some((index, entry.path_lossy())),
                message: reason,
                refused: true,
            });
        }
        let shown = entry.path_lossy();
        if entry.is_file() {
            self.counts.file_bytes = self.counts.file_bytes.saturating_add(size);
        }
        self.counts.entries += 1;
        self.last = Some((index, shown.clone()));
        self.current = Some((index, shown, size));
        self.collect = Collect::Skip;
        if sparse_ext {
            self.sparse_size = size;
            self.state = State::SparseExt;
        } else {
            self.start_data(size);
        }
        Ok(())
    }

    fn start_data(&mut self, size: u64) {
        self.remaining = size;
        self.pad = (512 - size % 512) % 512;
        self.state = if size == 0 {
            State::Header
        } else {
            State::Data
        };
    }

    /// One old-GNU sparse extension block: 21 entries, then the "more follow" flag.
    fn sparse_ext(&mut self, _at: u64) -> Result<(), TarError> {
        if self.block[504] == 0 {
            let size = self.sparse_size;
            self.start_data(size);
        }
        Ok(())
    }

    fn second_zero(&mut self, at: u64) -> Result<(), TarError> {
        if self.block.iter().all(|&b| b == 0) {
            self.state = State::End;
            Ok(())
        } else {
            Err(TarError {
                offset: at,
                entry: None,
                message: format!(
                    "a lone zero block at byte {} is followed by more headers: tar readers disagree about where the archive ends",
                    self.zero_at
                ),
                refused: false,
            })
        }
    }

    /// The data of an extended header is complete: parse and stash it.
    fn data_done(&mut self) -> Result<(), TarError> {
        let at = self.pos;
        let err = |message: String| TarError {
            offset: at,
            entry: None,
            message,
            refused: false,
        };
        match self.collect {
            Collect::Skip => {}
            Collect::LongName | Collect::LongLink => {
                let name = gnu_long_name(&self.buf).map_err(err)?;
                if self.collect == Collect::LongName {
                    self.pending.long_name = Some(name);
                } else {
                    self.pending.long_link = Some(name);
                }
            }
            Collect::Pax | Collect::PaxGlobal => {
                let global = self.collect == Collect::PaxGlobal;
                let records =
                    parse_pax(&self.buf).map_err(|e| err(format!("malformed PAX header: {e}")))?;
                if !global {
                    self.pending.pax_seen = true;
                }
                for (k, v) in records {
                    if global {
                        if matches!(k.as_str(), "path" | "linkpath" | "size") {
                            return Err(err(format!(
                                "a PAX global header sets `{k}`: tar readers disagree about whether it applies to every entry"
                            )));
                        }
                        continue;
                    }
                    match k.as_str() {
                        "path" | "linkpath" => {
                            if v.contains(&0) {
                                return Err(err(format!("a PAX `{k}` contains a NUL byte")));
                            }
                            if v.is_empty() {
                                return Err(err(format!("a PAX `{k}` is empty")));
                            }
                            if k == "path" {
                                self.pending.pax_path = Some(v);
                            } else {
                                self.pending.pax_link = Some(v);
                            }
                        }
                        "size" | "uid" | "gid" => {
                            let n = decimal(&v).ok_or_else(|| {
                                err(format!(
                                    "PAX `{k}` is not a decimal number: {:?}",
                                    String::from_utf8_lossy(&v)
                                ))
                            })?;
                            match k.as_str() {
                                "size" => self.pending.pax_size = Some(n),
                                "uid" => self.pending.pax_uid = Some(n),
                                _ => self.pending.pax_gid = Some(n),
                            }
                        }
                        _ => {}
                    }
                    if self.pending.pax_keys.len() < 64 && !self.pending.pax_keys.contains(&k) {
                        self.pending.pax_keys.push(k);
                    }
                }
            }
        }
        self.buf.clear();
        if self.buf.capacity() > 64 * 1024 {
            self.buf.shrink_to(64 * 1024);
        }
        self.collect = Collect::Skip;
        Ok(())
    }
}

/// Header checksum: the sum of all bytes with the checksum field read as spaces.
fn verify_checksum(h: &[u8; 512]) -> Result<(), String> {
    let field = &h[148..156];
    let stored = octal(field).map_err(|e| format!("invalid checksum field: {e}"))?;
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in h.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += b as u64;
        signed += (b as i8) as i64;
    }
    if stored == unsigned || stored as i64 == signed {
        Ok(())
    } else {
        Err(format!(
            "header checksum mismatch (stored {stored:o}, computed {unsigned:o}): the header is corrupt or this is not a tar archive"
        ))
    }
}

/// A numeric header field: octal (leading/trailing spaces and NULs allowed, as GNU tar and
/// Go's archive/tar accept) or GNU base-256 (high bit of the first byte set).
fn numeric(field: &[u8]) -> Result<u64, String> {
    if field[0] & 0x80 != 0 {
        if field[0] == 0xff {
            return Err("negative base-256 value".into());
        }
        let mut v: u64 = (field[0] & 0x7f) as u64;
        for &b in &field[1..] {
            if v > (u64::MAX >> 8) {
                return Err("base-256 value too large".into());
            }
            v = (v << 8) | b as u64;
        }
        return Ok(v);
    }
    octal(field)
}

fn octal(field: &[u8]) -> Result<u64, String> {
    let trimmed = trim(field);
    let mut v: u64 = 0;
    for &b in trimmed {
        if !(b'0'..=b'7').contains(&b) {
            return Err(format!("{:?} is not octal", String::from_utf8_lossy(field)));
        }
        v = v
            .checked_mul(8)
            .and_then(|v| v.checked_add((b - b'0') as u64))
            .ok_or("value too large")?;
    }
    Ok(v)
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | 0, rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | 0] = s {
        s = rest;
    }
    s
}

/// A NUL-terminated (or full-width) string field.
fn field_str(field: &[u8]) -> &[u8] {
    match field.iter().position(|&b| b == 0) {
        Some(i) => &field[..i],
        None => field,
    }
}

/// GNU `L`/`K` data: the name, optionally followed by NUL bytes (GNU tar, Go and tar-rs
/// write exactly one). Bytes after a NUL are a parser differential and refused.
fn gnu_long_name(data: &[u8]) -> Result<Vec<u8>, String> {
    let name = field_str(data);
    if data[name.len()..].iter().any(|&b| b != 0) {
        return Err(format!(
            "a GNU long name has bytes after its NUL terminator (`{}` then `{}`): tar readers disagree about the name",
            String::from_utf8_lossy(name),
            String::from_utf8_lossy(&data[name.len()..]).trim_matches('\0')
        ));
    }
    if name.is_empty() {
        return Err("a GNU long name is empty".into());
    }
    Ok(name.to_vec())
}

fn decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 20 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in v {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add((b - b'0') as u64)?;
    }
    Some(n)
}

/// PAX records: `"<len> <key>=<value>\n"`, where `<len>` counts the whole record.
fn parse_pax(mut data: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut out = Vec::new();
    while !data.is_empty() {
        // GNU tar and others may pad the block with NULs after the last record.
        if data.iter().all(|&b| b == 0) {
            break;
        }
        let sp = data
            .iter()
            .take(21)
            .position(|&b| b == b' ')
            .ok_or("record without a length")?;
        let len = decimal(&data[..sp]).ok_or("record length is not a number")? as usize;
        if len <= sp + 1 || len > data.len() {
            return Err(format!("record length {len} does not fit the header"));
        }
        let rec = &data[sp + 1..len];
        let Some((&b'\n', body)) = rec.split_last() else {
            return Err("record does not end with a newline".into());
        };
        let eq = body
            .iter()
            .position(|&b| b == b'=')
            .ok_or("record without `=`")?;
        let key = std::str::from_utf8(&body[..eq]).map_err(|_| "record key is not UTF-8")?;
        if key.is_empty() {
            return Err("record with an empty key".into());
        }
        out.push((key.to_string(), body[eq + 1..].to_vec()));
        data = &data[len..];
    }
    Ok(out)
}

/// Human name of a type flag, for messages.
pub fn type_name(t: u8) -> &'static str {
    match t {
        b'0' | 0 | b'7' => "regular file",
        b'1' => "hard link",
        b'2' => "symbolic link",
        b'3' => "character device",
        b'4' => "block device",
        b'5' => "folder",
        b'6' => "FIFO",
        b'S' => "GNU sparse file",
        b'V' => "GNU volume label",
        b'M' => "GNU multi-volume continuation",
        b'D' => "GNU dump folder",
        _ => "entry of unknown type",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::testutil::*;

    /// (path, type flag, size, link target) of each entry.
    type Seen = Vec<(String, u8, u64, String)>;

    fn walk(tar: &[u8], step: usize) -> Result<(TarCounts, Seen), TarError> {
        let mut w = TarWalker::new();
        let mut seen = Vec::new();
        for piece in tar.chunks(step.max(1)) {
            w.feed(piece, &mut |e| {
                seen.push((
                    e.path_lossy(),
                    e.typeflag,
                    e.size,
                    String::from_utf8_lossy(e.link).into_owned(),
                ));
                Ok(())
            })?;
        }
        Ok((w.finish()?, seen))
    }

    #[track_caller]
    fn fails(tar: &[u8], needle: &str) {
        for step in [1, 7, 512, 100_000] {
            let e = walk(tar, step).expect_err("must fail");
            assert!(e.message.contains(needle), "step {step}: {e}");
        }
    }

    #[test]
    fn every_split_gives_the_same_walk() {
        let mut t = Vec::new();
        let pax = [
            pax_record("path", "p/".repeat(80).as_bytes()),
            pax_record("size", b"700"),
        ]
        .concat();
        push(
            &mut t,
            &raw_header(b"PaxHeaders/x", b'x', pax.len() as u64, b""),
            &pax,
        );
        push(&mut t, &raw_header(b"short", b'0', 700, b""), &[1; 700]);
        let long = format!("{}\0", "q".repeat(300));
        push(
            &mut t,
            &raw_header(b"././@LongLink", b'K', long.len() as u64, b""),
            long.as_bytes(),
        );
        push(&mut t, &raw_header(b"l", b'2', 0, b"ignored"), b"");
        push(&mut t, &raw_header(b"d/", b'5', 0, b""), b"");
        end(&mut t);
        t.extend([0u8; 9000]);
        let whole = walk(&t, t.len()).unwrap();
        assert_eq!(
            whole.0,
            TarCounts {
                entries: 3,
                file_bytes: 700
            }
        );
        assert_eq!(whole.1[0].0, "p/".repeat(80));
        assert_eq!(whole.1[1].3, "q".repeat(300));
        for step in [1, 3, 511, 513, 4096] {
            assert_eq!(walk(&t, step).unwrap(), whole, "step {step}");
        }
    }

    #[test]
    fn numeric_fields_octal_with_spaces_and_base_256() {
        assert_eq!(numeric(b" 0000644 \0").unwrap(), 0o644);
        assert_eq!(numeric(b"\0\0\0\0\0\0\0\0").unwrap(), 0);
        assert_eq!(
            numeric(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]).unwrap(),
            256
        );
        assert!(numeric(b"00006x4\0").is_err());
        assert!(numeric(&[0xff; 12]).is_err());
        assert!(
            numeric(&[0x80, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
                .is_err()
        );
        // A base-256 size walks.
        let mut h = raw_header(b"big", b'0', 0, b"");
        h[124..136].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0]);
        set_cksum(&mut h);
        let mut t = Vec::new();
        push(&mut t, &h, &[0; 512]);
        end(&mut t);
        assert_eq!(walk(&t, 100).unwrap().0.file_bytes, 512);
    }

    #[test]
    fn ambiguous_archives_fail() {
        // Two PAX headers before one entry.
        let pax = pax_record("path", b"a");
        let mut t = Vec::new();
        push(&mut t, &raw_header(b"x", b'x', pax.len() as u64, b""), &pax);
        push(&mut t, &raw_header(b"x", b'x', pax.len() as u64, b""), &pax);
        push(&mut t, &raw_header(b"f", b'0', 0, b""), b"");
        end(&mut t);
        fails(&t, "two extended headers");
        // A global header that sets a path.
        let mut t = Vec::new();
        push(&mut t, &raw_header(b"g", b'g', pax.len() as u64, b""), &pax);
        end(&mut t);
        fails(&t, "global header sets `path`");
        // A folder that claims data.
        let mut t = Vec::new();
        push(&mut t, &raw_header(b"d/", b'5', 512, b""), &[0; 512]);
        end(&mut t);
        fails(&t, "folder whose header claims 512 bytes");
        // A lone zero block, then more entries.
        let mut t = vec![0u8; 512];
        push(&mut t, &raw_header(b"f", b'0', 0, b""), b"");
        end(&mut t);
        fails(&t, "lone zero block");
        // Malformed PAX records.
        for bad in [
            &b"5 a=b\n"[..],
            b"99 path=x\n",
            b"x path=y\n",
            b"8 path\n\n",
        ] {
            let mut t = Vec::new();
            push(&mut t, &raw_header(b"x", b'x', bad.len() as u64, b""), bad);
            push(&mut t, &raw_header(b"f", b'0', 0, b""), b"");
            end(&mut t);
            fails(&t, "malformed PAX");
        }
        // GNU long name and PAX path that disagree.
        let mut t = Vec::new();
        push(&mut t, &raw_header(b"././@LongLink", b'L', 2, b""), b"b\0");
        push(&mut t, &raw_header(b"x", b'x', pax.len() as u64, b""), &pax);
        push(&mut t, &raw_header(b"f", b'0', 0, b""), b"");
        end(&mut t);
        fails(&t, "disagree");
        // Unknown magic.
        let mut h = raw_header(b"f", b'0', 0, b"");
        h[257..263].copy_from_slice(b"xxxxx\0");
        set_cksum(&mut h);
        let mut t = Vec::new();
        push(&mut t, &h, b"");
        end(&mut t);
        fails(&t, "unknown header format");
    }

    #[test]
    fn truncations_are_named() {
        let mut t = Vec::new();
        let pax = pax_record("path", &[b'a'; 600]);
        push(&mut t, &raw_header(b"x", b'x', pax.len() as u64, b""), &pax);
        fails(&t[..800], "inside an extended header");
        fails(&t[..300], "inside a header");
        fails(&t, "after an extended header");
        fails(b"", "empty");
    }

    #[test]
    fn old_gnu_sparse_files_with_extension_blocks_walk() {
        let mut h = raw_header(b"sparse", b'S', 1024, b"");
        h[257..265].copy_from_slice(b"ustar  \0");
        h[482] = 1; // an extension block follows
        set_cksum(&mut h);
        let mut t = h.to_vec();
        let mut ext = [0u8; 512];
        ext[504] = 1; // and another
        t.extend_from_slice(&ext);
        t.extend_from_slice(&[0u8; 512]); // the last one
        t.extend_from_slice(&[9u8; 1024]); // data
        push(&mut t, &raw_header(b"after", b'0', 0, b""), b"");
        end(&mut t);
        let (counts, seen) = walk(&t, 300).unwrap();
        assert_eq!(counts.entries, 2);
        assert_eq!(seen[1].0, "after");
    }

    #[test]
    fn v7_headers_and_signed_checksums_are_accepted() {
        let mut h = raw_header(b"v7", b'0', 3, b"");
        h[257..265].copy_from_slice(&[0; 8]);
        h[0] = b'v';
        h[99] = 0;
        h[300] = 0xff; // a high byte: the signed sum differs from the unsigned one
        h[148..156].copy_from_slice(b"        ");
        let signed: i64 = h.iter().map(|&b| b as i8 as i64).sum();
        h[148..156].copy_from_slice(format!("{signed:06o}\0 ").as_bytes());
        let mut t = Vec::new();
        push(&mut t, &h, b"abc");
        end(&mut t);
        assert_eq!(walk(&t, 64).unwrap().0.entries, 1);
    }
}
