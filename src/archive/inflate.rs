//! Strict decoding of a multi-member gzip stream (RFC 1952).
//!
//! `flate2::read::MultiGzDecoder` would decode the same streams, but it cannot say *where* a
//! stream is broken (which member, which byte) and it is lenient about what follows the last
//! member. Verification needs both: a message that tells the user "member 2 is truncated at
//! byte 81234" and a hard failure on any trailing byte, zero padding included. So this module
//! parses each member's header and trailer itself and inflates the raw deflate data with
//! flate2's zlib-rs backend, checking the CRC-32 and ISIZE of every member.
//!
//! The decoder pulls from any [`BufRead`] and pushes the decompressed bytes to a sink
//! closure in blocks of the caller's output buffer, so memory stays constant.

use std::fmt;
use std::io::{self, BufRead};

use flate2::{Decompress, FlushDecompress, Status};

/// Counts of a fully decoded stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GzStats {
    /// Number of gzip members.
    pub members: u64,
    /// Bytes of the gzip stream (the compressed file).
    pub compressed: u64,
    /// Bytes after decompression.
    pub uncompressed: u64,
}

/// Where a gzip member ended before it should have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Header,
    Data,
    Trailer,
}

impl Part {
    fn as_str(self) -> &'static str {
        match self {
            Part::Header => "header",
            Part::Data => "compressed data",
            Part::Trailer => "CRC/length trailer",
        }
    }
}

/// What is wrong with a gzip stream. Offsets are byte positions in the compressed stream;
/// members are numbered from 1.
#[derive(Debug)]
pub enum GzError {
    /// Not a single byte.
    Empty,
    /// The first bytes are not the gzip magic number.
    NotGzip { first_bytes: Vec<u8> },
    /// A header field is invalid (wrong method, reserved flags, header CRC).
    BadHeader {
        member: u64,
        offset: u64,
        what: String,
    },
    /// The stream ends inside a member.
    Truncated {
        member: u64,
        offset: u64,
        part: Part,
    },
    /// The deflate data cannot be decoded.
    Corrupt {
        member: u64,
        offset: u64,
        detail: String,
    },
    /// The CRC-32 in the trailer does not match the decompressed data.
    Crc {
        member: u64,
        offset: u64,
        stored: u32,
        actual: u32,
    },
    /// The length in the trailer does not match the decompressed data (mod 2^32).
    Length {
        member: u64,
        offset: u64,
        stored: u32,
        actual: u32,
    },
    /// Bytes follow the last complete member. `zeros` when every one of them is a zero byte
    /// (`len` then counts them all); otherwise `len` is the count up to the first non-zero one.
    Trailing {
        members: u64,
        offset: u64,
        zeros: bool,
        len: u64,
    },
    /// Reading the stream failed.
    Io { offset: u64, error: io::Error },
}

impl GzError {
    /// The byte offset the problem was found at, when there is one.
    pub fn offset(&self) -> Option<u64> {
        match self {
            GzError::Empty | GzError::NotGzip { .. } => Some(0),
            GzError::BadHeader { offset, .. }
            | GzError::Truncated { offset, .. }
            | GzError::Corrupt { offset, .. }
            | GzError::Crc { offset, .. }
            | GzError::Length { offset, .. }
            | GzError::Trailing { offset, .. }
            | GzError::Io { offset, .. } => Some(*offset),
        }
    }
}

impl fmt::Display for GzError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GzError::Empty => write!(f, "the file is empty"),
            GzError::NotGzip { first_bytes } => {
                write!(f, "not gzip data: it starts with {}", describe_start(first_bytes))
            }
            GzError::BadHeader { member, offset, what } => {
                write!(f, "gzip member {member} has an invalid header at byte {offset}: {what}")
            }
            GzError::Truncated {
                member,
                offset,
                part,
            } => write!(
                f,
                "gzip member {member} is truncated at byte {offset} (the stream ends inside its {})",
                part.as_str()
            ),
            GzError::Corrupt {
                member,
                offset,
                detail,
            } => write!(
                f,
                "gzip member {member} has corrupt compressed data near byte {offset} ({detail})"
            ),
            GzError::Crc {
                member,
                offset,
                stored,
                actual,
            } => write!(
                f,
                "gzip member {member} fails its CRC-32 check (trailer at byte {offset} says {stored:08x}, the data gives {actual:08x})"
            ),
            GzError::Length {
                member,
                offset,
                stored,
                actual,
            } => write!(
                f,
                "gzip member {member} has the wrong length (trailer at byte {offset} says {stored} bytes mod 2^32, the data has {actual})"
            ),
            GzError::Trailing {
                members,
                offset,
                zeros: true,
                len,
            } => write!(
                f,
                "{len} zero bytes of padding follow the last gzip member (member {members} ends at byte {offset})"
            ),
            GzError::Trailing {
                members, offset, ..
            } => write!(
                f,
                "data that is not a gzip member follows member {members} at byte {offset}"
            ),
            GzError::Io { offset, error } => write!(f, "reading failed at byte {offset}: {error}"),
        }
    }
}

