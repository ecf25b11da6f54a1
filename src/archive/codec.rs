//! How backup files are encoded: `gzip` (the default), `zstd` or `none`, in one place.
//!
//! - the **writer stack** ([`Encoder`]): the bytes of a dump or an archive go in, the file's
//!   bytes come out (parallel gzip members, multithreaded zstd frames, or as they are);
//! - the **strict reader** ([`decode`]): every gzip member or zstd frame decoded and checked,
//!   with the exact place of a fault, for verification (one streaming pass);
//! - the **plain reader stack** ([`reader`]): the decoded content, for restoring a file that
//!   was verified just before.
//!
//! zstd verification is as strict as gzip's: every frame must carry a content checksum
//! (XXH64, checked by libzstd), a declared content size must match the decoded size, and no
//! byte may follow the last frame. Concatenated frames are valid (as `zstd -d` reads them).
//! **Skippable frames are refused**: they hold bytes that no check can vouch for, our writer
//! and the `zstd` CLI never write them (`pzstd` does: recompress such a file with `zstd`).

use std::fmt;
use std::io::{self, BufRead, Write};
use std::ops::RangeInclusive;
use std::path::Path;

use serde::{Deserialize, Serialize};
use zstd::zstd_safe::{self, DParameter, InBuffer, OutBuffer, ResetDirective};

use super::gzip::ParallelGzEncoder;
use super::inflate::{self, GzError};

/// The compression of a backup file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    #[default]
    Gzip,
    Zstd,
    None,
}

/// zstd frame magic number, little-endian.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// zstd input bytes per multithreaded job. libzstd holds about `workers + 3` jobs of input
/// and `workers + 2` of output (plus a window per worker): 1 MiB keeps the encoder near
/// 12 MiB on two cores (4 MiB jobs took about 40 MiB), for about 1% in size on pg_dump text.
const ZSTD_JOB: u32 = 1 << 20;
/// Input staged before it goes to libzstd, to choose its level (see [`ZstdWriter`]).
const ZSTD_STAGE: usize = ZSTD_JOB as usize;
/// Largest zstd block (the format's limit, and the size of our raw blocks).
const ZSTD_BLOCK: usize = 128 << 10;
/// Largest zstd window accepted when decoding (libzstd's default limit, 128 MiB).
const ZSTD_WINDOW_LOG_MAX: u32 = 27;

impl Codec {
    pub const ALL: [Codec; 3] = [Codec::Gzip, Codec::Zstd, Codec::None];

    /// Parses the `compression` input.
    pub fn parse(s: &str) -> Result<Codec, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "gzip" | "gz" => Ok(Codec::Gzip),
            "zstd" | "zst" => Ok(Codec::Zstd),
            "none" => Ok(Codec::None),
            other => Err(format!(
                "compression `{other}` is not supported: use gzip, zstd or none"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Codec::Gzip => "gzip",
            Codec::Zstd => "zstd",
            Codec::None => "none",
        }
    }

