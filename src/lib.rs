//! mnbackup: backup and disaster recovery for the ZStack / Mevoco management node.
//!
//! Layers, bottom up (a layer imports only layers below it):
//! - [`model`]: manifests, items, pieces, ids and limits, the `ItemSink` / `ItemSource` traits
//!   (no I/O);
//! - [`store`]: where bytes live: the `Backend` trait, `LocalFs`, in-memory and faulty backends;
//! - [`repo`]: the repository over a backend: objects, manifests, locks, leftovers, the codec,
//!   the snapshot writer and the item reader;
//! - [`engines`]: one module per source (MariaDB, Cassandra, files), each owning backup and
//!   restore of its format, and the `Component` registry the use cases loop over;
//! - [`ops`]: use cases without printing (snapshot, restore, drill, verify, prune, forget, ...);
//! - [`commands`]: one module per command of the `mnbackup` binary.

pub mod cli;
pub mod commands;
pub mod config;
pub mod engines;
pub mod error;
pub mod model;
pub mod ops;
pub mod repo;
pub mod store;
pub mod ui;
