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
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::io::{BufReader, Read};

use super::inflate;
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
}

/// Checks a gzip-compressed tar archive, reading it to its end; nothing is written.
/// `archive_name` is used in messages.
pub fn check_archive<R: Read>(gz: R, archive_name: &str) -> Result<RestorePlan, UnsafeArchive> {
    let refuse = |index: u64, path: String, reason: String| UnsafeArchive {
        archive: archive_name.to_string(),
        index,
        path,
        reason,
    };
    let mut input = BufReader::with_capacity(1 << 20, gz);
    let mut out = vec![0u8; 256 * 1024];
    let mut walker = TarWalker::new();
    let mut checker = Checker::new();
    let gz_result = {
        let mut sink = |data: &[u8]| -> bool {
            walker.feed(data, &mut |e| checker.entry(e)).is_ok()
        };
        inflate::decode(&mut input, &mut out, &mut sink)
    };
    // An unsafe entry found before the stream broke is the more useful report.
    if let Some(e) = walker.error() {
        let (index, path) = e.entry.clone().map_or((0, String::new()), |(i, p)| (i + 1, p));
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
    if let Err(e) = gz_result {
        return Err(refuse(
            0,
            String::new(),
            format!(
                "the compressed stream is damaged: {e}; the file was altered or cut short (its checksum would not match the manifest either)"
            ),
        ));
    }
    if let Err(e) = walker.finish() {
        let (index, path) = e.entry.clone().map_or((0, String::new()), |(i, p)| (i + 1, p));
        return Err(refuse(index, path, format!("the tar archive is incomplete: {}", e.message)));
    }
    checker
        .resolve_symlinks()
        .map_err(|(index, path, reason)| refuse(index + 1, path, reason))?;
    Ok(checker.plan)
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
    /// Normalised symlink path -> (raw target, entry index).
    symlinks: HashMap<String, (String, u64)>,
    plan: RestorePlan,
}

/// Components of a member path, or why it is refused. `.` and empty components are
/// dropped; the archive root is the empty list.
fn components(path: &[u8]) -> Result<Vec<&[u8]>, String> {
    if path.contains(&0) {
        return Err("the name contains a NUL byte: tar readers disagree about where it ends".into());
    }
    if path.first() == Some(&b'/') {
        return Err("the name is an absolute path: restoring it would write outside the target".into());
    }
    let mut out = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                return Err(
                    "the name contains a `..` component: restoring it could write outside the target"
                        .into(),
                )
            }
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

    fn key(&self, comps: &[&[u8]]) -> u128 {
        let joined = comps.join(&b'/');
        let a = self.hashers.0.hash_one(&joined) as u128;
        let b = self.hashers.1.hash_one(&joined) as u128;
        (a << 64) | b
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
            self.note_mode(e);
            return Ok(());
        }

        // Parents: not through a symlink or a file; remember them as folders.
        for i in 1..comps.len() {
            let key = self.key(&comps[..i]);
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
        let key = self.key(&comps);
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
            Kind::Symlink => self.symlink(e, &comps)?,
            Kind::HardLink => self.hardlink(e)?,
            _ => {}
        }
        self.seen.insert(key, Seen { kind, index: e.index });
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

    fn symlink(&mut self, e: &Entry<'_>, comps: &[&[u8]]) -> Result<(), String> {
        let target = e.link;
        if target.is_empty() {
            return Err("a symbolic link with an empty target".into());
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
            text(&comps.join(&b'/')),
            (text(target), e.index),
        );
        Ok(())
    }

    fn hardlink(&mut self, e: &Entry<'_>) -> Result<(), String> {
        let target = e.link;
        if target.is_empty() {
            return Err("a hard link with an empty target".into());
        }
        let tcomps = components(target).map_err(|why| {
            format!("a hard link to `{}`: {}", text(target), why.replace("the name", "the target"))
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
        for (path, (target, index)) in &self.symlinks {
            let split = |s: &str| -> Vec<String> {
                s.split('/')
                    .filter(|c| !c.is_empty() && *c != ".")
                    .map(str::to_string)
                    .collect()
            };
            let mut cur: Vec<String> = split(path);
            cur.pop(); // the link's folder
            if target.starts_with('/') {
                cur.clear();
            }
            let mut pending: VecDeque<String> = split(target).into();
            let mut hops = 0;
            while let Some(c) = pending.pop_front() {
                if c == ".." {
                    if cur.pop().is_none() {
                        return Err((
                            *index,
                            path.clone(),
                            format!(
                                "a symbolic link to `{target}`, which leads outside the archive root through the archive's other symbolic links"
                            ),
                        ));
                    }
                    continue;
                }
                cur.push(c);
                if let Some((t, _)) = self.symlinks.get(&cur.join("/")) {
                    hops += 1;
                    if hops > 40 {
                        return Err((
                            *index,
                            path.clone(),
                            format!("a symbolic link to `{target}` that starts a circular chain of links"),
                        ));
                    }
                    cur.pop();
                    if t.starts_with('/') {
                        cur.clear();
                    }
                    for c in split(t).into_iter().rev() {
                        pending.push_front(c);
                    }
                }
            }
        }
        Ok(())
    }
}