    /// The suffix after `.sql`/`.tar`: `.gz`, `.zst` or nothing.
    pub fn ext(self) -> &'static str {
        match self {
            Codec::Gzip => ".gz",
            Codec::Zstd => ".zst",
            Codec::None => "",
        }
    }

    /// The codec a file's name says (`….zst`, `….sql`/`….tar`; anything else is gzip, as
    /// every backup before this option was).
    pub fn from_path(p: &Path) -> Codec {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let name = name.strip_suffix(".age").unwrap_or(&name);
        if name.ends_with(".zst") || name.ends_with(".zstd") {
            Codec::Zstd
        } else if name.ends_with(".sql") || name.ends_with(".tar") {
            Codec::None
        } else {
            Codec::Gzip
        }
    }

    /// Valid `compression-level` values.
    pub fn levels(self) -> RangeInclusive<u32> {
        match self {
            Codec::Gzip => 0..=9,
            Codec::Zstd => 1..=19,
            Codec::None => 0..=0,
        }
    }

    pub fn default_level(self) -> u32 {
        match self {
            Codec::Gzip => 6,
            Codec::Zstd => 3,
            Codec::None => 0,
        }
    }

    /// The level to use: the given one when it is in range, else a message naming the range.
    pub fn level(self, given: Option<u32>) -> Result<u32, String> {
        let Some(l) = given else {
            return Ok(self.default_level());
        };
        match self {
            Codec::None => Ok(0), // no level to speak of: ignored
            _ if self.levels().contains(&l) => Ok(l),
            _ => Err(format!(
                "compression-level {l} is out of range for {}: use {}–{} (default {})",
                self.as_str(),
                self.levels().start(),
                self.levels().end(),
                self.default_level()
            )),
        }
    }

    /// The shell command that writes a file's decoded content to stdout.
    pub fn cat_command(self) -> &'static str {
        match self {
            Codec::Gzip => "gunzip -c",
            Codec::Zstd => "zstd -dc",
            Codec::None => "cat",
        }
    }

    /// The verification check that decodes this codec, if any.
    pub fn check_name(self) -> Option<&'static str> {
        match self {
            Codec::Gzip => Some("gzip"),
            Codec::Zstd => Some("zstd"),
            Codec::None => None,
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---------------------------------------------------------------- writer stack

/// Compresses into `W` with the chosen codec. Call [`Encoder::finish`] to complete the file.
pub enum Encoder<W: Write> {
    /// Boxed: the parallel encoder's state is large next to the others.
    Gzip(Box<ParallelGzEncoder<W>>),
    Zstd(Box<ZstdWriter<W>>),
    None(W),
}

impl<W: Write> Encoder<W> {
    /// `level` must be in [`Codec::levels`] (the `compression-level` input is checked there;
    /// gzip and libzstd clamp one outside).
    pub fn new(inner: W, codec: Codec, level: u32) -> io::Result<Self> {
        Ok(match codec {
            Codec::Gzip => Encoder::Gzip(Box::new(ParallelGzEncoder::new(inner, level))),
            Codec::Zstd => Encoder::Zstd(Box::new(ZstdWriter::new(inner, level as i32)?)),
            Codec::None => Encoder::None(inner),
        })
    }

    /// Writes what is buffered, ends the stream, and returns the inner writer (flushed).
    pub fn finish(self) -> io::Result<W> {
        let mut w = match self {
            Encoder::Gzip(e) => e.finish()?,
            Encoder::Zstd(e) => e.finish()?,
            Encoder::None(w) => w,
        };
        w.flush()?;
        Ok(w)
    }
}

/// Multithreaded zstd frames (content checksum on) with an incompressible-data fast path.
///
/// Input is staged in [`ZSTD_STAGE`] pieces (one libzstd job each). A piece whose samples
/// do not shrink (the gzip writer's test: PDFs, images, archives) is written as a frame of
/// its own of raw blocks ([`write_raw_frame`]): what libzstd would emit for it too, without
/// its match finder and job copies over every byte (even at `--fast=1` those cost more than
/// the whole gzip writer, which stores such data). Any other piece goes to libzstd at the
/// chosen level, in one frame for each run of such pieces. A file is a sequence of
/// ordinary frames, which every zstd decoder reads as one stream (`zstd -d`, `zstd -t`,
/// `tar --zstd`). The workers compress while the caller keeps reading (pg_dump, Docker):
/// even one worker overlaps the two.
pub struct ZstdWriter<W: Write> {
    /// The open libzstd frame, or the file between frames; `None` after a failure.
    sink: Option<Sink<W>>,
    stage: Vec<u8>,
    level: i32,
    /// Whether any frame was written (an empty input still gets one).
    framed: bool,
    sampler: flate2::Compress,
}

enum Sink<W: Write> {
    Frame(zstd::stream::write::Encoder<'static, W>),
    Between(W),
}

impl<W: Write> ZstdWriter<W> {
    pub fn new(inner: W, level: i32) -> io::Result<Self> {
        Ok(ZstdWriter {
            sink: Some(Sink::Between(inner)),
            stage: Vec::new(),
            level,
            framed: false,
            sampler: flate2::Compress::new(flate2::Compression::new(1), false),
        })
    }

    fn take(&mut self) -> io::Result<Sink<W>> {
        self.sink.take().ok_or_else(failed_earlier)
    }

    /// The open libzstd frame, opened here if there is none.
    fn frame(&mut self) -> io::Result<zstd::stream::write::Encoder<'static, W>> {
        match self.take()? {
            Sink::Frame(e) => Ok(e),
            Sink::Between(w) => {
                let mut enc = zstd::stream::write::Encoder::new(w, self.level)?;
                enc.include_checksum(true)?;
                let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
                enc.multithread(threads.clamp(1, 8) as u32)?;
                enc.set_parameter(zstd_safe::CParameter::JobSize(ZSTD_JOB))?;
                self.framed = true;
                Ok(enc)
            }
        }
    }

    /// The file between frames: the open libzstd frame, if any, is ended here.
    fn between(&mut self) -> io::Result<W> {
        match self.take()? {
            Sink::Frame(e) => e.finish(),
            Sink::Between(w) => Ok(w),
        }
    }

    /// Writes `piece` the way its content calls for.
    fn put(&mut self, piece: &[u8]) -> io::Result<()> {
        let raw =
            piece.len() >= ZSTD_STAGE && super::gzip::incompressible(&mut self.sampler, piece)?;
        if raw {
            let mut w = self.between()?;
            write_raw_frame(&mut w, piece)?;
            self.framed = true;
            self.sink = Some(Sink::Between(w));
        } else {
            let mut e = self.frame()?;
            e.write_all(piece)?;
            self.sink = Some(Sink::Frame(e));
        }
        Ok(())
    }

    pub fn finish(mut self) -> io::Result<W> {
        let rest = std::mem::take(&mut self.stage);
        if !rest.is_empty() || !self.framed {
            self.put(&rest)?;
        }
        self.between()
    }
}

/// A [`ZstdWriter`] used after one of its writes failed (its sink went with the failure).
fn failed_earlier() -> io::Error {
    io::Error::other("the zstd writer failed earlier")
}

/// `data` as one zstd frame of raw blocks (RFC 8878 §3.1.1): single segment (the window is
/// the content size), the content size declared in 4 bytes, the content checksum on (the
/// low 32 bits of XXH64), like every frame this writer makes, so the verifier holds it to
/// the same checks.
fn write_raw_frame<W: Write>(w: &mut W, data: &[u8]) -> io::Result<()> {
    let size = u32::try_from(data.len()).map_err(io::Error::other)?;
    let mut head = [0u8; 9];
    head[..4].copy_from_slice(&ZSTD_MAGIC);
    // Frame_Header_Descriptor: FCS field of 4 bytes (2 << 6), Single_Segment (1 << 5),
    // Content_Checksum (1 << 2), no dictionary.
    head[4] = (2 << 6) | (1 << 5) | (1 << 2);
    head[5..].copy_from_slice(&size.to_le_bytes());
    w.write_all(&head)?;
    let mut blocks = data.chunks(ZSTD_BLOCK).peekable();
    while let Some(b) = blocks.next() {
        // Block_Header: Last_Block (bit 0), Block_Type 0 = raw (bits 1-2), Block_Size.
        let last = u32::from(blocks.peek().is_none());
        let h = ((b.len() as u32) << 3) | last;
        w.write_all(&h.to_le_bytes()[..3])?;
        w.write_all(b)?;
    }
    let sum = twox_hash::XxHash64::oneshot(0, data) as u32;
    w.write_all(&sum.to_le_bytes())
}

impl<W: Write> Write for ZstdWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            if self.stage.is_empty() && rest.len() >= ZSTD_STAGE {
                // A whole piece in the caller's buffer: no copy.
                let (piece, tail) = rest.split_at(ZSTD_STAGE);
                self.put(piece)?;
                rest = tail;
                continue;
            }
            if self.stage.capacity() == 0 {
                self.stage.reserve_exact(ZSTD_STAGE);
            }
            let take = (ZSTD_STAGE - self.stage.len()).min(rest.len());
            self.stage.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.stage.len() >= ZSTD_STAGE {
                let piece = std::mem::take(&mut self.stage);
                let r = self.put(&piece);
                self.stage = piece;
                self.stage.clear();
                r?;
            }
        }
        Ok(buf.len())
    }

    /// Passes the staged input on and flushes libzstd (ends the current block).
    fn flush(&mut self) -> io::Result<()> {
        let rest = std::mem::take(&mut self.stage);
        if !rest.is_empty() {
            let r = self.put(&rest);
            self.stage = rest;
            self.stage.clear();
            r?;
        }
        match &mut self.sink {
            Some(Sink::Frame(e)) => e.flush(),
            Some(Sink::Between(w)) => w.flush(),
            None => Err(failed_earlier()),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
            Encoder::None(w) => w.write(buf),
        }
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.write_all(buf),
            Encoder::Zstd(e) => e.write_all(buf),
            Encoder::None(w) => w.write_all(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
            Encoder::None(w) => w.flush(),
        }
    }
}

