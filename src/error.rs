//! Exit codes, and how any error becomes one.
//!
//! PRODUCT.md promises four exit codes: `0` success, `1` a backup failed verification,
//! `2` bad input or usage, `3` the environment failed (Docker, PostgreSQL, disk, network).
//! Every module keeps its own typed error (so the message can say exactly what to do) and
//! says which of these it is through [`Classify`]. Commands use `anyhow` at the edge; the
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

/// Which exit kind a cause of an error chain has, when it is of one classified type
/// ([`find`] of that type).
pub type Finder = fn(&(dyn std::error::Error + 'static)) -> Option<ExitKind>;

/// The [`Finder`] of one error type: its own [`Classify::exit_kind`].
pub fn find<T: Classify + std::error::Error + 'static>(
    cause: &(dyn std::error::Error + 'static),
) -> Option<ExitKind> {
    cause.downcast_ref::<T>().map(Classify::exit_kind)
}

/// The first classified cause in the chain decides (each type is asked through its
/// [`Finder`], given by the edge that knows the types); anything else is an environment
/// failure (an I/O error, a network error, ...), which is what exit code 3 is for.
pub fn exit_kind_among(err: &anyhow::Error, finders: &[Finder]) -> ExitKind {
    err.chain()
        .find_map(|cause| finders.iter().find_map(|f| f(cause)))
        .unwrap_or(ExitKind::Environment)
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
}