impl std::error::Error for GzError {}

/// A short, safe description of the first bytes of a file that should have been gzip.
pub fn describe_start(first: &[u8]) -> String {
    let n = first.len().min(24);
    let head = &first[..n];
    let printable = !head.is_empty()
        && head
            .iter()
            .all(|&b| b == b'\n' || b == b'\r' || b == b'\t' || (0x20..0x7f).contains(&b));
    if printable {
        let text: String = String::from_utf8_lossy(head).escape_debug().collect();
        format!("plain text \"{text}\"")
    } else {
        let hex: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!("the bytes {}", hex.join(" "))
    }
}

/// A `BufRead` wrapper that counts consumed bytes and can CRC the header bytes it hands out.
struct Tracked<'a, R: BufRead> {
    r: &'a mut R,
    pos: u64,
}

impl<R: BufRead> Tracked<'_, R> {
    fn fill(&mut self) -> Result<&[u8], GzError> {
        let pos = self.pos;
        loop {
            match self.r.fill_buf() {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(GzError::Io { offset: pos, error }),
            }
        }
        // Re-borrow outside the loop (the borrow checker cannot see through the retry).
        self.r
            .fill_buf()
            .map_err(|error| GzError::Io { offset: pos, error })
    }

    fn consume(&mut self, n: usize) {
        self.r.consume(n);
        self.pos += n as u64;
    }

    /// One byte, or `None` at end of stream.
    fn byte(&mut self) -> Result<Option<u8>, GzError> {
        let buf = self.fill()?;
        match buf.first() {
            Some(&b) => {
                self.consume(1);
                Ok(Some(b))
            }
            None => Ok(None),
        }
    }
}

