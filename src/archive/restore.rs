//! Restore-time safety check of a volume archive (PRODUCT.md "Safety rules").
//!
//! [`check_archive`] reads a whole `.tar.gz` **before anything is written** and refuses it
//! when restoring it could write outside the target or mean different things to different
//! tar readers. It walks the archive with the same strict parser verification uses
//! ([`super::tarwalk`]: checksums, sizes, PAX/GNU overrides, end marker; no parser
//! differentials such as PAX size smuggling) and then applies path rules to every entry:
//!
//! - no absolute path, no `..` component, no NUL byte; `./a`, `a/` and `a` are one path;
//!   the archive root (`.` or `./`) may appear, as a folder only;
//! - no duplicate path (a second entry with a name already used, whatever the types: this
//!   covers "link then file" and "symlink then folder of the same name", RUSTSEC-2018-0002
//!   and RUSTSEC-2026-0067);
//! - no entry inside a symlink (`link/x`, RUSTSEC-2021-0080), and no entry inside a file;
//! - a hard link must name a regular file (or hard link to one) that an earlier entry
//!   created: not an absolute path, not `..`, not a symlink, not a folder, not unseen;
//! - a symlink's target must stay inside the archive root. Relative targets resolve from
//!   the link's folder. **Absolute targets resolve from the archive root**: a volume is
//!   mounted at some path inside its containers, and a link like `/data/x` is common in real
//!   volumes; it means the volume's view, so `/` is the volume root and such a link cannot
//!   leave it except through `..`, which is resolved. Targets are resolved through the other
//!   symlinks of the archive (chains like `a -> .` / `b -> a/..`), up to 40 hops as Linux does;
//! - no device nodes, FIFOs, GNU sparse/volume/multi-volume entries or unknown entry types
//!   (sockets cannot be stored in tar at all).
//!
//! Setuid/setgid bits and any uid/gid are allowed and reported in the [`RestorePlan`]: a
//! restore puts ownership and modes back exactly.
//!
//! Memory: 24 bytes per entry (a 128-bit hash of each path and of each implied parent
//! folder, with its kind), plus the symlinks' targets. Everything else streams.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::io::{BufReader, Read};

use super::codec::{self, Codec};
use super::tarwalk::{type_name, Entry, TarWalker};

/// An archive that restore refuses.
///
/// `index` is the 1-based position of the offending entry in the archive (`0` when the
/// problem is not one entry's, e.g. a corrupt gzip stream), `path` its name as stored
/// (empty when there is none).
#[derive(Debug, thiserror::Error)]
#[error("refusing to restore {archive}: {}", self.detail())]
pub struct UnsafeArchive {
    pub archive: String,
    pub index: u64,
    pub path: String,
    pub reason: String,
}

impl UnsafeArchive {
    fn detail(&self) -> String {
        if self.path.is_empty() && self.index == 0 {
            self.reason.clone()
        } else {
            format!("entry {} `{}`: {}", self.index, self.path, self.reason)
        }
    }
}

impl crate::error::Classify for UnsafeArchive {
    fn exit_kind(&self) -> crate::error::ExitKind {
        crate::error::ExitKind::Unverified
    }
}

/// What a restore of a checked archive will create.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestorePlan {
    /// All entries (the root folder entry included).
    pub entries: u64,
    /// Sum of regular-file sizes: the disk space the restore needs.
    pub total_bytes: u64,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    /// Whether any entry carries the setuid or setgid bit (allowed; restored as is).
    pub setid: bool,
    /// Up to 10 of those entries, for the log.
    pub setid_paths: Vec<String>,
    /// Mode (permission and special bits), uid and gid of the archive's root folder (`./`)
    /// when it is the first entry: Docker's upload does not apply that entry to the folder
    /// it extracts into, so a restore sets them itself.
    pub root: Option<(u32, u64, u64)>,
}

/// Checks a compressed tar archive (`codec`), reading it to its end; nothing is written.
/// `archive_name` is used in messages.
pub fn check_archive<R: Read>(
    gz: R,
    codec: Codec,
    archive_name: &str,
) -> Result<RestorePlan, UnsafeArchive> {
    let mut input = BufReader::with_capacity(1 << 20, gz);
    let mut out = vec![0u8; 256 * 1024];
    check_with(archive_name, |sink| {
        codec::decode(codec, &mut input, &mut out, sink)
            .map(|_| ())
            .map_err(|e| {
                format!(
                    "the compressed stream is damaged: {e}; the file was altered or cut short (its checksum would not match the manifest either)"
                )
            })
    })
}

/// Like [`check_archive`] for an uncompressed tar stream.
pub fn check_tar<R: Read>(mut tar: R, archive_name: &str) -> Result<RestorePlan, UnsafeArchive> {
    let mut buf = vec![0u8; 256 * 1024];
    check_with(archive_name, |sink| loop {
        let n = match tar.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("reading the archive failed: {e}")),
        };
        if !sink(&buf[..n]) {
            return Ok(());
        }
    })
}

