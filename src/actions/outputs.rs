//! Step outputs through `$GITHUB_OUTPUT`.
//!
//! Every value is written in the heredoc form `name<<DELIM\nvalue\nDELIM\n` with a fresh
//! random delimiter per value (runner `FileCommandManager.cs`). A value cannot contain its own
//! delimiter (we check, as `@actions/core` does), so no input — a branch name with a newline
//! and `verified=true` in it, say — can end the value early and forge another output.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;

/// Outputs collected during a run, written at the end in one go (and printed for the CLI).
#[derive(Debug, Default, Clone)]
pub struct Outputs {
    pub values: Vec<(String, String)>,
}

impl Outputs {
    /// Sets (or replaces) an output.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self.values.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value,
            None => self.values.push((name.to_string(), value)),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Appends all outputs to the file-command file.
    pub fn write_to(&self, path: &Path) -> io::Result<()> {
        let mut f = OpenOptions::new().create(true).append(true).open(path)?;
        let mut buf = String::new();
        for (name, value) in &self.values {
            buf.push_str(&encode(name, value));
        }
        f.write_all(buf.as_bytes())?;
        f.flush()
    }
}

/// One output in heredoc form with a delimiter that does not occur in the value.
pub fn encode(name: &str, value: &str) -> String {
    let value = value.replace("\r\n", "\n");
    loop {
        let delim = format!("ghadelimiter_{}", uuid::Uuid::new_v4());
        if !value.contains(&delim) && !name.contains(&delim) {
            return format!("{name}<<{delim}\n{value}\n{delim}\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heredoc_with_fresh_delimiters() {
        let a = encode("branch", "main\nverified=true");
        let lines: Vec<&str> = a.lines().collect();
        assert!(lines[0].starts_with("branch<<ghadelimiter_"));
        let delim = lines[0].trim_start_matches("branch<<");
        assert_eq!(lines[1], "main");
        assert_eq!(lines[2], "verified=true");
        assert_eq!(lines[3], delim);
        assert_ne!(encode("x", "1"), encode("x", "1"));
    }
}
