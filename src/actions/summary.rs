//! The job summary (`$GITHUB_STEP_SUMMARY`): Markdown the user reads first.
//!
//! The runner drops a step summary over 1 MiB whole, so we cap ours well below that and cut
//! long tables with a note rather than lose everything.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;

use crate::retention::{when, PruneReport};
use crate::secrets::Secrets;

/// Summaries larger than this are cut (the runner's hard limit is 1 MiB).
pub const MAX_BYTES: usize = 900 * 1024;

/// A Markdown document under construction. Its verdict (success or failure heading) is kept
/// apart and always rendered first, whatever order the sections were added in; a later
/// verdict replaces an earlier one (a failure after a success heading wins).
#[derive(Debug, Default, Clone)]
pub struct Summary {
    verdict: Option<String>,
    text: String,
}

impl Summary {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn heading(&mut self, level: usize, text: &str) -> &mut Self {
        self.text
            .push_str(&format!("{} {}\n\n", "#".repeat(level.clamp(1, 6)), text));
        self
    }

    /// The `## ` heading that says how the run ended; rendered first.
    pub fn verdict(&mut self, text: &str) -> &mut Self {
        self.verdict = Some(format!("## {text}\n\n"));
        self
    }

    pub fn paragraph(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self.text.push_str("\n\n");
        self
    }

    /// A table; cells are escaped so that `|` and newlines cannot break it.
    pub fn table(&mut self, header: &[&str], rows: &[Vec<String>]) -> &mut Self {
        let cell = |s: &str| s.replace('|', "\\|").replace('\n', "<br>");
        self.text.push_str(&format!("| {} |\n", header.join(" | ")));
        self.text
            .push_str(&format!("|{}\n", " --- |".repeat(header.len())));
        for r in rows {
            let cells: Vec<String> = r.iter().map(|c| cell(c)).collect();
            self.text.push_str(&format!("| {} |\n", cells.join(" | ")));
        }
        self.text.push('\n');
        self
    }

    /// A fenced code block.
    pub fn code(&mut self, lang: &str, body: &str) -> &mut Self {
        let longest = body.split(|c| c != '`').map(str::len).max().unwrap_or(0);
        let fence = "`".repeat(longest.max(2) + 1);
        self.text
            .push_str(&format!("{fence}{lang}\n{}\n{fence}\n\n", body.trim_end()));
        self
    }

    /// A bullet list.
    pub fn list(&mut self, items: &[String]) -> &mut Self {
        for i in items {
            self.text.push_str(&format!("- {}\n", i.replace('\n', " ")));
        }
        self.text.push('\n');
        self
    }

    /// The sections added so far (without the verdict).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Capped Markdown, verdict first, with the run's `secrets` redacted.
    pub fn render(&self, secrets: &Secrets) -> String {
        let mut s = secrets.redact(&format!(
            "{}{}",
            self.verdict.as_deref().unwrap_or(""),
            self.text
        ));
        if s.len() > MAX_BYTES {
            let mut cut = MAX_BYTES;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
            s.push_str("\n\n… (summary cut to stay under the runner's 1 MiB limit; the manifest has everything)\n");
        }
        s
    }

    /// Appends to the summary file ([`Self::render`]).
    pub fn write_to(&self, path: &Path, secrets: &Secrets) -> io::Result<()> {
        let mut f = OpenOptions::new().create(true).append(true).open(path)?;
        f.write_all(self.render(secrets).as_bytes())
    }
}

/// A value (from a manifest, a folder name, an input) as Markdown inline code: nothing in
/// it is read as Markdown, HTML or a mention. Line breaks become spaces; the backtick fence
/// is longer than any run of backticks inside, as CommonMark requires.
pub fn code(value: &str) -> String {
    let v: String = value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let longest = v.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest + 1);
    if v.starts_with('`') || v.ends_with('`') || v.starts_with(' ') {
        format!("{fence} {v} {fence}")
    } else {
        format!("{fence}{v}{fence}")
    }
}

/// A value as plain Markdown text: every ASCII punctuation character backslash-escaped (so
/// no emphasis, link, image, HTML tag or entity can form), `@` kept from forming a mention,
/// line breaks as spaces.
pub fn text(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '@' => out.push_str("@\u{2060}"),
            c if c.is_control() => out.push(' '),
            c if c.is_ascii_punctuation() => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// `1536` → `1.5 KiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The summary's rendering of a retention report (the engine returns the report; this
/// layer writes it).
pub trait RetentionSummary {
    /// The summary's section: a headline and one table row per entry.
    fn write_summary(&self, summary: &mut Summary);

    /// The summary section as Markdown.
    fn markdown(&self) -> String {
        let mut s = Summary::new();
        self.write_summary(&mut s);
        s.render(&Secrets::new())
    }
}

impl RetentionSummary for PruneReport {
    fn write_summary(&self, summary: &mut Summary) {
        summary.heading(3, "Retention").paragraph(&self.headline());
        if self.decisions.is_empty() {
            summary.paragraph("The backup root holds nothing yet.");
            return;
        }
        let rows: Vec<Vec<String>> = self
            .decisions
            .iter()
            .map(|d| {
                let name = d
                    .dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| d.dir.display().to_string());
                let mut why = d.reason.clone();
                if let Some(msg) = self.failure(&d.dir) {
                    why.push_str(&format!(": {msg}"));
                }
                vec![
                    code(&name),
                    d.created_at.map(when).unwrap_or_else(|| "-".into()),
                    self.action(d).to_string(),
                    text(&why),
                ]
            })
            .collect();
        summary.table(&["Folder", "Created", "Action", "Why"], &rows);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_escape_cells() {
        let mut s = Summary::new();
        s.table(&["a", "b"], &[vec!["x|y".into(), "1\n2".into()]]);
        assert!(s.as_str().contains("| x\\|y | 1<br>2 |"));
    }

    #[test]
    fn verdict_comes_first_and_the_last_one_wins() {
        let mut s = Summary::new();
        s.heading(3, "Files").paragraph("x");
        s.verdict("✅ ok");
        assert!(
            s.render(&Secrets::new())
                .starts_with("## ✅ ok\n\n### Files"),
            "{}",
            s.render(&Secrets::new())
        );
        s.verdict("❌ failed");
        assert!(s.render(&Secrets::new()).starts_with("## ❌ failed\n"));
        assert!(!s.render(&Secrets::new()).contains("✅ ok"));
    }

    #[test]
    fn values_cannot_form_markdown_html_or_mentions() {
        assert_eq!(code("main"), "`main`");
        assert_eq!(code("a`b"), "``a`b``");
        assert_eq!(code("`x"), "`` `x ``");
        assert_eq!(code("x\n# h"), "`x # h`");
        assert_eq!(
            text("<img src=x> [a](http://e) @here"),
            "\\<img src\\=x\\> \\[a\\]\\(http\\:\\/\\/e\\) @\u{2060}here"
        );
        let mut s = Summary::new();
        s.code("", "x\n````\n<b>y</b>");
        assert!(s.as_str().starts_with("`````\n"), "{}", s.as_str());
        assert!(s.as_str().ends_with("\n`````\n\n"));
    }

    #[test]
    fn sizes() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1536), "1.5 KiB");
    }
}
