//! The use cases: snapshot, restore, drill. No printing and no command-line types here: the
//! binary (`commands/`) turns options into requests, renders [`progress::Progress`] and
//! formats the results. Every use case takes the [`Env`], whose registry lists the components
//! (sources), so a test can run them with a component of its own.

pub mod drill;
pub mod progress;
pub mod restore;
pub mod snapshot;

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
