//! Which exit code an error of a run is (PRODUCT.md): every module's error type says its own
//! kind ([`Classify`]); this edge, which knows all of them, lists them for the chain walk.

use crate::error::{classify_among, find, with_help, Classified, ExitKind, Finder};

/// Every error type that implements [`crate::error::Classify`], once. The test
/// `every_classified_type_is_listed` fails when an `impl Classify` exists in the source for
/// a type missing here (so a new error type cannot silently become exit 3).
const CLASSIFIED: &[Finder] = &[
    find::<crate::error::UsageError>,
    find::<crate::error::VerificationFailed>,
    find::<crate::docker::DockerError>,
    find::<crate::postgres::PgError>,
    find::<crate::actions::artifact::ArtifactError>,
    find::<crate::actions::rest::RestError>,
    find::<crate::archive::restore::UnsafeArchive>,
    find::<crate::retention::RetentionError>,
    find::<crate::lock::LockError>,
    find::<crate::manifest::ManifestError>,
    find::<crate::store::StoreError>,
    find::<crate::store::lease::LeaseError>,
    find::<crate::transport::TransportError>,
];

/// The exit kind and help of a run's error: the first classified cause in its chain decides;
/// anything else is an environment failure.
pub fn classify(err: &anyhow::Error) -> Classified {
    classify_among(err, CLASSIFIED)
}

/// The exit kind of a run's error ([`classify`]).
pub fn kind(err: &anyhow::Error) -> ExitKind {
    classify(err).kind
}

/// What the user reads of a run's error (annotation, terminal, summary): the message and
/// its causes, then `help: …` when its classified cause has help to give.
pub fn message(err: &anyhow::Error) -> String {
    with_help(err, &classify(err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_classified_type_is_listed() {
        let this = include_str!("exit.rs");
        let list = &this[..this.find("pub fn kind").unwrap()];
        let listed: Vec<&str> = list
            .lines()
            .filter_map(|l| l.trim().strip_prefix("find::<"))
            .map(|t| t.trim_end_matches(">,").rsplit("::").next().unwrap())
            .collect();
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
        assert_eq!(listed.len(), CLASSIFIED.len(), "{listed:?}");
        for (ty, file) in found {
            assert!(
                listed.contains(&ty.as_str()),
                "{ty} ({file}) implements Classify but is not in CLASSIFIED (src/commands/exit.rs): its errors would exit 3"
            );
        }
    }

    #[test]
    fn errors_without_advice_in_their_message_carry_help() {
        let e: anyhow::Error = crate::postgres::PgError::Failed {
            what: "pg_dump".into(),
            code: 1,
            stderr: "pg_dump: error: query failed: server closed the connection".into(),
        }
        .into();
        let text = message(&e.context("dumping the database"));
        assert!(
            text.starts_with("dumping the database: pg_dump failed (exit code 1): pg_dump: error:"),
            "{text}"
        );
        assert!(text.contains("\nhelp: "), "{text}");
        // An error whose message already says what to do gets no help line.
        let e: anyhow::Error = crate::manifest::ManifestError::TooNew {
            path: "m.yml".into(),
            found: 99,
        }
        .into();
        assert!(!message(&e).contains("help:"), "{}", message(&e));
    }

    #[test]
    fn manifest_errors_are_usage() {
        let e: anyhow::Error = crate::manifest::ManifestError::TooNew {
            path: "m.yml".into(),
            found: 99,
        }
        .into();
        assert_eq!(kind(&e.context("loading")), ExitKind::Usage);
    }
}