/// Runs the walker and the checker over the bytes `produce` passes to its sink (which
/// returns `false` once the walk has failed).
fn check_with(
    archive_name: &str,
    produce: impl FnOnce(&mut dyn FnMut(&[u8]) -> bool) -> Result<(), String>,
) -> Result<RestorePlan, UnsafeArchive> {
    let mut gate = Gate::new(archive_name);
    let produced = produce(&mut |data: &[u8]| gate.feed(data));
    gate.finish(produced)
}

/// The rules applied to a tar stream as it is produced, by whoever holds the bytes: a
/// reader that writes as it checks (rollback's staging) passes on a chunk only once
/// [`Gate::feed`] accepted it, so nothing of a refused or malformed entry is passed on.
pub struct Gate {
    archive: String,
    walker: TarWalker,
    checker: Checker,
}

impl Gate {
    /// `archive_name` is used in messages.
    pub fn new(archive_name: &str) -> Self {
        Gate {
            archive: archive_name.to_string(),
            walker: TarWalker::new(),
            checker: Checker::new(),
        }
    }

    /// The next bytes of the tar stream; `false` once an entry was refused or the tar is
    /// malformed (these bytes hold the offending header: do not use them).
    pub fn feed(&mut self, data: &[u8]) -> bool {
        let checker = &mut self.checker;
        self.walker.feed(data, &mut |e| checker.entry(e)).is_ok()
    }

    /// After the stream (`produced`: whether its source read it whole, else why not): what
    /// the archive creates, or the first reason to refuse it.
    pub fn finish(mut self, produced: Result<(), String>) -> Result<RestorePlan, UnsafeArchive> {
        let archive = self.archive;
        let refuse = |index: u64, path: String, reason: String| UnsafeArchive {
            archive: archive.clone(),
            index,
            path,
            reason,
        };
        // An unsafe entry found before the stream broke is the more useful report.
        if let Some(e) = self.walker.error() {
            let (index, path) = e
                .entry
                .clone()
                .map_or((0, String::new()), |(i, p)| (i + 1, p));
            let reason = if e.refused {
                e.message.clone()
            } else {
                format!(
                    "the tar archive is malformed at byte {} of its content: {}",
                    e.offset, e.message
                )
            };
            return Err(refuse(index, path, reason));
        }
        if let Err(reason) = produced {
            return Err(refuse(0, String::new(), reason));
        }
        if let Err(e) = self.walker.finish() {
            let (index, path) = e
                .entry
                .clone()
                .map_or((0, String::new()), |(i, p)| (i + 1, p));
            return Err(refuse(
                index,
                path,
                format!("the tar archive is incomplete: {}", e.message),
            ));
        }
        self.checker
            .resolve_symlinks()
            .map_err(|(index, path, reason)| refuse(index + 1, path, reason))?;
        Ok(self.checker.plan)
    }
}

/// The same rules applied to the entries of a walk that someone else drives (the
/// verification of a backup being made), so that a backup learns *when it is made* that a
/// rollback would refuse it. Nothing fails here: [`SafetyCheck::finish`] says which entry a
/// restore would refuse, and why. Memory as [`check_archive`]'s (24 bytes per entry plus
/// the symlinks' targets).
pub struct SafetyCheck {
    checker: Checker,
    refused: Option<(u64, String, String)>,
}

impl Default for SafetyCheck {
    fn default() -> Self {
        Self::new()
    }
}

impl SafetyCheck {
    pub fn new() -> Self {
        SafetyCheck {
            checker: Checker::new(),
            refused: None,
        }
    }

    /// One entry, in archive order (after the first refusal, the rest is not looked at).
    pub fn entry(&mut self, e: &Entry<'_>) {
        if self.refused.is_none() {
            if let Err(reason) = self.checker.entry(e) {
                self.refused = Some((e.index + 1, e.path_lossy(), reason));
            }
        }
    }