// ---------------------------------------------------------------- restoring

/// The decoded content of a file written with `codec`, handed to `sink` in blocks of at
/// most `out.len()` bytes (for restoring a verified file). It is [`decode`], the decoder
/// verification uses: one decoder per codec, so what was verified is what is restored, and
/// a stream that changed since is refused as strictly. `sink` returns `false` to stop
/// early; then the result is `Ok(false)`.
pub fn restore<R: BufRead>(
    codec: Codec,
    input: &mut R,
    out: &mut [u8],
    sink: &mut dyn FnMut(&[u8]) -> bool,
) -> Result<bool, DecodeError> {
    let mut whole = true;
    decode(codec, input, out, &mut |d| {
        whole = sink(d);
        whole
    })?;
    Ok(whole)
}

// ---------------------------------------------------------------- strict reader

/// Counts of a fully decoded stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// gzip members or zstd frames (0 for `none`).
    pub units: u64,
    pub compressed: u64,
    pub uncompressed: u64,
}

/// What is wrong with a zstd stream. Offsets are byte positions in the file; frames are
/// numbered from 1.
#[derive(Debug)]
pub enum ZstdError {
    Empty,
    NotZstd {
        first_bytes: Vec<u8>,
    },
    Skippable {
        frame: u64,
        offset: u64,
    },
    NoChecksum {
        frame: u64,
        offset: u64,
    },
    Truncated {
        frame: u64,
        offset: u64,
    },
    Corrupt {
        frame: u64,
        offset: u64,
        detail: String,
    },
    Size {
        frame: u64,
        offset: u64,
        declared: u64,
        actual: u64,
    },
    Trailing {
        frames: u64,
        offset: u64,
        zeros: bool,
        len: u64,
    },
    Io {
        offset: u64,
        error: io::Error,
    },
}

