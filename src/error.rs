//! Error kinds that map to documented exit codes.
//!
//! Most errors travel as `anyhow::Error` with context; the ones a script or a monitoring system
//! must tell apart carry an [`MnError`] somewhere in their chain, and `main` maps it to an exit
//! code (see [`exit_code`] and the README's table).

use thiserror::Error;

/// Exit code: success.
pub const EXIT_OK: i32 = 0;
/// Exit code: the command failed (I/O, source unreachable, ...).
pub const EXIT_FAILURE: i32 = 1;
/// Exit code: bad command line or configuration.
pub const EXIT_USAGE: i32 = 2;
/// Exit code: no repository at the path (not initialised, or the pool is not mounted).
pub const EXIT_NO_REPO: i32 = 3;
/// Exit code: the repository is locked by another process.
pub const EXIT_LOCKED: i32 = 4;
/// Exit code: stored data is damaged or missing (integrity check failed).
pub const EXIT_INTEGRITY: i32 = 5;
/// Exit code: repository content is unsafe to act on (path traversal, absurd sizes, ...).
pub const EXIT_UNSAFE: i32 = 6;
/// Exit code: the pool (or the restore target) ran out of space.
pub const EXIT_NO_SPACE: i32 = 7;

/// Exit code of `verify`: objects are missing (and none is damaged).
pub const EXIT_MISSING: i32 = 8;
/// Exit code of `verify --drill` and `restore`: restored rows do not match the fingerprints.
pub const EXIT_MISMATCH: i32 = 9;

/// Exit code: the snapshot (or restore) was committed (or done), but is incomplete: some
/// source could not capture (or restore) everything; the gaps are listed.
pub const EXIT_INCOMPLETE: i32 = 10;

/// Exit code: an encrypted repository could not be unlocked: wrong passphrase, or none given.
pub const EXIT_KEY: i32 = 11;

/// An error whose kind decides the exit code. The message says what happened and what to do.
#[derive(Debug, Error)]
pub enum MnError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    NoRepo(String),
    #[error("{0}")]
    Locked(String),
    #[error("{0}")]
    Integrity(String),
    #[error("{0}")]
    Unsafe(String),
    #[error("{0}")]
    NoSpace(String),
    #[error("{0}")]
    Key(String),
}

impl MnError {
    /// The process exit code for this kind of error.
    pub fn exit_code(&self) -> i32 {
        match self {
            MnError::Usage(_) => EXIT_USAGE,
            MnError::NoRepo(_) => EXIT_NO_REPO,
            MnError::Locked(_) => EXIT_LOCKED,
            MnError::Integrity(_) => EXIT_INTEGRITY,
            MnError::Unsafe(_) => EXIT_UNSAFE,
            MnError::NoSpace(_) => EXIT_NO_SPACE,
            MnError::Key(_) => EXIT_KEY,
        }
    }
}

/// The exit code for an error: the first [`MnError`] in its chain decides, an out-of-space I/O
/// error maps to [`EXIT_NO_SPACE`], anything else is [`EXIT_FAILURE`].
pub fn exit_code(err: &anyhow::Error) -> i32 {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<MnError>() {
            return e.exit_code();
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if is_no_space(io) {
                return EXIT_NO_SPACE;
            }
        }
    }
    EXIT_FAILURE
}

/// True for ENOSPC and EDQUOT.
pub fn is_no_space(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || e.kind() == std::io::ErrorKind::StorageFull
}

/// Shorthand constructors returning `anyhow::Error`.
pub fn integrity(msg: impl Into<String>) -> anyhow::Error {
    MnError::Integrity(msg.into()).into()
}
pub fn unsafe_content(msg: impl Into<String>) -> anyhow::Error {
    MnError::Unsafe(msg.into()).into()
}
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    MnError::Usage(msg.into()).into()
}