    /// After the last entry: the entry a restore would refuse (1-based index, its path as
    /// stored, why), if any.
    pub fn finish(self) -> Option<(u64, String, String)> {
        self.refused.or_else(|| {
            self.checker
                .resolve_symlinks()
                .err()
                .map(|(index, path, reason)| (index + 1, path, reason))
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    /// A folder implied by an entry's path (`a/b/c` implies `a` and `a/b`).
    ImplicitDir,
    Symlink,
    HardLink,
}

struct Seen {
    kind: Kind,
    index: u64,
}

struct Checker {
    hashers: (RandomState, RandomState),
    seen: HashMap<u128, Seen>,
    /// Key of the symlink's normalised path -> the link.
    symlinks: HashMap<u128, Link>,
    plan: RestorePlan,
}

struct Link {
    /// Normalised path (components joined by `/`).
    path: Vec<u8>,
    target: Vec<u8>,
    index: u64,
}

/// Linux limits: a name component (NAME_MAX) and a path or a link target (PATH_MAX 4096,
/// with its NUL). The kernel refuses longer ones part way through a restore, so the check
/// refuses them before anything is written.
pub const NAME_MAX: usize = 255;
pub const PATH_MAX: usize = 4095;

/// Key of the archive root (the empty path).
const ROOT: u128 = 0;

/// Components of a link target (`.` and empty dropped; `..` kept).
fn target_components(t: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    t.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
}

/// Components of a member path, or why it is refused. `.` and empty components are
/// dropped; the archive root is the empty list.
fn components(path: &[u8]) -> Result<Vec<&[u8]>, String> {
    if path.contains(&0) {
        return Err(
            "the name contains a NUL byte: tar readers disagree about where it ends".into(),
        );
    }
    if path.first() == Some(&b'/') {
        return Err(
            "the name is an absolute path: restoring it would write outside the target".into(),
        );
    }
    if path.len() > PATH_MAX {
        return Err(format!(
            "the name is {} bytes long; Linux allows at most {PATH_MAX} (PATH_MAX), so restoring it would fail part way",
            path.len()
        ));
    }
    let mut out = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            c if c.len() > NAME_MAX => {
                return Err(format!(
                    "the name has a {}-byte component; Linux allows at most {NAME_MAX} bytes per name (NAME_MAX), so restoring it would fail part way",
                    c.len()
                ))
            }
            b".." => return Err(
                "the name contains a `..` component: restoring it could write outside the target"
                    .into(),
            ),
            _ => out.push(c),
        }
    }
    Ok(out)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Checker {
    fn new() -> Self {
        Checker {
            hashers: (RandomState::new(), RandomState::new()),
            seen: HashMap::new(),
            symlinks: HashMap::new(),
            plan: RestorePlan::default(),
        }
    }

    /// Key of `parent`'s child `comp`: a keyed 128-bit hash chained component by component,
    /// so that every prefix of a path costs one step (the checks stay linear in the input).
    fn step(&self, parent: u128, comp: &[u8]) -> u128 {
        let a = self.hashers.0.hash_one((parent, comp)) as u128;
        let b = self.hashers.1.hash_one((parent, comp)) as u128;
        (a << 64) | b
    }

    fn key(&self, comps: &[&[u8]]) -> u128 {
        comps.iter().fold(ROOT, |k, c| self.step(k, c))
    }

    /// Keys of `comps[..1]`, `comps[..2]`, …, `comps[..]`.
    fn prefix_keys(&self, comps: &[&[u8]]) -> Vec<u128> {
        let mut keys = Vec::with_capacity(comps.len());
        let mut k = ROOT;
        for c in comps {
            k = self.step(k, c);
            keys.push(k);
        }
        keys
    }

    fn describe(&self, seen: &Seen) -> String {
        let what = match seen.kind {
            Kind::File => "a file",
            Kind::Dir => "a folder",
            Kind::ImplicitDir => "a folder",
            Kind::Symlink => "a symbolic link",
            Kind::HardLink => "a hard link",
        };
        format!("{what} (entry {})", seen.index + 1)
    }

    fn entry(&mut self, e: &Entry<'_>) -> Result<(), String> {
        self.plan.entries += 1;
        let kind = match e.typeflag {
            b'0' | 0 | b'7' => Kind::File,
            b'5' => Kind::Dir,
            b'2' => Kind::Symlink,
            b'1' => Kind::HardLink,
            b'3' | b'4' => {
                return Err(format!(
                    "a {} (device node): restore never creates devices",
                    type_name(e.typeflag)
                ))
            }
            b'6' => return Err("a FIFO (named pipe): restore never creates FIFOs".into()),
            b'S' => return Err("a GNU sparse file: restore does not create sparse files; archive the volume without --sparse".into()),
            t => {
                return Err(format!(
                    "a {} (type '{}'): restore only creates files, folders and links",
                    type_name(t),
                    (t as char).escape_default()
                ))
            }
        };
        if let Some(k) = e.pax_keys.iter().find(|k| k.starts_with("GNU.sparse.")) {
            return Err(format!(
                "a PAX sparse file (`{k}`): restore does not create sparse files; archive the volume without --sparse"
            ));
        }
        let comps = components(e.path)?;
        if comps.is_empty() {
            if kind != Kind::Dir {
                return Err(format!(
                    "the archive root is a {}, not a folder",
                    type_name(e.typeflag)
                ));
            }
            self.plan.dirs += 1;
            if self.plan.entries == 1 {
                self.plan.root = Some(((e.mode & 0o7777) as u32, e.uid, e.gid));
            }
            self.note_mode(e);
            return Ok(());
        }

        // Parents: not through a symlink or a file; remember them as folders.
        let keys = self.prefix_keys(&comps);
        for i in 1..comps.len() {
            let key = keys[i - 1];
            match self.seen.get(&key) {
                Some(s) if s.kind == Kind::Symlink => {
                    return Err(format!(
                        "it is inside `{}`, which is {}: restoring it would write through the link",
                        text(&comps[..i].join(&b'/')),
                        self.describe(s)
                    ))
                }
                Some(s) if matches!(s.kind, Kind::File | Kind::HardLink) => {
                    return Err(format!(
                        "it is inside `{}`, which is {}",
                        text(&comps[..i].join(&b'/')),
                        self.describe(s)
                    ))
                }
                Some(_) => {}
                None => {
                    self.seen.insert(
                        key,
                        Seen {
                            kind: Kind::ImplicitDir,
                            index: e.index,
                        },
                    );
                }
            }
        }

        // Duplicates.
        let key = keys[comps.len() - 1];
        if let Some(s) = self.seen.get(&key) {
            match (s.kind, kind) {
                (Kind::ImplicitDir, Kind::Dir) => {}
                (Kind::ImplicitDir, _) => {
                    return Err(format!(
                        "it is a {} but earlier entries (from entry {}) are inside it as a folder",
                        type_name(e.typeflag),
                        s.index + 1
                    ))
                }
                _ => {
                    return Err(format!(
                        "duplicate entry: the same path is already {}; a second entry could replace or write through the first",
                        self.describe(s)
                    ))
                }
            }
        }

        match kind {
            Kind::Symlink => self.symlink(e, &comps, key)?,
            Kind::HardLink => self.hardlink(e)?,
            _ => {}
        }
        self.seen.insert(
            key,
            Seen {
                kind,
                index: e.index,
            },
        );
        match kind {
            Kind::File => {
                self.plan.files += 1;
                self.plan.total_bytes = self.plan.total_bytes.saturating_add(e.size);
            }
            Kind::Dir | Kind::ImplicitDir => self.plan.dirs += 1,
            Kind::Symlink => self.plan.symlinks += 1,
            Kind::HardLink => self.plan.hardlinks += 1,
        }
        self.note_mode(e);
        Ok(())
    }

    fn note_mode(&mut self, e: &Entry<'_>) {
        if e.mode & 0o6000 != 0 {
            self.plan.setid = true;
            if self.plan.setid_paths.len() < 10 {
                self.plan.setid_paths.push(e.path_lossy());
            }
        }
    }

    fn symlink(&mut self, e: &Entry<'_>, comps: &[&[u8]], key: u128) -> Result<(), String> {
        let target = e.link;
        if target.is_empty() {
            return Err("a symbolic link with an empty target".into());
        }
        if target.len() > PATH_MAX {
            return Err(format!(
                "a symbolic link whose target is {} bytes long; Linux allows at most {PATH_MAX}, so restoring it would fail part way",
                target.len()
            ));
        }
        if target.contains(&0) {
            return Err("a symbolic link whose target contains a NUL byte".into());
        }
        // Lexical check from the link's folder (or the root for absolute targets).
        let mut depth: i64 = if target[0] == b'/' {
            0
        } else {
            comps.len() as i64 - 1
        };
        for c in target.split(|&b| b == b'/') {
            match c {
                b"" | b"." => {}
                b".." => {
                    depth -= 1;
                    if depth < 0 {
                        return Err(format!(
                            "a symbolic link to `{}`, which is outside the archive root",
                            text(target)
                        ));
                    }
                }
                _ => depth += 1,
            }
        }
        self.symlinks.insert(
            key,
            Link {
                path: comps.join(&b'/'),
                target: target.to_vec(),
                index: e.index,
            },
        );
        Ok(())
    }

    fn hardlink(&mut self, e: &Entry<'_>) -> Result<(), String> {
        let target = e.link;
        if target.is_empty() {
            return Err("a hard link with an empty target".into());
        }
        let tcomps = components(target).map_err(|why| {
            format!(
                "a hard link to `{}`: {}",
                text(target),
                why.replace("the name", "the target")
            )
        })?;
        if tcomps.is_empty() {
            return Err("a hard link to the archive root".into());
        }
        match self.seen.get(&self.key(&tcomps)) {
            Some(s) if matches!(s.kind, Kind::File | Kind::HardLink) => Ok(()),
            Some(s) => Err(format!(
                "a hard link to `{}`, which is {}: only regular files can be hard-linked",
                text(target),
                self.describe(s)
            )),
            None => Err(format!(
                "a hard link to `{}`, which no earlier entry created: it would link to a file outside the archive",
                text(target)
            )),
        }
    }

    /// Resolves every symlink's target through the archive's other symlinks, as the kernel
    /// would once everything is restored, and refuses any that leaves the root.
    fn resolve_symlinks(&self) -> Result<(), (u64, String, String)> {
        // In archive order, so the entry reported is always the first bad one.
        let mut links: Vec<&Link> = self.symlinks.values().collect();
        links.sort_by_key(|l| l.index);
        for link in links {
            let refuse = |why: String| (link.index, text(&link.path), why);
            // The current folder as the keys of its prefixes (root = empty): each step
            // costs O(component), never O(path).
            let comps: Vec<&[u8]> = target_components(&link.path).collect();
            let mut cur = self.prefix_keys(&comps);
            cur.pop(); // the link's folder
            if link.target.first() == Some(&b'/') {
                cur.clear();
            }
            // Components still to walk, the next one last.
            let mut pending: Vec<&[u8]> = target_components(&link.target).rev().collect();
            let mut hops = 0;
            while let Some(c) = pending.pop() {
                if c == b".." {
                    if cur.pop().is_none() {
                        return Err(refuse(format!(
                            "a symbolic link to `{}`, which leads outside the archive root through the archive's other symbolic links",
                            text(&link.target)
                        )));
                    }
                    continue;
                }
                let k = self.step(cur.last().copied().unwrap_or(ROOT), c);
                match self.symlinks.get(&k) {
                    Some(other) => {
                        hops += 1;
                        if hops > 40 {
                            return Err(refuse(format!(
                                "a symbolic link to `{}` that starts a circular chain of links",
                                text(&link.target)
                            )));
                        }
                        if other.target.first() == Some(&b'/') {
                            cur.clear();
                        }
                        pending.extend(target_components(&other.target).rev());
                    }
                    None => cur.push(k),
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::testutil::*;
    use tar::EntryType;

    /// Checks both ways (gzip'd and raw); they must agree.
    fn check(tar: &[u8]) -> Result<RestorePlan, UnsafeArchive> {
        let a = check_archive(&gz(tar)[..], Codec::Gzip, "vol.tar.gz");
        let b = check_tar(tar, "vol.tar.gz");
        assert_eq!(a.as_ref().ok(), b.as_ref().ok());
        assert_eq!(
            a.as_ref().err().map(|e| e.to_string()),
            b.as_ref().err().map(|e| e.to_string())
        );
        a
    }

    /// Refused, naming the entry (1-based index and path) and a reason containing `needle`.
    #[track_caller]
    fn refused(tar: &[u8], index: u64, path: &str, needle: &str) {
        let e = check(tar).expect_err("must be refused");
        assert_eq!((e.index, e.path.as_str()), (index, path), "{e}");
        assert!(e.reason.contains(needle), "reason lacks {needle:?}: {e}");
        assert!(
            e.to_string()
                .starts_with("refusing to restore vol.tar.gz: entry"),
            "{e}"
        );
    }

    fn raw_tar(entries: &[([u8; 512], &[u8])]) -> Vec<u8> {
        let mut t = Vec::new();
        for (h, data) in entries {
            push(&mut t, h, data);
        }
        end(&mut t);
        t
    }

    fn file(name: &str) -> ([u8; 512], &'static [u8]) {
        (raw_header(name.as_bytes(), b'0', 3, b""), b"abc")
    }

    fn link(name: &str, kind: u8, target: &str) -> ([u8; 512], &'static [u8]) {
        (raw_header(name.as_bytes(), kind, 0, target.as_bytes()), b"")
    }

    fn dir(name: &str) -> ([u8; 512], &'static [u8]) {
        (raw_header(name.as_bytes(), b'5', 0, b""), b"")
    }

    fn pax(records: &[(&str, &[u8])]) -> ([u8; 512], Vec<u8>) {
        let data: Vec<u8> = records.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
        (
            raw_header(b"PaxHeaders/x", b'x', data.len() as u64, b""),
            data,
        )
    }

    #[test]
    fn names_over_the_kernel_limits_are_refused() {
        let long = "n".repeat(300);
        let (h1, d1) = pax(&[("path", format!("ok/{long}").as_bytes())]);
        let t = raw_tar(&[(h1, &d1), file("placeholder")]);
        refused(&t, 1, &format!("ok/{long}"), "NAME_MAX");
        let deep = "d/".repeat(2100) + "f";
        let (h2, d2) = pax(&[("path", deep.as_bytes())]);
        let t = raw_tar(&[(h2, &d2), file("placeholder")]);
        refused(&t, 1, &deep, "PATH_MAX");
        let (h3, d3) = pax(&[("linkpath", "t/".repeat(2100).as_bytes())]);
        let t = raw_tar(&[(h3, &d3), link("l", b'2', "x")]);
        refused(&t, 1, "l", "at most 4095");
        // 255 bytes per name and 4095 per link target are fine.
        let (h4, d4) = pax(&[("path", "m".repeat(255).as_bytes())]);
        let (h5, d5) = pax(&[("linkpath", "a/".repeat(2047).as_bytes())]);
        let t = raw_tar(&[(h4, &d4), file("x"), (h5, &d5), link("l", b'2', "x")]);
        check(&t).unwrap();
    }

    #[test]
    fn a_one_mib_link_target_is_refused_at_once() {
        // Just under the walker's 1 MiB cap for a PAX header.
        let target = "a/".repeat(512 * 1024 - 64);
        let (h, d) = pax(&[("linkpath", target.as_bytes())]);
        let t = raw_tar(&[(h, &d), link("l", b'2', "x")]);
        let start = std::time::Instant::now();
        refused(&t, 1, "l", "at most 4095");
        assert!(
            start.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
    }

    /// Many links with the longest allowed targets, through each other: the resolution is
    /// linear (the old one joined the whole path at every component: quadratic).
    #[test]
    fn link_resolution_is_linear_in_the_target_length() {
        // `a/…/a/../…/..` stays inside and walks 4000 bytes of components.
        let target = format!("{}{}", "a/".repeat(800), "../".repeat(799));
        let (ph, pd) = pax(&[("linkpath", target.as_bytes())]);
        let mut t = Vec::new();
        for i in 0..200 {
            push(&mut t, &ph, &pd);
            let (h, d) = link(&format!("l{i}"), b'2', "x");
            push(&mut t, &h, d);
        }
        end(&mut t);
        let start = std::time::Instant::now();
        let plan = check_tar(&t[..], "vol.tar.gz").unwrap();
        let took = start.elapsed();
        assert_eq!(plan.symlinks, 200);
        assert!(took < std::time::Duration::from_secs(1), "took {took:?}");
    }

    #[test]
    fn an_absolute_path_is_refused() {
        refused(
            &raw_tar(&[file("ok"), file("/etc/x")]),
            2,
            "/etc/x",
            "absolute path",
        );
    }

    #[test]
    fn dot_dot_is_refused() {
        refused(&raw_tar(&[file("../../x")]), 1, "../../x", "`..`");
        refused(&raw_tar(&[file("a/./../../x")]), 1, "a/./../../x", "`..`");
    }

    #[test]
    fn dot_dot_at_the_100_byte_boundary_is_refused() {
        // The name field is exactly 100 bytes, no NUL, ending in `..`.
        let name = format!("{}tt/..", "tdir/".repeat(19));
        assert_eq!(name.len(), 100);
        refused(&raw_tar(&[file(&name)]), 1, &name, "`..`");
        // A GNU long name with `..` straddling byte 100.
        let long = format!(
            "{}t/../../../../../../../../../../../../../../../../../../../../../../etc/x",
            "a/".repeat(49)
        );
        let mut t = Vec::new();
        let mut l = long.clone().into_bytes();
        l.push(0);
        push(
            &mut t,
            &raw_header(b"././@LongLink", b'L', l.len() as u64, b""),
            &l,
        );
        push(
            &mut t,
            &raw_header(&long.as_bytes()[..100], b'0', 0, b""),
            b"",
        );
        end(&mut t);
        refused(&t, 1, &long, "`..`");
    }

    #[test]
    fn a_long_name_whose_header_copy_ends_in_dot_dot_is_fine() {
        // tar-rs's `large_filename_with_dot_dot_at_100_byte_mark`: the real name is
        // `.../tt/..file`; only the truncated ustar copy ends in `..`.
        let long = format!("{}tt/..file", "tdir/".repeat(19));
        let t = tar_of(|b| {
            let mut h = header("x", EntryType::Regular, 4);
            b.append_data(&mut h, &long, &b"test"[..]).unwrap();
        });
        let plan = check(&t).unwrap();
        assert_eq!((plan.entries, plan.files, plan.total_bytes), (1, 1, 4));
    }

    #[test]
    fn writing_through_a_symlink_to_root_is_refused() {
        let t = raw_tar(&[link("root", b'2', "/"), file("root/etc/passwd")]);
        refused(
            &t,
            2,
            "root/etc/passwd",
            "inside `root`, which is a symbolic link (entry 1)",
        );
    }

    #[test]
    fn a_symlink_to_dot_dot_then_an_entry_through_it_is_refused() {
        refused(
            &raw_tar(&[link("link", b'2', ".."), file("link/x")]),
            1,
            "link",
            "outside the archive root",
        );
        // Inside the root the link itself is allowed, but nothing may be written through it.
        let t = raw_tar(&[
            dir("sub/"),
            link("sub/link", b'2', ".."),
            file("sub/link/x"),
        ]);
        refused(&t, 3, "sub/link/x", "inside `sub/link`");
        let t = raw_tar(&[
            dir("sub/"),
            link("sub/link", b'2', ".."),
            dir("sub/link/d/"),
        ]);
        refused(&t, 3, "sub/link/d/", "write through the link");
    }

    #[test]
    fn symlink_chains_that_escape_are_refused() {
        // `s/l` -> `..` is the root; `t` -> `s/l/..` is then the root's parent.
        let t = raw_tar(&[
            dir("s/"),
            link("s/l", b'2', ".."),
            link("t", b'2', "s/l/.."),
        ]);
        refused(&t, 3, "t", "through the archive's other symbolic links");
        // Absolute targets resolve from the archive root, so `/x/../..` escapes too.
        refused(&raw_tar(&[link("a", b'2', "/x/../..")]), 1, "a", "outside");
        // Loops are refused.
        let t = raw_tar(&[link("a", b'2', "b/x"), link("b", b'2', "a/y")]);
        assert!(check(&t).unwrap_err().reason.contains("circular"));
    }

    #[test]
    fn a_hard_link_to_an_outside_path_is_refused() {
        refused(
            &raw_tar(&[link("h", b'1', "/etc/passwd")]),
            1,
            "h",
            "absolute path",
        );
        refused(
            &raw_tar(&[link("h", b'1', "../etc/passwd")]),
            1,
            "h",
            "`..`",
        );
        refused(
            &raw_tar(&[link("h", b'1', "later"), file("later")]),
            1,
            "h",
            "no earlier entry",
        );
    }

    #[test]
    fn a_hard_link_to_a_symlink_or_folder_is_refused() {
        let t = raw_tar(&[link("s", b'2', "f"), link("h", b'1', "s")]);
        refused(&t, 2, "h", "which is a symbolic link");
        refused(
            &raw_tar(&[dir("d/"), link("h", b'1', "d")]),
            2,
            "h",
            "which is a folder",
        );
    }

    #[test]
    fn a_duplicate_entry_link_then_file_is_refused() {
        let t = raw_tar(&[link("x", b'2', "/etc/passwd"), file("x")]);
        refused(&t, 2, "x", "duplicate entry");
        let t = raw_tar(&[file("a/b"), file("./a//b/")]);
        refused(&t, 2, "./a//b/", "duplicate entry");
    }

    #[test]
    fn a_symlink_then_a_folder_of_the_same_name_is_refused() {
        let t = raw_tar(&[link("d", b'2', "/some/where"), dir("d/")]);
        refused(&t, 2, "d/", "already a symbolic link");
    }

    #[test]
    fn pax_size_smuggling_is_refused_both_ways() {
        // ustar size 0, PAX size 1024: the "data" is a smuggled header for other readers.
        let smuggled = raw_tar(&[file("../../etc/cron.d/x")]);
        let (ph, pd) = pax(&[("size", b"1024")]);
        let t = raw_tar(&[
            (ph, &pd),
            (raw_header(b"innocent", b'0', 0, b""), &smuggled[..1024]),
        ]);
        refused(
            &t,
            1,
            "innocent",
            "PAX size (1024) disagrees with its header size (0)",
        );
        // ustar 512, PAX 1024.
        let (ph, pd) = pax(&[("size", b"1024")]);
        let t = raw_tar(&[
            (ph, &pd),
            (raw_header(b"innocent", b'0', 512, b""), &smuggled[..1024]),
        ]);
        refused(&t, 1, "innocent", "disagrees");
        // A symlink whose PAX size claims data.
        let (ph, pd) = pax(&[("size", b"512")]);
        let t = raw_tar(&[
            (ph, &pd),
            (raw_header(b"l", b'2', 0, b"t"), &smuggled[..512]),
        ]);
        refused(&t, 1, "l", "disagrees");
    }

    #[test]
    fn a_gnu_long_name_with_bytes_after_its_nul_is_refused() {
        let mut t = Vec::new();
        let l = b"foo\0../../etc/passwd\0";
        push(
            &mut t,
            &raw_header(b"././@LongLink", b'L', l.len() as u64, b""),
            l,
        );
        push(&mut t, &raw_header(b"bar", b'0', 0, b""), b"");
        end(&mut t);
        let e = check(&t).unwrap_err();
        assert!(e.reason.contains("bytes after its NUL terminator"), "{e}");
        // GNU tar's normal form (one trailing NUL) is fine.
        let mut t = Vec::new();
        push(
            &mut t,
            &raw_header(b"././@LongLink", b'K', 4, b""),
            b"foo\0",
        );
        push(&mut t, &raw_header(b"bar", b'2', 0, b"zzz"), b"");
        end(&mut t);
        assert_eq!(check(&t).unwrap().symlinks, 1);
    }

    #[test]
    fn nul_in_a_path_is_refused() {
        let (ph, pd) = pax(&[("path", b"a\0/../../x")]);
        let t = raw_tar(&[(ph, &pd), file("a")]);
        let e = check(&t).unwrap_err();
        assert!(e.reason.contains("NUL"), "{e}");
    }

    #[test]
    fn devices_and_fifos_are_refused() {
        refused(
            &raw_tar(&[(raw_header(b"dev/sda", b'4', 0, b""), b"")]),
            1,
            "dev/sda",
            "device",
        );
        refused(
            &raw_tar(&[(raw_header(b"tty", b'3', 0, b""), b"")]),
            1,
            "tty",
            "device",
        );
        refused(
            &raw_tar(&[(raw_header(b"p", b'6', 0, b""), b"")]),
            1,
            "p",
            "FIFO",
        );
    }

    #[test]
    fn a_file_with_entries_inside_it_is_refused() {
        refused(
            &raw_tar(&[file("f"), file("f/x")]),
            2,
            "f/x",
            "inside `f`, which is a file",
        );
        refused(
            &raw_tar(&[file("d/x"), file("d")]),
            2,
            "d",
            "inside it as a folder",
        );
        // A folder entry after its content is normal.
        assert_eq!(check(&raw_tar(&[file("d/x"), dir("d/")])).unwrap().dirs, 1);
    }

    #[test]
    fn a_truncated_or_corrupt_stream_is_refused() {
        let g = gz(&raw_tar(&[file("a"), file("b")]));
        let e = check_archive(&g[..g.len() - 10], Codec::Gzip, "v").unwrap_err();
        assert!(
            e.reason.contains("damaged") && e.reason.contains("truncated"),
            "{e}"
        );
        assert_eq!(e.index, 0);
        assert!(
            e.to_string()
                .starts_with("refusing to restore v: the compressed stream"),
            "{e}"
        );
        let mut g2 = g.clone();
        g2[g.len() / 2] ^= 0x40;
        assert!(check_archive(&g2[..], Codec::Gzip, "v").is_err());
        // A tar cut short inside an intact gzip.
        let t = raw_tar(&[file("a"), file("b")]);
        let e = check(&t[..1024 + 100]).unwrap_err();
        assert!(e.reason.contains("incomplete"), "{e}");
    }

    #[test]
    fn a_benign_volume_archive_is_accepted() {
        let long = format!("data/{}", "n".repeat(195));
        assert_eq!(long.len(), 200);
        let t = tar_of(|b| {
            b.append(&header("./", EntryType::Directory, 0), &[][..])
                .unwrap();
            b.append(&header("data/", EntryType::Directory, 0), &[][..])
                .unwrap();
            b.append(&header("data/a/b/c/", EntryType::Directory, 0), &[][..])
                .unwrap();
            b.append(&header("data/empty/", EntryType::Directory, 0), &[][..])
                .unwrap();
            let mut h = header("data/a/b/c/pg_hba.conf", EntryType::Regular, 10);
            h.set_uid(70);
            h.set_gid(70);
            h.set_mode(0o600);
            h.set_cksum();
            b.append(&h, &b"0123456789"[..]).unwrap();
            let mut h = header("x", EntryType::Regular, 4);
            b.append_data(&mut h, &long, &b"long"[..]).unwrap();
            let mut h = header("data/rel", EntryType::Symlink, 0);
            h.set_link_name("a/b/c/pg_hba.conf").unwrap();
            h.set_cksum();
            b.append(&h, &[][..]).unwrap();
            let mut h = header("data/up", EntryType::Symlink, 0);
            h.set_link_name("../data/a").unwrap();
            h.set_cksum();
            b.append(&h, &[][..]).unwrap();
            let mut h = header("data/abs", EntryType::Symlink, 0);
            h.set_link_name("/data/a/b").unwrap();
            h.set_cksum();
            b.append(&h, &[][..]).unwrap();
            let mut h = header("data/hard", EntryType::Link, 0);
            h.set_link_name("data/a/b/c/pg_hba.conf").unwrap();
            h.set_cksum();
            b.append(&h, &[][..]).unwrap();
            let mut h = header("data/sudo", EntryType::Regular, 2);
            h.set_mode(0o4755);
            h.set_cksum();
            b.append(&h, &b"#!"[..]).unwrap();
            let mut h = header("data/group-dir/", EntryType::Directory, 0);
            h.set_mode(0o2775);
            h.set_uid(999);
            h.set_gid(999);
            h.set_cksum();
            b.append(&h, &[][..]).unwrap();
        });
        let plan = check(&t).unwrap();
        assert_eq!(
            (
                plan.entries,
                plan.files,
                plan.dirs,
                plan.symlinks,
                plan.hardlinks
            ),
            (12, 3, 5, 3, 1)
        );
        assert_eq!(plan.total_bytes, 16);
        assert!(plan.setid);
        assert_eq!(plan.setid_paths, ["data/sudo", "data/group-dir/"]);
    }

    #[test]
    fn a_gnu_tar_archive_of_a_real_folder_is_accepted() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("vol");
        std::fs::create_dir_all(root.join("a/b/empty")).unwrap();
        std::fs::write(root.join("a/b/f"), b"data").unwrap();
        std::fs::write(root.join(format!("a/{}", "n".repeat(200))), b"x").unwrap();
        std::os::unix::fs::symlink("b/f", root.join("a/link")).unwrap();
        std::os::unix::fs::symlink("/a/b", root.join("a/abs")).unwrap();
        std::fs::hard_link(root.join("a/b/f"), root.join("a/hard")).unwrap();
        for format in ["gnu", "posix", "ustar"] {
            if format == "ustar" {
                std::fs::remove_file(root.join(format!("a/{}", "n".repeat(200)))).unwrap();
            }
            let out = std::process::Command::new("tar")
                .arg(format!("--format={format}"))
                .arg("-cf")
                .arg("-")
                .arg("-C")
                .arg(&root)
                .arg(".")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let plan = check(&out.stdout).unwrap_or_else(|e| panic!("{format}: {e}"));
            assert_eq!((plan.symlinks, plan.hardlinks), (2, 1), "{format}");
        }
    }
}
