//! The daemon's hooks: `[daemon] on_failure` / `on_success`, also run by `snapshot --hooks` and
//! `verify --hooks` ([`ManualHooks`]).

use std::io::Read;
use std::time::Duration;

use anyhow::Result;
use tracing::{error, info};

use super::{Ctx, HOOK_TIMEOUT};
use crate::error::usage;

/// The `MNBACKUP_*` variables of a hook: `MNBACKUP_JOB`, `MNBACKUP_KIND`, `MNBACKUP_RESULT`
/// (`success` or `failure`), and `MNBACKUP_SUMMARY` (success) or `MNBACKUP_ERROR` (failure).
pub(super) fn hook_vars(
    job: &str,
    kind: &str,
    outcome: Result<&str, &str>,
) -> Vec<(String, String)> {
    let mut v = vec![
        ("MNBACKUP_JOB".to_string(), job.to_string()),
        ("MNBACKUP_KIND".to_string(), kind.to_string()),
    ];
    match outcome {
        Ok(summary) => {
            v.push(("MNBACKUP_RESULT".into(), "success".into()));
            v.push(("MNBACKUP_SUMMARY".into(), summary.to_string()));
        }
        Err(msg) => {
            v.push(("MNBACKUP_RESULT".into(), "failure".into()));
            v.push(("MNBACKUP_ERROR".into(), msg.to_string()));
        }
    }
    v
}

/// Runs a hook (`sh -c CMD`) in its own process group with the given variables, waits up to
/// [`HOOK_TIMEOUT`], and kills the whole group if it takes longer (so nothing it started is
/// left behind; what a hook that returned in time started in the background is left alone).
/// Failures are logged as errors: the job's own result is unaffected.
pub(super) fn run_hook(which: &str, cmd: &str, vars: &[(String, String)]) {
    use std::os::unix::process::CommandExt;
    let job = vars
        .iter()
        .find(|(k, _)| k == "MNBACKUP_JOB")
        .map(|(_, v)| v.as_str())
        .unwrap_or_default();
    let mut command = std::process::Command::new("sh");
    command
        .arg("-c")
        .arg(cmd)
        .envs(vars.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .process_group(0);
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            error!(job = %job, "could not run the {which} command `{cmd}`: {e}; check that `sh` is available");
            return;
        }
    };
    let deadline = std::time::Instant::now() + HOOK_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            _ => break None,
        }
    };
    if status.is_none() {
        // Too slow: the hook goes, with everything it started in its group.
        // SAFETY: kill(2) on the process group we created for the hook.
        unsafe {
            libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL);
        }
    }
    let mut stderr = String::new();
    if let Some(e) = child.stderr.take() {
        // A background process the hook started may keep the pipe open: read what is there
        // without waiting for it.
        let _ = nix::fcntl::fcntl(
            &e,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        );
        let mut e = e;
        let _ = e.read_to_string(&mut stderr);
    }
    match status {
        Some(st) if st.success() => info!(job = %job, "{which} command ran: {cmd}"),
        Some(st) => error!(
            job = %job,
            "the {which} command `{cmd}` failed ({st}): {}; fix [daemon] {which} (test it with \
             `MNBACKUP_JOB=x MNBACKUP_ERROR=test sh -c '…'`)",
            stderr.trim()
        ),
        None => {
            let _ = child.wait();
            error!(
                job = %job,
                "the {which} command `{cmd}` did not finish within {}s and was killed with its \
                 process group; make it return promptly (run slow notifications in the background)",
                HOOK_TIMEOUT.as_secs()
            )
        }
    }
}

/// `--hooks` on a manual `snapshot` or `verify`: the hooks to run afterwards.
pub struct ManualHooks {
    kind: &'static str,
    on_success: Option<String>,
    on_failure: Option<String>,
}

impl ManualHooks {
    /// The hooks for this command line, if `--hooks` was given. `--hooks` on another command,
    /// or with neither hook configured, is a usage error.
    pub fn for_cli(cli: &crate::cli::Cli) -> Result<Option<ManualHooks>> {
        use crate::cli::Command;
        if !cli.hooks {
            return Ok(None);
        }
        let kind =
            match &cli.command {
                Command::Snapshot(_) => "snapshot",
                Command::Verify { drill: None, .. } => "verify",
                Command::Verify { .. } => "verify --drill",
                _ => return Err(usage(
                    "--hooks applies to `snapshot` and `verify` only (the daemon runs the hooks \
                     for its jobs by itself)",
                )),
            };
        let ctx = Ctx::new(cli)?;
        let d = &ctx.config.daemon;
        let nonempty = |c: &Option<String>| c.clone().filter(|c| !c.trim().is_empty());
        let (on_success, on_failure) = (nonempty(&d.on_success), nonempty(&d.on_failure));
        if on_success.is_none() && on_failure.is_none() {
            return Err(usage(
                "--hooks was given, but the configuration sets neither [daemon] on_success nor \
                 [daemon] on_failure; set them, or leave out --hooks",
            ));
        }
        Ok(Some(ManualHooks {
            kind,
            on_success,
            on_failure,
        }))
    }

    /// Runs `on_success` after exit code 0, `on_failure` otherwise (with the error or the
    /// exit code), with `MNBACKUP_JOB=manual`.
    pub fn after(&self, result: &Result<i32>) {
        let failure = match result {
            Ok(0) => None,
            Ok(crate::error::EXIT_INCOMPLETE) => Some(format!(
                "the {} was committed but is INCOMPLETE (exit code 10); `mnbackup show latest` \
                 lists what it lacks",
                self.kind
            )),
            Ok(code) => Some(format!("{} ended with exit code {code}", self.kind)),
            Err(e) => Some(format!("{e:#} (exit code {})", crate::error::exit_code(e))),
        };
        match (failure, &self.on_success, &self.on_failure) {
            (None, Some(cmd), _) => run_hook(
                "on_success",
                cmd,
                &hook_vars("manual", self.kind, Ok(&format!("{} ok", self.kind))),
            ),
            (Some(msg), _, Some(cmd)) => run_hook(
                "on_failure",
                cmd,
                &hook_vars("manual", self.kind, Err(&msg)),
            ),
            _ => {}
        }
    }
}
