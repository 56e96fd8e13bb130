//! The engine-independent restore machinery of mnbackup: plan steps and checks, the report, the
//! journal. What each source's format means (MariaDB SQL, Cassandra SSTables, files) lives in the
//! `mnbackup` crate's engines.
//!
//! This crate knows nothing of the repository format: the `mnbackup` binary hands it entries and
//! content readers through narrow traits.

pub mod journal;
pub mod plan;
pub mod report;
