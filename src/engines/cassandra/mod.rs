//! Cassandra (Mevoco 1.x monitoring data: `zstack_billing`, `zstack_logging`, `kairosdb`): both
//! directions of its format.
//!
//! * [`config`]: the `[cassandra]` configuration ([`CassandraConfig`]);
//! * [`tool`]: running `nodetool` and `cqlsh` ([`Nodetool`], [`run_command`]) with a timeout, a
//!   clear error when they fail, and the JMX password passed through a private `-pwf` file
//!   instead of the command line;
//! * [`sstable`]: SSTable component file names of every format (2.x `ks-table-ka-1-Data.db`,
//!   3.x+ `md-1-big-Data.db`, 5.0 `da-<uuid-ish>-bti-Data.db`), generations, which release
//!   reads which format;
//! * [`digest`]: the whole-file digest Cassandra writes beside each `Data.db`
//!   (`Digest.crc32`, `Digest.adler32`, `Digest.sha1`), checked while the file streams;
//! * [`cql`]: CQL text (`DESCRIBE KEYSPACE` output, statements) and schema questions;
//! * [`backup`]: the snapshot through `nodetool`, shipped as immutable SSTable components
//!   (one table's directory at a time: `table.rs`);
//! * [`items`]: the restore's input, [`RestoreComponent`], built from the snapshot's
//!   `cassandra/<ks>/<table>/…` items ([`crate::model::cassandra_info::CassandraItem`]);
//! * [`plan`]: what goes where ([`plan()`], [`plan_with_cql`]), changing nothing;
//! * [`stage`] and [`load`]: placing the files ([`restore`], [`restore_journaled`]) and making
//!   the node load them, proven.
//!
//! The `sources.cassandra` manifest entry is [`crate::model::cassandra_info::CassandraSourceInfo`].

pub mod backup;
pub mod component;
pub mod config;
pub mod cql;
pub mod digest;
pub mod items;
pub mod load;
pub mod plan;
pub mod sstable;
pub mod stage;
mod table;
pub mod tool;

pub use backup::{backup, discover_keyspaces, mnbackup_tags, CassandraSummary};
pub use config::{parse_config, CassandraConfig, CommandLine};
pub use cql::{is_system_keyspace, KEYSPACE_CQL};
pub use items::{OpenFn, RestoreComponent};
pub use load::{restore, restore_journaled};
pub use plan::{
    find_table_dirs, plan, plan_with_cql, CassandraPlan, CassandraRestoreConfig,
    CassandraRestoreReport, TableReport,
};
pub use sstable::SstableFile;
pub use tool::{cancel_commands_flag, set_command_timeout, Nodetool, DEFAULT_COMMAND_TIMEOUT_SECS};

#[cfg(test)]
mod tests;
