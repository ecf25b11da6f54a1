//! Exit codes, and how any error becomes one.
//!
//! PRODUCT.md promises four exit codes: `0` success, `1` a backup failed verification,
//! `2` bad input or usage, `3` the environment failed (Docker, PostgreSQL, disk, network).
//! Every module keeps its own typed error (so the message can say exactly what to do) and
//! says which of these it is through [`Classify`]. Commands use `anyhow` at the edge; `main`
//! walks the error chain with [`exit_kind`] to find the first classified cause.

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
#[derive(Debug, thiserror::Error)]
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

/// Every error type that implements [`Classify`], once: [`exit_kind`] tries each of them, and
/// the test `every_classified_type_is_listed` fails when an `impl Classify` exists in the
/// source for a type missing here (so a new error type cannot silently become exit 3).
macro_rules! classified_types {
    ($m:ident!($($pre:tt)*)) => {
        $m!($($pre)*
            UsageError,
            VerificationFailed,
            crate::docker::DockerError,
            crate::postgres::PgError,
            crate::actions::artifact::ArtifactError,
            crate::actions::rest::RestError,
            crate::archive::restore::UnsafeArchive,
            crate::retention::RetentionError,
            crate::lock::LockError,
            crate::manifest::ManifestError,
            crate::store::StoreError,
            crate::store::lease::LeaseError,
            crate::transport::TransportError
        )
    };
}

/// The first classified cause in the chain decides; anything else is an environment failure
/// (an I/O error, a network error, ...), which is what exit code 3 is for.
pub fn exit_kind(err: &anyhow::Error) -> ExitKind {
    macro_rules! try_types {
        ($cause:expr, $($t:ty),*) => {
            $( if let Some(e) = $cause.downcast_ref::<$t>() { return e.exit_kind(); } )*
        };
    }
    for cause in err.chain() {
        classified_types!(try_types!(cause,));
    }
    ExitKind::Environment
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_classified_type_is_listed() {
        macro_rules! names {
            ($($t:ty),*) => { vec![$(stringify!($t).rsplit("::").next().unwrap().trim().to_string()),*] };
        }
        let listed: Vec<String> = classified_types!(names!());
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut stack = vec![src];
        let mut found = vec![];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    let text = std::fs::read_to_string(&p).unwrap();
                    for line in text.lines() {
                        let l = line.trim();
                        if let Some(rest) = l
                            .strip_prefix("impl crate::error::Classify for ")
                            .or_else(|| l.strip_prefix("impl Classify for "))
                        {
                            let ty = rest.trim_end_matches('{').trim().to_string();
                            found.push((ty, p.display().to_string()));
                        }
                    }
                }
            }
        }
        assert!(found.len() >= 10, "scan found {found:?}");
        for (ty, file) in found {
            assert!(
                listed.contains(&ty),
                "{ty} ({file}) implements Classify but is not in classified_types! (src/error.rs): its errors would exit 3"
            );
        }
    }

    #[test]
    fn manifest_errors_are_usage() {
        let e: anyhow::Error = crate::manifest::ManifestError::TooNew {
            path: "m.yml".into(),
            found: 99,
        }
        .into();
        assert_eq!(exit_kind(&e.context("loading")), ExitKind::Usage);
    }
}
