//! The `predeploy-backup` binary: parse, run, and turn the outcome into an exit code and,
//! inside GitHub Actions, an `::error` annotation. Everything else is in the library.
//!
//! What the run shares is made here and handed down: the [`wf::Workflow`] (the run's
//! secrets, and how to talk to the runner), so that the error shown at the very end is
//! redacted with every secret the run registered, and the [`Stopped`] containers, so that
//! a cancelled run starts again what it stopped.

use std::process::ExitCode;

use clap::Parser;
use predeploy_backup::actions::commands as wf;
use predeploy_backup::cli::{argv_with_inputs, error_for_inputs, ignored_inputs, Cli};
use predeploy_backup::commands::exit;
use predeploy_backup::docker::Stopped;
use predeploy_backup::error::ExitKind;
use predeploy_backup::secrets::Secrets;

fn main() -> ExitCode {
    // Inside Actions when GITHUB_ACTIONS is `true` (so always when run from inputs).
    let wf = wf::Workflow::from_env(Secrets::new());
    let argv = match argv_with_inputs(std::env::args_os().collect(), |k| std::env::var(k).ok()) {
        Ok(a) => a,
        Err(msg) => return fail(&wf, ExitKind::Usage.title(), &msg, ExitKind::Usage),
    };
    let from_inputs =
        std::env::var("GITHUB_ACTIONS").as_deref() == Ok("true") && std::env::args_os().len() <= 1;
    for w in ignored_inputs(&argv, |k| std::env::var(k).ok()) {
        wf.warning("Input ignored", None, &w);
    }
    let cli = match Cli::try_parse_from(argv) {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            // --help, --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let msg = e.render().to_string();
            let msg = if from_inputs {
                error_for_inputs(&msg)
            } else {
                msg.trim().to_string()
            };
            return fail(&wf, ExitKind::Usage.title(), &msg, ExitKind::Usage);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            return fail(
                &wf,
                ExitKind::Environment.title(),
                &e.to_string(),
                ExitKind::Environment,
            )
        }
    };
    // The run is a task on the runtime's workers, not the future `block_on` drives on the
    // main thread: there, every wake-up from a worker (each chunk an engine stream hands on)
    // would cross threads through a futex — measured: ~18,000 of them for a 300 MiB volume.
    let stopped = Stopped::new();
    let result = runtime.block_on(async {
        let mut run = tokio::spawn(predeploy_backup::commands::run(
            cli,
            wf.clone(),
            stopped.clone(),
        ));
        tokio::select! {
            r = &mut run => Some(match r {
                Ok(r) => r,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => Err(anyhow::anyhow!("the run stopped unexpectedly: {e}")),
            }),
            _ = cancelled() => {
                // Dropped now, as before: its helpers and leases are released by their drops.
                run.abort();
                let _ = run.await;
                None
            }
        }
    });
    match result {
        Some(Ok(())) => ExitCode::SUCCESS,
        Some(Err(e)) => {
            let kind = exit::kind(&e);
            fail(&wf, kind.title(), &exit::message(&e), kind)
        }
        None => {
            // The job was cancelled: put back what we stopped before the runner kills us.
            let failed = runtime.block_on(stopped.restart_all(&*wf.reporter()));
            let msg = if failed.is_empty() {
                "cancelled; containers stopped for the backup were started again".to_string()
            } else {
                format!(
                    "cancelled; start these containers by hand: {}",
                    failed.join(", ")
                )
            };
            fail(&wf, "Cancelled", &msg, ExitKind::Environment)
        }
    }
}

/// Resolves on SIGTERM or SIGINT (the runner sends SIGTERM when a job is cancelled).
async fn cancelled() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn fail(wf: &wf::Workflow, title: &str, message: &str, kind: ExitKind) -> ExitCode {
    wf.error(title, None, message);
    ExitCode::from(kind.code())
}