/// Decodes every member of a gzip stream, passing decompressed data to `sink` in blocks of
/// at most `out.len()` bytes. `sink` returns `false` to stop early (the result is then `Ok`
/// with the counts so far, and the rest of the stream is not read).
///
/// On success the stream was read to its end and every member's CRC-32 and length matched.
pub fn decode<R: BufRead>(
    input: &mut R,
    out: &mut [u8],
    sink: &mut dyn FnMut(&[u8]) -> bool,
) -> Result<GzStats, GzError> {
    assert!(out.len() >= 1024, "output buffer too small");
    let mut t = Tracked { r: input, pos: 0 };
    let mut stats = GzStats::default();
    let mut inflater = Decompress::new(false);

    loop {
        let member = stats.members + 1;
        let start = t.pos;
        // End of stream, or the start of the next member?
        let head = t.fill()?;
        if head.is_empty() {
            if stats.members == 0 {
                return Err(GzError::Empty);
            }
            stats.compressed = t.pos;
            return Ok(stats);
        }
        if stats.members == 0 && (head[0] != 0x1f || (head.len() > 1 && head[1] != 0x8b)) {
            return Err(GzError::NotGzip {
                first_bytes: head[..head.len().min(512)].to_vec(),
            });
        }
        if stats.members > 0 && (head[0] != 0x1f || (head.len() > 1 && head[1] != 0x8b)) {
            return Err(trailing(&mut t, stats.members, start));
        }

        // Header (10 fixed bytes + optional fields).
        let mut hcrc = crc32fast::Hasher::new();
        let mut fixed = [0u8; 10];
        for (i, slot) in fixed.iter_mut().enumerate() {
            match t.byte()? {
                Some(b) => *slot = b,
                None if i == 1 && stats.members > 0 => {
                    // A lone 0x1f after a member is trailing data, not a truncated member.
                    return Err(GzError::Trailing {
                        members: stats.members,
                        offset: start,
                        zeros: false,
                        len: 1,
                    });
                }
                None => {
                    return Err(GzError::Truncated {
                        member,
                        offset: t.pos,
                        part: Part::Header,
                    })
                }
            }
        }
        if fixed[1] != 0x8b {
            // Only reachable when the first fill returned a single byte.
            if stats.members == 0 {
                return Err(GzError::NotGzip {
                    first_bytes: fixed.to_vec(),
                });
            }
            return Err(GzError::Trailing {
                members: stats.members,
                offset: start,
                zeros: false,
                len: 1,
            });
        }
        hcrc.update(&fixed);
        if fixed[2] != 8 {
            return Err(GzError::BadHeader {
                member,
                offset: start + 2,
                what: format!("compression method {} (only 8, deflate, exists)", fixed[2]),
            });
        }
        let flags = fixed[3];
        if flags & 0xe0 != 0 {
            return Err(GzError::BadHeader {
                member,
                offset: start + 3,
                what: format!("reserved flag bits are set ({flags:#04x})"),
            });
        }
        let truncated_header = |pos: u64| GzError::Truncated {
            member,
            offset: pos,
            part: Part::Header,
        };
        if flags & 0x04 != 0 {
            // FEXTRA: 2-byte length, then that many bytes.
            let lo = t.byte()?.ok_or_else(|| truncated_header(t.pos))?;
            let hi = t.byte()?.ok_or_else(|| truncated_header(t.pos))?;
            hcrc.update(&[lo, hi]);
            let mut left = u16::from_le_bytes([lo, hi]) as usize;
            while left > 0 {
                let buf = t.fill()?;
                if buf.is_empty() {
                    return Err(truncated_header(t.pos));
                }
                let n = left.min(buf.len());
                hcrc.update(&buf[..n]);
                t.consume(n);
                left -= n;
            }
        }
        for flag in [0x08u8, 0x10] {
            // FNAME, FCOMMENT: zero-terminated strings.
            if flags & flag != 0 {
                loop {
                    let buf = t.fill()?;
                    if buf.is_empty() {
                        return Err(truncated_header(t.pos));
                    }
                    match buf.iter().position(|&b| b == 0) {
                        Some(i) => {
                            hcrc.update(&buf[..=i]);
                            t.consume(i + 1);
                            break;
                        }
                        None => {
                            let n = buf.len();
                            hcrc.update(buf);
                            t.consume(n);
                        }
                    }
                }
            }
        }
        if flags & 0x02 != 0 {
            let at = t.pos;
            let lo = t.byte()?.ok_or_else(|| truncated_header(t.pos))?;
            let hi = t.byte()?.ok_or_else(|| truncated_header(t.pos))?;
            let stored = u16::from_le_bytes([lo, hi]);
            let actual = (hcrc.finalize() & 0xffff) as u16;
            if stored != actual {
                return Err(GzError::BadHeader {
                    member,
                    offset: at,
                    what: format!("header CRC {stored:04x} does not match {actual:04x}"),
                });
            }
        }

        // Deflate data.
        inflater.reset(false);
        let mut crc = crc32fast::Hasher::new();
        let mut size: u64 = 0;
        loop {
            let buf = t.fill()?;
            let eof = buf.is_empty();
            let (in0, out0) = (inflater.total_in(), inflater.total_out());
            let status = inflater.decompress(buf, out, FlushDecompress::None);
            let consumed = (inflater.total_in() - in0) as usize;
            let produced = (inflater.total_out() - out0) as usize;
            t.consume(consumed);
            if produced > 0 {
                crc.update(&out[..produced]);
                size += produced as u64;
                stats.uncompressed += produced as u64;
                if !sink(&out[..produced]) {
                    stats.members = member;
                    stats.compressed = t.pos;
                    return Ok(stats);
                }
            }
            match status {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {
                    if consumed == 0 && produced == 0 {
                        if eof {
                            return Err(GzError::Truncated {
                                member,
                                offset: t.pos,
                                part: Part::Data,
                            });
                        }
                        // No progress with input available and an empty output buffer
                        // should not happen; refuse rather than spin.
                        return Err(GzError::Corrupt {
                            member,
                            offset: t.pos,
                            detail: "the decoder made no progress".into(),
                        });
                    }
                }
                Err(e) => {
                    let detail = e.to_string();
                    return Err(GzError::Corrupt {
                        member,
                        offset: t.pos,
                        detail: if detail.is_empty() {
                            "invalid deflate data".into()
                        } else {
                            detail
                        },
                    });
                }
            }
        }

        // Trailer: CRC-32 and ISIZE, little-endian.
        let trailer_at = t.pos;
        let mut trailer = [0u8; 8];
        for slot in trailer.iter_mut() {
            *slot = t.byte()?.ok_or(GzError::Truncated {
                member,
                offset: t.pos,
                part: Part::Trailer,
            })?;
        }
        let stored_crc = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
        let stored_len = u32::from_le_bytes([trailer[4], trailer[5], trailer[6], trailer[7]]);
        let actual_crc = crc.finalize();
        if stored_crc != actual_crc {
            return Err(GzError::Crc {
                member,
                offset: trailer_at,
                stored: stored_crc,
                actual: actual_crc,
            });
        }
        if stored_len != size as u32 {
            return Err(GzError::Length {
                member,
                offset: trailer_at + 4,
                stored: stored_len,
                actual: size as u32,
            });
        }
        stats.members = member;
    }
}

/// Classifies what follows the last member: all zeros (padding) or anything else.
fn trailing<R: BufRead>(t: &mut Tracked<'_, R>, members: u64, offset: u64) -> GzError {
    let mut len = 0u64;
    loop {
        let buf = match t.fill() {
            Ok(b) => b,
            Err(e) => return e,
        };
        if buf.is_empty() {
            return GzError::Trailing {
                members,
                offset,
                zeros: true,
                len,
            };
        }
        match buf.iter().position(|&b| b != 0) {
            Some(i) => {
                return GzError::Trailing {
                    members,
                    offset,
                    zeros: false,
                    len: len + i as u64,
                }
            }
            None => {
                let n = buf.len();
                len += n as u64;
                t.consume(n);
            }
        }
    }
}
