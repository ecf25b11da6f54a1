//! Issue 11, second half: what the product prints cannot command the runner, and a restore
//! that cannot complete leaves the live volume as it was (real Docker volumes, the real
//! binary, as a workflow step).
//!
//! - [`values_never_start_a_workflow_command_and_the_summary_escapes_them`]
//! - [`a_restore_too_big_for_the_volume_leaves_it_byte_identical`]
//! - [`an_over_long_name_is_refused_and_the_volume_is_untouched`]

use std::path::{Path, PathBuf};

use crate::support::docker::{docker_ok, unique_name, Volume, BUSYBOX};
use crate::support::rollback_corpus::{self as corpus, TarBuilder};
use crate::support::{random_hex, Outcome, Workspace};

/// The workflow commands the product itself prints: properties after the name (`::error
/// title=…::`), or the group commands. A value (`::error::x`, `::add-mask::x`) is never one.
fn assert_no_injected_commands(o: &Outcome) {
    for (stream, text) in [("stdout", &o.stdout), ("stderr", &o.stderr)] {
        for line in text.lines() {
            let t = line.trim_start();
            let ours = stream == "stdout"
                && (t.starts_with("::error ")
                    || t.starts_with("::warning ")
                    || t.starts_with("::notice ")
                    || t.starts_with("::group::")
                    || t == "::endgroup::");
            assert!(
                ours || !(t.starts_with("::") || t.starts_with("##[")),
                "{stream} has a workflow command that is not ours: {line:?}\n{o}"
            );
        }
    }
}

/// Every `<` of the summary outside fenced blocks is inside a code span or escaped: no HTML.
fn assert_no_raw_html(summary: &str) {
    let mut fenced = false;
    for line in summary.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let mut in_code = false;
        let mut prev = ' ';
        for c in line.chars() {
            if c == '`' {
                in_code = !in_code;
            }
            assert!(
                c != '<' || in_code || prev == '\\' || line.contains("<br>"),
                "raw HTML in the summary: {line}\n--- summary ---\n{summary}"
            );
            prev = c;
        }
    }
}

#[test]
fn values_never_start_a_workflow_command_and_the_summary_escapes_them() {
    let ws = Workspace::new();
    let vol = Volume::create("rs-cmd");
    let tar = TarBuilder::new()
        .dir("./", 0o755)
        .file("./a.txt", b"a")
        .finish();
    // A folder name and a branch that try to command the runner and to inject HTML.
    let dir = ws.join("bk\n::error::injected-folder\n::add-mask::hidden\r::warning::cr");
    let manifest = corpus::volume_backup(&dir, &vol.name, &tar);
    let mut m = predeploy_backup::manifest::Manifest::load(&manifest).unwrap();
    m.git.branch = Some("feat/<img/src=x/onerror=alert(1)>[x](http://e)".into());
    m.write(&dir).unwrap();
    let o = ws
        .action("rollback")
        .input("manifest", manifest.display().to_string())
        .input("volumes", &vol.name)
        .input("dry-run", "true")
        .env("PREDEPLOY_HELPER_IMAGE", BUSYBOX)
        .run();
    assert!(
        o.all_text().contains("%0A::error::injected-folder"),
        "the folder name is not in the log escaped: {o}"
    );
    assert_no_injected_commands(&o);
    assert_no_raw_html(&o.summary);
    assert!(!o.summary.contains("](http://e)") || o.summary.contains("`feat/<img"));

    // The same outside Actions (the CLI on a terminal): lines are kept but guarded.
    let o = ws
        .cli(&[
            "rollback",
            "--manifest",
            &manifest.display().to_string(),
            "--volumes",
            &vol.name,
            "--dry-run",
        ])
        .env("PREDEPLOY_HELPER_IMAGE", BUSYBOX)
        .run();
    assert!(o.stderr.contains("> ::error::injected-folder"), "{o}");
    assert_no_injected_commands(&o);
}

/// A small filesystem for a volume that keeps its data between containers: a 2 MiB tmpfs
/// mounted on the host and bound into a local volume (`type=none,o=bind`). A Docker tmpfs
/// volume (`--opt type=tmpfs`) would not do: Docker unmounts it, data and all, whenever no
/// container uses it, so it cannot hold live data across the product's helper containers.
struct SmallVolume {
    vol: Option<Volume>,
    mount: PathBuf,
}

