//! mnbackup: backup and disaster recovery for the ZStack / Mevoco management node.
//!
//! - [`sources`]: what is backed up (MariaDB, Cassandra, files), written through [`source::ItemSink`];
//! - [`codec`]: how a piece is stored (unchanged, rsync delta, or full; zstd);
//! - [`repo`]: where it is stored (objects, manifests, locks on the pool);
//! - [`commands`]: one module per command of the `mnbackup` binary.

pub mod cli;
pub mod codec;
pub mod commands;
pub mod config;
pub mod engines;
pub mod error;
pub mod model;
pub mod reader;
pub mod repo;
pub mod source;
pub mod sources;
pub mod ui;
pub mod writer;
