//! Exit codes, and how any error becomes one.
//!
//! PRODUCT.md promises four exit codes: `0` success, `1` a backup failed verification,
//! `2` bad input or usage, `3` the environment failed (Docker, PostgreSQL, disk, network).
//! Every module keeps its own typed error (so the message can say exactly what to do) and
//! says which of these it is, and what the user can do when the message does not say it
//! already, through [`Classify`]. Commands use `anyhow` at the edge; the
//! edge (`commands::exit`) walks the error chain with [`exit_kind_among`], giving the
//! [`find`] of every classified type, to find the first classified cause. This module
//! imports no other module of the crate.

/// Which of PRODUCT.md's exit codes an error maps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitKind {
    /// `1`: a backup exists but failed verification (or a restore refused a tampered one).
    Unverified,
    /// `2`: the inputs are wrong; nothing was touched.
    Usage,
    /// `3`: Docker, PostgreSQL, the disk or the network failed.
    Environment,
}

impl ExitKind {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            ExitKind::Unverified => 1,
            ExitKind::Usage => 2,
            ExitKind::Environment => 3,
        }
    }

    /// The title of the annotation (and the summary's verdict) of a run that failed so.
    pub fn title(self) -> &'static str {
        match self {
            ExitKind::Unverified => "Backup not verified",
            ExitKind::Usage => "Bad input",
            ExitKind::Environment => "Environment failure",
        }
    }
}

/// Implemented by each module's error type.
pub trait Classify {
    fn exit_kind(&self) -> ExitKind;

    /// What the user can do about it, for an error whose message does not say so itself
    /// (most of ours do: "… : check postgres-password"). The edge prints it after the
    /// message, as `help: …`, in the `::error` annotation, on the terminal and in the
    /// job summary.
    fn help(&self) -> Option<String> {
        None
    }
}

/// What the edge learns of a run's error from its first classified cause.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Classified {
    pub kind: ExitKind,
    pub help: Option<String>,
}

/// Bad input or usage, with what to do about it. The message is complete on its own.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

impl Classify for UsageError {
    fn exit_kind(&self) -> ExitKind {
        ExitKind::Usage
    }
}

/// A backup failed verification; the report has already been printed and annotated.
#[derive(Debug, Default, thiserror::Error)]
#[error("{0}")]
pub struct VerificationFailed(pub String);

impl Classify for VerificationFailed {
    fn exit_kind(&self) -> ExitKind {
        ExitKind::Unverified
    }
}

/// Shorthand for a usage error.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

/// How a cause of an error chain is classified, when it is of one classified type
/// ([`find`] of that type).
pub type Finder = fn(&(dyn std::error::Error + 'static)) -> Option<Classified>;

/// The [`Finder`] of one error type: its own [`Classify::exit_kind`] and [`Classify::help`].
pub fn find<T: Classify + std::error::Error + 'static>(
    cause: &(dyn std::error::Error + 'static),
) -> Option<Classified> {
    cause.downcast_ref::<T>().map(|e| Classified {
        kind: e.exit_kind(),
        help: e.help(),
    })
}

/// The first classified cause in the chain decides (each type is asked through its
/// [`Finder`], given by the edge that knows the types); anything else is an environment
/// failure (an I/O error, a network error, ...), which is what exit code 3 is for, with no
/// help beyond its message.
pub fn classify_among(err: &anyhow::Error, finders: &[Finder]) -> Classified {
    err.chain()
        .find_map(|cause| finders.iter().find_map(|f| f(cause)))
        .unwrap_or(Classified {
            kind: ExitKind::Environment,
            help: None,
        })
}

/// The exit kind of [`classify_among`].
pub fn exit_kind_among(err: &anyhow::Error, finders: &[Finder]) -> ExitKind {
    classify_among(err, finders).kind
}

/// The text a user reads of a run's error: the message with its causes (`{:#}`), then the
/// help of its classified cause, if any, on a line of its own.
pub fn with_help(err: &anyhow::Error, classified: &Classified) -> String {
    match &classified.help {
        Some(h) => format!("{err:#}\nhelp: {h}"),
        None => format!("{err:#}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_classified_cause_decides() {
        let finders: &[Finder] = &[find::<UsageError>, find::<VerificationFailed>];
        let e = anyhow::Error::from(VerificationFailed("bad".into())).context("checking");
        assert_eq!(exit_kind_among(&e, finders), ExitKind::Unverified);
        assert_eq!(exit_kind_among(&usage("no"), finders), ExitKind::Usage);
        let io = anyhow::Error::from(std::io::Error::other("disk"));
        assert_eq!(exit_kind_among(&io, finders), ExitKind::Environment);
        assert_eq!(exit_kind_among(&usage("no"), &[]), ExitKind::Environment);
    }

    #[derive(Debug, thiserror::Error)]
    #[error("the thing failed: disk full")]
    struct Helped;

    // (Not `impl Classify`: a test type, not one CLASSIFIED must list.)
    impl super::Classify for Helped {
        fn exit_kind(&self) -> ExitKind {
            ExitKind::Environment
        }
        fn help(&self) -> Option<String> {
            Some("free some space and run again".into())
        }
    }

    #[test]
    fn the_help_of_the_deciding_cause_follows_the_message() {
        let finders: &[Finder] = &[find::<UsageError>, find::<Helped>];
        let e = anyhow::Error::from(Helped).context("writing the dump");
        let c = classify_among(&e, finders);
        assert_eq!(c.kind, ExitKind::Environment);
        assert_eq!(
            with_help(&e, &c),
            "writing the dump: the thing failed: disk full\nhelp: free some space and run again"
        );
        // A message that says what to do itself gets no help line.
        let u = usage("bad input: set x");
        assert_eq!(
            with_help(&u, &classify_among(&u, finders)),
            "bad input: set x"
        );
    }
}