impl SmallVolume {
    fn new(test: &str, size: &str) -> SmallVolume {
        let mount = PathBuf::from(format!("/tmp/pbt-small-{}", random_hex(8)));
        std::fs::create_dir_all(&mount).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&mount)
            .status()
            .unwrap();
        assert!(
            ok.success(),
            "mount -t tmpfs failed (the tests run as root)"
        );
        let name = unique_name(test);
        docker_ok(&[
            "volume",
            "create",
            "--opt",
            "type=none",
            "--opt",
            "o=bind",
            "--opt",
            &format!("device={}", mount.display()),
            &name,
        ]);
        SmallVolume {
            vol: Some(Volume { name }),
            mount,
        }
    }

    fn vol(&self) -> &Volume {
        self.vol.as_ref().unwrap()
    }

    /// Names (with sizes) of everything in the volume, hidden entries included.
    fn listing(&self) -> Vec<String> {
        let mut out = vec![];
        fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let e = e.unwrap();
                let meta = e.path().symlink_metadata().unwrap();
                out.push(format!(
                    "{} {}",
                    e.path().strip_prefix(root).unwrap().display(),
                    meta.len()
                ));
                if meta.is_dir() {
                    walk(&e.path(), root, out);
                }
            }
        }
        walk(&self.mount, &self.mount, &mut out);
        out.sort();
        out
    }
}

impl Drop for SmallVolume {
    fn drop(&mut self) {
        drop(self.vol.take());
        let _ = std::process::Command::new("umount")
            .arg(&self.mount)
            .status();
        let _ = std::fs::remove_dir(&self.mount);
    }
}

/// Live data that a failed restore must keep: files, a folder, a link, a hidden file.
const LIVE: &str = "set -e; cd /data; mkdir -p docs/inner; printf 'live data\\n' > docs/a.txt; \
    head -c 300000 /dev/urandom > docs/inner/blob.bin; ln -s docs/a.txt link; \
    printf 'hidden\\n' > .hidden; chmod 0640 docs/a.txt";

fn fill(v: &Volume) {
    let out = v.busybox(LIVE, &[], false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_restore_too_big_for_the_volume_leaves_it_byte_identical() {
    let small = SmallVolume::new("rs-full", "2m");
    fill(small.vol());
    let before = small.vol().fingerprint();
    let listing = small.listing();
    let ws = Workspace::new();
    // 3 MiB of zeros: a few KiB of gzip that cannot fit into 2 MiB.
    let big = vec![0u8; 3 << 20];
    let tar = TarBuilder::new()
        .dir("./", 0o755)
        .file("./new.txt", b"new")
        .file("./big.bin", &big)
        .finish();
    let manifest = corpus::volume_backup(&ws.join("big"), &small.vol().name, &tar);
    let o = ws
        .action("rollback")
        .input("manifest", manifest.display().to_string())
        .input("volumes", &small.vol().name)
        .env("PREDEPLOY_HELPER_IMAGE", BUSYBOX)
        .run();
    o.assert_code(3);
    assert_ne!(o.out("restored"), "true", "{o}");
    assert!(o.all_text().contains("free"), "the message says why: {o}");
    assert!(
        o.all_text().contains("nothing was changed"),
        "the message says the live data is intact: {o}"
    );
    small
        .vol()
        .fingerprint()
        .assert_same(&before, "after a restore that did not fit");
    assert_eq!(
        small.listing(),
        listing,
        "no staging folder may be left behind"
    );

    // The positive control: an archive that fits replaces the content, nothing left over.
    let tar = TarBuilder::new()
        .dir("./", 0o750)
        .dir("./restored", 0o755)
        .file("./restored/r.txt", b"restored")
        .finish();
    let manifest = corpus::volume_backup(&ws.join("fits"), &small.vol().name, &tar);
    let o = ws
        .action("rollback")
        .input("manifest", manifest.display().to_string())
        .input("volumes", &small.vol().name)
        .env("PREDEPLOY_HELPER_IMAGE", BUSYBOX)
        .run();
    o.assert_code(0);
    assert_eq!(o.out("restored"), "true", "{o}");
    let names: Vec<String> = small
        .listing()
        .iter()
        .map(|l| l.rsplit_once(' ').unwrap().0.to_string())
        .collect();
    assert_eq!(names, vec!["restored", "restored/r.txt"], "{o}");
    assert_eq!(
        std::fs::read(small.mount.join("restored/r.txt")).unwrap(),
        b"restored"
    );
}

#[test]
fn an_over_long_name_is_refused_and_the_volume_is_untouched() {
    let small = SmallVolume::new("rs-long", "2m");
    fill(small.vol());
    let before = small.vol().fingerprint();
    let listing = small.listing();
    let ws = Workspace::new();
    let long = format!("./{}", "n".repeat(300));
    let tar = TarBuilder::new()
        .dir("./", 0o755)
        .file("./first.txt", b"first")
        .gnu_long_name(long.as_bytes())
        .file(&long[..100], b"x")
        .finish();
    let manifest = corpus::volume_backup(&ws.join("long"), &small.vol().name, &tar);
    let o = ws
        .action("rollback")
        .input("manifest", manifest.display().to_string())
        .input("volumes", &small.vol().name)
        .env("PREDEPLOY_HELPER_IMAGE", BUSYBOX)
        .run();
    o.assert_code(1);
    assert!(o.all_text().contains("NAME_MAX"), "{o}");
    assert_ne!(o.out("restored"), "true");
    small
        .vol()
        .fingerprint()
        .assert_same(&before, "after an over-long name");
    assert_eq!(small.listing(), listing);
}
