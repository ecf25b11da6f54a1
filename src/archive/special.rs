//! Drops setuid, setgid and sticky bits from a (checked) tar stream on its way to a volume.
//!
//! A restored archive is data: unless the user opts in (`restore-special-bits: true`), no
//! entry comes back setuid/setgid/sticky. [`SpecialBits`] is fed the uncompressed tar stream
//! in blocks of any size and gives back the same bytes with each header's mode field masked
//! to `0o777` and its checksum recomputed. It walks the stream with the same
//! [`TarWalker`](super::tarwalk::TarWalker) as the checks, and holds back the last 512 bytes
//! (a header not complete yet) so that every header can still be patched.

use super::tarwalk::TarWalker;

/// See the module documentation.
pub struct SpecialBits {
    walker: TarWalker,
    /// Bytes fed but not yet given back, starting at stream offset `base`.
    held: Vec<u8>,
    base: u64,
    /// How many headers had a bit dropped.
    pub dropped: u64,
    /// Up to 10 of their paths, for the log.
    pub paths: Vec<String>,
}

impl Default for SpecialBits {
    fn default() -> Self {
        Self::new()
    }
}

impl SpecialBits {
    pub fn new() -> Self {
        SpecialBits {
            walker: TarWalker::new(),
            held: Vec::new(),
            base: 0,
            dropped: 0,
            paths: Vec::new(),
        }
    }

    /// The next bytes of the tar stream; returns what can be passed on.
    pub fn feed(&mut self, data: &[u8]) -> Result<Vec<u8>, String> {
        self.held.extend_from_slice(data);
        let mut patch = vec![];
        let mut paths = vec![];
        self.walker
            .feed(data, &mut |e| {
                if e.mode & 0o7000 != 0 {
                    patch.push(e.offset);
                    paths.push(e.path_lossy());
                }
                Ok(())
            })
            .map_err(|e| e.to_string())?;
        for at in patch {
            let i = at
                .checked_sub(self.base)
                .ok_or("a tar header was already passed on")? as usize;
            let h = self
                .held
                .get_mut(i..i + 512)
                .ok_or("a tar header lies past the data")?;
            clear_special(h)?;
            self.dropped += 1;
        }
        for p in paths {
            if self.paths.len() < 10 {
                self.paths.push(p);
            }
        }
        let keep = self.held.len().min(512);
        let out: Vec<u8> = self.held.drain(..self.held.len() - keep).collect();
        self.base += out.len() as u64;
        Ok(out)
    }

    /// The held-back end of the stream.
    pub fn finish(mut self) -> Result<Vec<u8>, String> {
        self.walker.finish().map_err(|e| e.to_string())?;
        Ok(std::mem::take(&mut self.held))
    }
}

/// Masks the mode field (octal, offset 100, 8 bytes) of a ustar/GNU header to `0o777` and
/// rewrites the checksum.
fn clear_special(h: &mut [u8]) -> Result<(), String> {
    let field = &h[100..108];
    let text: String = field
        .iter()
        .take_while(|&&b| b != 0 && b != b' ')
        .map(|&b| b as char)
        .collect();
    let text = text.trim_start_matches(' ');
    let mode = u64::from_str_radix(text, 8)
        .map_err(|_| format!("a tar mode field `{text}` is not octal"))?;
    h[100..108].copy_from_slice(format!("{:07o}\0", mode & 0o777).as_bytes());
    h[148..156].fill(b' ');
    let sum: u64 = h.iter().map(|&b| b as u64).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(modes: &[(&str, u32, tar::EntryType)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, mode, kind) in modes {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(*kind);
            h.set_mode(*mode);
            let data: &[u8] = if kind.is_file() { b"hello" } else { b"" };
            h.set_size(data.len() as u64);
            h.set_cksum();
            b.append_data(&mut h, name, data).unwrap();
        }
        // A long name (GNU record before the header).
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o4755);
        h.set_size(3);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, format!("{}/x", "d".repeat(150)), &b"abc"[..])
            .unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn special_bits_are_dropped_and_everything_else_is_kept() {
        let t = tar_with(&[
            ("./", 0o1777, tar::EntryType::Directory),
            ("./suid", 0o4755, tar::EntryType::Regular),
            ("./sgid", 0o2750, tar::EntryType::Directory),
            ("./plain", 0o640, tar::EntryType::Regular),
        ]);
        for step in [1, 7, 512, 513, 4096, 1 << 20] {
            let mut f = SpecialBits::new();
            let mut out = vec![];
            for c in t.chunks(step) {
                out.extend(f.feed(c).unwrap());
            }
            assert_eq!(f.dropped, 4, "step {step}");
            out.extend(f.finish().unwrap());
            assert_eq!(out.len(), t.len());
            let mut a = tar::Archive::new(&out[..]);
            let got: Vec<(String, u32)> = a
                .entries()
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    (
                        e.path().unwrap().display().to_string(),
                        e.header().mode().unwrap(),
                    )
                })
                .collect();
            assert_eq!(
                got[..4],
                [
                    ("./".to_string(), 0o777),
                    ("suid".into(), 0o755),
                    ("sgid".into(), 0o750),
                    ("plain".into(), 0o640)
                ],
                "step {step}"
            );
            assert_eq!(got[4].1, 0o755);
            // Checksums are valid: the strict walker accepts the result.
            let mut w = TarWalker::new();
            w.feed(&out, &mut |_| Ok(())).unwrap();
            w.finish().unwrap();
        }
    }
}