impl fmt::Display for ZstdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ZstdError::Empty => write!(f, "the file is empty"),
            ZstdError::NotZstd { first_bytes } => write!(
                f,
                "not zstd data: it starts with {}",
                inflate::describe_start(first_bytes)
            ),
            ZstdError::Skippable { frame, offset } => write!(
                f,
                "zstd frame {frame} at byte {offset} is a skippable frame: its bytes cannot be verified, so they are refused (recompress with `zstd`, which never writes them)"
            ),
            ZstdError::NoChecksum { frame, offset } => write!(
                f,
                "zstd frame {frame} at byte {offset} has no content checksum: it cannot be verified (compress with `zstd --check`, the default)"
            ),
            ZstdError::Truncated { frame, offset } => write!(
                f,
                "zstd frame {frame} is truncated at byte {offset} (the stream ends inside it)"
            ),
            ZstdError::Corrupt {
                frame,
                offset,
                detail,
            } => write!(
                f,
                "zstd frame {frame} is corrupt near byte {offset} ({detail})"
            ),
            ZstdError::Size {
                frame,
                offset,
                declared,
                actual,
            } => write!(
                f,
                "zstd frame {frame} at byte {offset} declares {declared} bytes of content but decodes to {actual}"
            ),
            ZstdError::Trailing {
                frames,
                offset,
                zeros: true,
                len,
            } => write!(
                f,
                "{len} zero bytes of padding follow the last zstd frame (frame {frames} ends at byte {offset})"
            ),
            ZstdError::Trailing { frames, offset, .. } => write!(
                f,
                "data that is not a zstd frame follows frame {frames} at byte {offset}"
            ),
            ZstdError::Io { offset, error } => {
                write!(f, "reading failed at byte {offset}: {error}")
            }
        }
    }
}

