//! What the runner reads from a step: the `$GITHUB_OUTPUT` file and the workflow commands
//! on stdout, parsed as strictly as the runner does.

use std::collections::HashMap;

/// Parses a `$GITHUB_OUTPUT` file exactly like the runner's `FileCommandManager`
/// (`SetOutputFileCommand`, Linux): lines end at LF; an empty line is skipped; a line is
/// `name=value` when its first `=` comes before any `<<`, else `name<<DELIMITER` followed by
/// value lines up to a line *equal* to the delimiter (the value is the text between, without
/// the newline before the delimiter). A missing delimiter, an empty name or delimiter, or a
/// line that is neither form is an error, which fails the step on a real runner.
///
/// Returns every `(name, value)` in file order, duplicates included (the runner keeps the
/// last one; tests usually want to see that there are none).
pub fn parse_github_output(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = vec![];
    let mut index = 0usize;
    while let Some((line, _)) = read_line(text, &mut index) {
        if line.is_empty() {
            continue;
        }
        let eq = line.find('=');
        let heredoc = line.find("<<");
        match (eq, heredoc) {
            (Some(e), h) if h.is_none_or(|h| e < h) => {
                let (name, value) = (&line[..e], &line[e + 1..]);
                if name.is_empty() {
                    return Err(format!("Invalid format '{line}'. Name must not be empty"));
                }
                out.push((name.to_string(), value.to_string()));
            }
            (_, Some(h)) => {
                let (name, delim) = (&line[..h], &line[h + 2..]);
                if name.is_empty() || delim.is_empty() {
                    return Err(format!(
                        "Invalid format '{line}'. Name must not be empty and delimiter must not be empty"
                    ));
                }
                let start = index;
                let mut end = index;
                loop {
                    match read_line(text, &mut index) {
                        None => {
                            return Err(format!(
                                "Invalid value. Matching delimiter not found '{delim}'"
                            ))
                        }
                        Some((l, _)) if l == delim => break,
                        Some((_, nl)) => {
                            if nl == 0 {
                                // The last line of the file without a newline is not the
                                // delimiter: the runner reports the missing delimiter.
                                return Err(format!(
                                    "Invalid value. Matching delimiter not found '{delim}'"
                                ));
                            }
                            end = index - nl;
                        }
                    }
                }
                let value = if end > start { &text[start..end] } else { "" };
                out.push((name.to_string(), value.to_string()));
            }
            _ => return Err(format!("Invalid format '{line}'")),
        }
    }
    Ok(out)
}

/// The runner's `ReadLine`: the text up to the next LF, and the newline's length (0 at the
/// end of the text).
fn read_line<'a>(text: &'a str, index: &mut usize) -> Option<(&'a str, usize)> {
    if *index >= text.len() {
        return None;
    }
    let start = *index;
    match text[start..].find('\n') {
        Some(off) => {
            *index = start + off + 1;
            Some((&text[start..start + off], 1))
        }
        None => {
            *index = text.len();
            Some((&text[start..], 0))
        }
    }
}

/// One workflow command from stdout, e.g. `::error file=a.gz,title=T::message`.
#[derive(Clone, Debug, PartialEq)]
pub struct Annotation {
    /// `error`, `warning`, `notice`, `add-mask`, `group`, ...
    pub command: String,
    pub properties: HashMap<String, String>,
    pub message: String,
}

impl Annotation {
    pub fn file(&self) -> Option<&str> {
        self.properties.get("file").map(String::as_str)
    }
    pub fn title(&self) -> &str {
        self.properties
            .get("title")
            .map(String::as_str)
            .unwrap_or("")
    }
}

/// Every `::command props::data` line of `stdout`, unescaped as the runner does.
pub fn parse_commands(stdout: &str) -> Vec<Annotation> {
    let mut out = vec![];
    for line in stdout.lines() {
        let Some(rest) = line.trim_end_matches('\r').strip_prefix("::") else {
            continue;
        };
        let Some(end) = rest.find("::") else { continue };
        let (head, data) = (&rest[..end], &rest[end + 2..]);
        let (command, props) = match head.split_once(' ') {
            Some((c, p)) => (c, p),
            None => (head, ""),
        };
        let mut properties = HashMap::new();
        for kv in props.split(',').filter(|s| !s.is_empty()) {
            if let Some((k, v)) = kv.split_once('=') {
                properties.insert(k.to_string(), unescape_property(v));
            }
        }
        out.push(Annotation {
            command: command.to_string(),
            properties,
            message: unescape_data(data),
        });
    }
    out
}

fn unescape_data(s: &str) -> String {
    s.replace("%0D", "\r")
        .replace("%0A", "\n")
        .replace("%25", "%")
}

fn unescape_property(s: &str) -> String {
    s.replace("%0D", "\r")
        .replace("%0A", "\n")
        .replace("%3A", ":")
        .replace("%2C", ",")
        .replace("%25", "%")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms_like_the_runner() {
        let text = "a=1\n\nb<<EOF\nline 1\nline 2\nEOF\nc<<X\nX\nd=x=y\ne<<D\n\nD\n";
        let got = parse_github_output(text).unwrap();
        assert_eq!(
            got,
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "line 1\nline 2".into()),
                ("c".into(), "".into()),
                ("d".into(), "x=y".into()),
                ("e".into(), "".into()),
            ]
        );
    }

    #[test]
    fn is_strict() {
        assert!(parse_github_output("a<<EOF\nvalue\n").is_err());
        assert!(parse_github_output("a<<EOF\nvalue\nEOF-not").is_err());
        assert!(parse_github_output("=1\n").is_err());
        assert!(parse_github_output("<<EOF\nEOF\n").is_err());
        assert!(parse_github_output("a<<\n").is_err());
        assert!(parse_github_output("just text\n").is_err());
        // A delimiter must be the whole line.
        assert!(parse_github_output("a<<EOF\n EOF\nEOF \n").is_err());
        // The last line may lack its newline when it is the delimiter.
        assert_eq!(
            parse_github_output("a<<EOF\nv\nEOF").unwrap(),
            vec![("a".into(), "v".into())]
        );
    }

    #[test]
    fn annotations_unescape() {
        let a = parse_commands(
            "noise\n::error file=a%2Cb%3Ac.gz,title=Backup check `gzip` failed::x%0Ay%25\n",
        );
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].command, "error");
        assert_eq!(a[0].file(), Some("a,b:c.gz"));
        assert_eq!(a[0].title(), "Backup check `gzip` failed");
        assert_eq!(a[0].message, "x\ny%");
    }
}
