//! predeploy-backup: a verified restore point before every deploy, and a rollback to it.
//!
//! The engine is this library; `main.rs` only parses, runs and maps errors to exit codes.
//!
//! - [`commands`]: one file per mode (`backup`, `verify`, `rollback`, `info`, `prune`).
//! - [`actions`]: the GitHub Actions runtime: inputs, outputs, summary, annotations, artifacts.
//! - [`docker`]: the Docker Engine API (exec streams, archive up/download, stop/start).
//! - [`postgres`]: pg_dump / psql, in a container or over a URL.
//! - [`archive`]: gzip, tar and pg_dump formats: writing, verifying, restore safety.
//! - [`manifest`]: the record of a backup, and `.last-deployment-backup`.
//! - [`retention`], [`alert`], [`lock`]: what keeps backups safe around a run.
//! - [`report`]: how the engine reports progress (passed in; implemented by `actions`).
//! - [`secrets`]: what is redacted from every text we write; `http`: the one HTTP client setup.

pub mod actions;
pub mod alert;
pub mod archive;
pub mod cli;
pub mod commands;
pub mod docker;
pub mod error;
mod http;
pub mod lock;
pub mod manifest;
pub mod names;
pub mod pipe;
pub mod postgres;
pub mod report;
pub mod retention;
pub mod secrets;
pub mod store;
pub mod transport;