/// A decoding failure of any codec.
#[derive(Debug)]
pub enum DecodeError {
    Gzip(GzError),
    Zstd(ZstdError),
    /// Reading an uncompressed file failed.
    Io {
        offset: u64,
        error: io::Error,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Gzip(e) => e.fmt(f),
            DecodeError::Zstd(e) => e.fmt(f),
            DecodeError::Io { offset, error } => {
                write!(f, "reading failed at byte {offset}: {error}")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decodes the whole stream strictly, passing decoded data to `sink` in blocks of at most
/// `out.len()` bytes; `sink` returns `false` to stop early (the result is then `Ok`).
pub fn decode<R: BufRead>(
    codec: Codec,
    input: &mut R,
    out: &mut [u8],
    sink: &mut dyn FnMut(&[u8]) -> bool,
) -> Result<Stats, DecodeError> {
    match codec {
        Codec::Gzip => inflate::decode(input, out, sink)
            .map(|s| Stats {
                units: s.members,
                compressed: s.compressed,
                uncompressed: s.uncompressed,
            })
            .map_err(DecodeError::Gzip),
        Codec::Zstd => decode_zstd(input, out, sink).map_err(DecodeError::Zstd),
        Codec::None => {
            let mut total = 0u64;
            loop {
                let n = match input.read(out) {
                    Ok(0) => {
                        return Ok(Stats {
                            units: 0,
                            compressed: total,
                            uncompressed: total,
                        })
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(error) => {
                        return Err(DecodeError::Io {
                            offset: total,
                            error,
                        })
                    }
                };
                total += n as u64;
                if !sink(&out[..n]) {
                    return Ok(Stats {
                        units: 0,
                        compressed: total,
                        uncompressed: total,
                    });
                }
            }
        }
    }
}

fn fill<R: BufRead>(r: &mut R, pos: u64) -> Result<&[u8], ZstdError> {
    loop {
        match r.fill_buf() {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(ZstdError::Io { offset: pos, error }),
        }
    }
    r.fill_buf()
        .map_err(|error| ZstdError::Io { offset: pos, error })
}

/// Reads up to `want` bytes into `dst[have..want]`; returns the new count (less at EOF).
fn read_upto<R: BufRead>(
    r: &mut R,
    pos: &mut u64,
    dst: &mut [u8],
    mut have: usize,
    want: usize,
) -> Result<usize, ZstdError> {
    while have < want {
        let buf = fill(r, *pos)?;
        if buf.is_empty() {
            break;
        }
        let n = buf.len().min(want - have);
        dst[have..have + n].copy_from_slice(&buf[..n]);
        r.consume(n);
        *pos += n as u64;
        have += n;
    }
    Ok(have)
}

/// Counts what follows the last frame (to say whether it is zero padding).
fn trailing<R: BufRead>(r: &mut R, pos: u64, frames: u64, seen: &[u8]) -> ZstdError {
    let mut len = seen.len() as u64;
    let mut zeros = seen.iter().all(|&b| b == 0);
    let mut at = pos;
    while zeros {
        let Ok(buf) = fill(r, at) else { break };
        if buf.is_empty() {
            break;
        }
        match buf.iter().position(|&b| b != 0) {
            Some(_) => zeros = false,
            None => {
                let n = buf.len();
                len += n as u64;
                r.consume(n);
                at += n as u64;
            }
        }
    }
    ZstdError::Trailing {
        frames,
        offset: pos - seen.len() as u64,
        zeros,
        len,
    }
}

fn decode_zstd<R: BufRead>(
    input: &mut R,
    out: &mut [u8],
    sink: &mut dyn FnMut(&[u8]) -> bool,
) -> Result<Stats, ZstdError> {
    assert!(out.len() >= 1024, "output buffer too small");
    let mut dctx = zstd_safe::DCtx::create();
    let _ = dctx.set_parameter(DParameter::WindowLogMax(ZSTD_WINDOW_LOG_MAX));
    let mut pos = 0u64;
    let mut stats = Stats::default();
    loop {
        let frame = stats.units + 1;
        let start = pos;
        if stats.units == 0 {
            let head = fill(input, pos)?;
            if head.is_empty() {
                return Err(ZstdError::Empty);
            }
            let n = head.len().min(4);
            if head[..n] != ZSTD_MAGIC[..n] && !is_skippable(&head[..n]) {
                return Err(ZstdError::NotZstd {
                    first_bytes: head[..head.len().min(512)].to_vec(),
                });
            }
        }
        // The frame header: magic, descriptor, then the fields it announces (≤ 18 bytes).
        let mut hdr = [0u8; 18];
        let have = read_upto(input, &mut pos, &mut hdr, 0, 5)?;
        if have == 0 {
            stats.compressed = pos;
            return Ok(stats);
        }
        if have >= 4 && is_skippable(&hdr[..4]) {
            return Err(ZstdError::Skippable {
                frame,
                offset: start,
            });
        }
        let n = have.min(4);
        if hdr[..n] != ZSTD_MAGIC[..n] {
            return Err(trailing(input, pos, stats.units, &hdr[..have]));
        }
        if have < 5 {
            if stats.units > 0 && have < 4 {
                return Err(trailing(input, pos, stats.units, &hdr[..have]));
            }
            return Err(ZstdError::Truncated { frame, offset: pos });
        }
        let fhd = hdr[4];
        let single_segment = fhd & 0x20 != 0;
        let fcs_len = match fhd >> 6 {
            0 => usize::from(single_segment),
            1 => 2,
            2 => 4,
            _ => 8,
        };
        let did_len = [0, 1, 2, 4][(fhd & 3) as usize];
        let hlen = 5 + usize::from(!single_segment) + did_len + fcs_len;
        if fhd & 0x04 == 0 {
            return Err(ZstdError::NoChecksum {
                frame,
                offset: start,
            });
        }
        let have = read_upto(input, &mut pos, &mut hdr, 5, hlen)?;
        if have < hlen {
            return Err(ZstdError::Truncated { frame, offset: pos });
        }
        let fcs = &hdr[hlen - fcs_len..hlen];
        let declared = match fcs_len {
            0 => None,
            1 => Some(fcs[0] as u64),
            2 => Some(u16::from_le_bytes([fcs[0], fcs[1]]) as u64 + 256),
            4 => Some(u32::from_le_bytes(fcs.try_into().unwrap_or([0; 4])) as u64),
            _ => Some(u64::from_le_bytes(fcs.try_into().unwrap_or([0; 8]))),
        };

        let _ = dctx.reset(ResetDirective::SessionOnly);
        let mut produced = 0u64;
        let corrupt = |code: usize, at: u64| ZstdError::Corrupt {
            frame,
            offset: at,
            detail: zstd_safe::get_error_name(code).to_string(),
        };
        // Feed the header we already read.
        let mut inb = InBuffer::around(&hdr[..hlen]);
        while inb.pos() < hlen {
            let mut o = OutBuffer::around(&mut *out);
            dctx.decompress_stream(&mut o, &mut inb)
                .map_err(|c| corrupt(c, start))?;
            let k = o.pos();
            if k > 0 {
                produced += k as u64;
                if !sink(&out[..k]) {
                    stats.uncompressed += produced;
                    return Ok(stats);
                }
            }
        }
        // Then the blocks, until libzstd says the frame is complete and flushed.
        loop {
            let buf = fill(input, pos)?;
            let eof = buf.is_empty();
            let mut inb = InBuffer::around(buf);
            let mut o = OutBuffer::around(&mut *out);
            let r = dctx.decompress_stream(&mut o, &mut inb);
            let used = inb.pos();
            let k = o.pos();
            input.consume(used);
            pos += used as u64;
            let r = r.map_err(|c| corrupt(c, pos))?;
            if k > 0 {
                produced += k as u64;
                if !sink(&out[..k]) {
                    stats.uncompressed += produced;
                    return Ok(stats);
                }
            }
            if r == 0 {
                break;
            }
            if eof && k == 0 {
                return Err(ZstdError::Truncated { frame, offset: pos });
            }
        }
        if let Some(d) = declared {
            if d != produced {
                return Err(ZstdError::Size {
                    frame,
                    offset: start,
                    declared: d,
                    actual: produced,
                });
            }
        }
        stats.units += 1;
        stats.uncompressed += produced;
    }
}

fn is_skippable(b: &[u8]) -> bool {
    b.len() >= 4 && b[0] & 0xf0 == 0x50 && b[1..4] == [0x2a, 0x4d, 0x18]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::testutil::{dump_text, Rng};
    use std::io::Read;

    pub(crate) fn zst(data: &[u8], level: i32) -> Vec<u8> {
        let mut e = Encoder::new(Vec::new(), Codec::Zstd, level as u32).unwrap();
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// What an independent decoder (flate2's, the zstd crate's) reads from `file`.
    fn oracle(codec: Codec, file: &[u8]) -> Vec<u8> {
        let mut back = Vec::new();
        match codec {
            Codec::Gzip => {
                flate2::read::MultiGzDecoder::new(file)
                    .read_to_end(&mut back)
                    .unwrap();
            }
            Codec::Zstd => back = zstd::stream::decode_all(file).unwrap(),
            Codec::None => back = file.to_vec(),
        }
        back
    }

    #[test]
    fn restore_hands_on_what_was_written_and_stops_when_asked() {
        let text = dump_text(&[("public.t", 30_000)], None);
        for codec in Codec::ALL {
            let mut e = Encoder::new(Vec::new(), codec, codec.default_level()).unwrap();
            e.write_all(&text).unwrap();
            let file = e.finish().unwrap();
            let (mut got, mut out) = (Vec::new(), vec![0u8; 4096]);
            let whole = restore(codec, &mut &file[..], &mut out, &mut |d| {
                got.extend_from_slice(d);
                true
            })
            .unwrap();
            assert!(whole && got == text, "{codec}");
            let mut blocks = 0;
            let whole = restore(codec, &mut &file[..], &mut out, &mut |_| {
                blocks += 1;
                blocks < 2
            })
            .unwrap();
            assert!(!whole && blocks == 2, "{codec}");
            if codec != Codec::None {
                // A changed byte near the end is refused, as verification refuses it.
                let mut bad = file.clone();
                let i = bad.len() - 6;
                bad[i] ^= 0x55;
                assert!(
                    restore(codec, &mut &bad[..], &mut out, &mut |_| true).is_err(),
                    "{codec}"
                );
            }
        }
    }

    fn strict(bytes: &[u8]) -> Result<Stats, ZstdError> {
        let mut out = vec![0u8; 64 * 1024];
        let mut r = io::BufReader::with_capacity(4096, bytes);
        decode_zstd(&mut r, &mut out, &mut |_| true)
    }

    fn zstd_cli_t(bytes: &[u8]) -> bool {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.zst");
        std::fs::write(&p, bytes).unwrap();
        std::process::Command::new("zstd")
            .arg("-tq")
            .arg(&p)
            .status()
            .map(|s| s.success())
            .unwrap_or(true) // no CLI: nothing to compare with
    }

    #[test]
    fn round_trip_every_codec_and_the_cli_agrees() {
        let text = dump_text(&[("public.t", 60_000)], None);
        for codec in Codec::ALL {
            let mut e = Encoder::new(Vec::new(), codec, codec.default_level()).unwrap();
            e.write_all(&text).unwrap();
            let file = e.finish().unwrap();
            assert_eq!(oracle(codec, &file), text, "{codec}");
            let mut got = Vec::new();
            let mut out = vec![0u8; 4096];
            let s = decode(codec, &mut &file[..], &mut out, &mut |d| {
                got.extend_from_slice(d);
                true
            })
            .unwrap();
            assert_eq!(got, text);
            assert_eq!(s.uncompressed, text.len() as u64);
        }
        let z = zst(&text, 3);
        assert!(zstd_cli_t(&z));
        assert!(z.len() < text.len() / 3);
    }

    #[test]
    fn incompressible_data_stays_within_one_percent() {
        let data = Rng::new(3).bytes(9 << 20);
        let z = zst(&data, 3);
        assert!(z.len() as f64 <= data.len() as f64 * 1.01);
        assert_eq!(strict(&z).unwrap().uncompressed, data.len() as u64);
    }

    #[test]
    fn incompressible_pieces_take_the_fast_path_and_text_stays_compressed() {
        // Random, text, random, text: one frame, every byte back, the text still packed.
        let text = dump_text(&[("public.t", 120_000)], None);
        let noise = Rng::new(7).bytes(3 << 20);
        let mut data = Vec::new();
        for _ in 0..2 {
            data.extend_from_slice(&noise);
            data.extend_from_slice(&text);
        }
        let mut e = Encoder::new(Vec::new(), Codec::Zstd, 3).unwrap();
        for piece in data.chunks(100_003) {
            e.write_all(piece).unwrap();
        }
        let z = e.finish().unwrap();
        let s = strict(&z).unwrap();
        // Each whole staged MiB of noise is a raw frame of its own (3, then 2 after the
        // text, whose end is not on a MiB boundary), each run of other pieces one frame.
        assert!(s.units >= 6, "{} frames", s.units);
        assert_eq!(s.uncompressed, data.len() as u64);
        assert!(oracle(Codec::Zstd, &z) == data);
        let text_alone = zst(&text, 3).len();
        assert!(
            z.len() < 2 * noise.len() + 2 * text_alone + text_alone / 2,
            "{} vs {} + 2 x {text_alone}",
            z.len(),
            2 * noise.len()
        );
        assert!(zstd_cli_t(&z));
    }

    /// Our raw frames, at the block limit and around it, are what libzstd, the zstd CLI and
    /// the verifier accept, checksum included; one byte changed fails the checksum.
    #[test]
    fn raw_frames_decode_everywhere_and_carry_their_checksum() {
        for n in [1, ZSTD_BLOCK - 1, ZSTD_BLOCK, ZSTD_BLOCK + 1, ZSTD_STAGE] {
            let data = Rng::new(n as u64).bytes(n);
            let mut z = Vec::new();
            write_raw_frame(&mut z, &data).unwrap();
            assert_eq!(z.len(), 9 + 3 * n.div_ceil(ZSTD_BLOCK) + n + 4, "{n}");
            let s = strict(&z).unwrap();
            assert_eq!((s.units, s.uncompressed), (1, n as u64));
            assert_eq!(zstd::decode_all(&z[..]).unwrap(), data);
            assert!(zstd_cli_t(&z), "{n}");
            let mut bad = z.clone();
            bad[9 + 3 + n / 2] ^= 1;
            assert!(strict(&bad).is_err(), "{n}: a flipped byte must fail");
        }
    }

    #[test]
    fn concatenated_frames_are_valid() {
        let mut z = zst(b"first\n", 3);
        z.extend(zst(b"second\n", 19));
        let s = strict(&z).unwrap();
        assert_eq!(s.units, 2);
        assert_eq!(s.uncompressed, 13);
        assert!(zstd_cli_t(&z));
    }

    #[test]
    fn empty_input_is_one_valid_frame() {
        let z = zst(b"", 3);
        assert_eq!(strict(&z).unwrap().units, 1);
        assert!(matches!(strict(b""), Err(ZstdError::Empty)));
    }

    #[test]
    fn faults_are_found_and_placed() {
        let text = dump_text(&[("public.t", 20_000)], None);
        let z = zst(&text, 3);
        // Truncated mid-frame, at many places.
        for cut in [3, 5, 9, z.len() / 2, z.len() - 4, z.len() - 1] {
            let e = strict(&z[..cut]).unwrap_err();
            assert!(
                matches!(e, ZstdError::Truncated { frame: 1, .. }),
                "cut {cut}: {e}"
            );
        }
        // A flipped byte in the data or in the checksum.
        for at in [z.len() / 3, z.len() - 2] {
            let mut b = z.clone();
            b[at] ^= 0x40;
            let e = strict(&b).unwrap_err();
            assert!(
                matches!(e, ZstdError::Corrupt { frame: 1, .. }),
                "{at}: {e}"
            );
        }
        // Trailing garbage, and zero padding.
        let mut b = z.clone();
        b.extend_from_slice(b"garbage");
        let e = strict(&b).unwrap_err();
        assert!(matches!(e, ZstdError::Trailing { zeros: false, .. }), "{e}");
        let mut b = z.clone();
        b.extend_from_slice(&[0; 4000]);
        match strict(&b).unwrap_err() {
            ZstdError::Trailing {
                zeros: true,
                len,
                frames: 1,
                ..
            } => assert_eq!(len, 4000),
            e => panic!("{e}"),
        }
        // A skippable frame, first or after a frame.
        let skip = [0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, b'a', b'b', b'c'];
        let mut b = skip.to_vec();
        b.extend_from_slice(&z);
        assert!(matches!(
            strict(&b).unwrap_err(),
            ZstdError::Skippable {
                frame: 1,
                offset: 0
            }
        ));
        let mut b = z.clone();
        b.extend_from_slice(&skip);
        assert!(matches!(
            strict(&b).unwrap_err(),
            ZstdError::Skippable { frame: 2, .. }
        ));
        // No checksum flag.
        let mut c = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        c.include_checksum(false).unwrap();
        c.write_all(&text).unwrap();
        let nock = c.finish().unwrap();
        assert!(matches!(
            strict(&nock).unwrap_err(),
            ZstdError::NoChecksum {
                frame: 1,
                offset: 0
            }
        ));
        // Not zstd at all.
        assert!(matches!(
            strict(&text).unwrap_err(),
            ZstdError::NotZstd { .. }
        ));
    }

    #[test]
    fn a_wrong_declared_content_size_fails() {
        let data = b"hello world, hello world".repeat(10);
        let mut c = zstd::bulk::Compressor::new(3).unwrap();
        c.set_parameter(zstd_safe::CParameter::ChecksumFlag(true))
            .unwrap();
        c.set_parameter(zstd_safe::CParameter::ContentSizeFlag(true))
            .unwrap();
        let mut z = c.compress(&data).unwrap();
        assert!(strict(&z).is_ok());
        // FHD says a 1-byte (single segment) or 2-byte FCS; bump the declared size.
        let fhd = z[4];
        assert!(fhd >> 6 <= 1);
        let at = 5 + usize::from(fhd & 0x20 == 0);
        z[at] = z[at].wrapping_add(1);
        let e = strict(&z).unwrap_err();
        assert!(
            matches!(e, ZstdError::Size { .. } | ZstdError::Corrupt { .. }),
            "{e}"
        );
    }

    #[test]
    fn levels_are_checked_per_codec() {
        assert_eq!(Codec::Gzip.level(None), Ok(6));
        assert_eq!(Codec::Zstd.level(None), Ok(3));
        assert_eq!(Codec::Zstd.level(Some(19)), Ok(19));
        assert!(Codec::Zstd.level(Some(0)).unwrap_err().contains("1–19"));
        assert!(Codec::Zstd.level(Some(20)).unwrap_err().contains("1–19"));
        assert!(Codec::Gzip.level(Some(10)).unwrap_err().contains("0–9"));
        assert_eq!(Codec::from_path(Path::new("a/db.sql.zst")), Codec::Zstd);
        assert_eq!(Codec::from_path(Path::new("v.tar")), Codec::None);
        assert_eq!(Codec::from_path(Path::new("v.tar.gz")), Codec::Gzip);
        assert!(Codec::parse("lz4").is_err());
    }
}
