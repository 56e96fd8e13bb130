//! Use cases: what a command does, without printing, clap types or exit codes (the binary layer
//! in `commands/` renders results and progress). Every use case that runs sources takes the
//! [`Env`], whose registry lists the components (sources), so a test can run them with a
//! component of its own.

pub mod binlog;
pub mod binlog_follow;
pub mod cluster;
pub mod copy;
pub mod drill;
pub mod forget;
pub mod migrate;
pub mod progress;
pub mod prune;
pub mod repair;
pub mod restore;
pub mod snapshot;
pub mod verify;
use std::time::Duration;

use crate::config::Config;
use crate::engines::Registry;
use crate::repo::Repo;

/// What every use case needs.
pub struct Env<'a> {
    pub config: &'a Config,
    pub repo: Repo,
    /// How long to wait for the repository lock.
    pub lock_wait: Duration,
    pub registry: &'a Registry,
}
