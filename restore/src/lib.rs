//! How mnbackup rebuilds a failed management node: plan, preflight, load, prove.
//!
//! This crate knows nothing of the repository format: the `mnbackup` binary hands it entries and
//! content readers through narrow traits.

pub mod fingerprint;
pub mod journal;
pub mod mariadb;
pub mod plan;
pub mod report;
pub mod sql;
