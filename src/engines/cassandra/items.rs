use std::fmt;
use std::io::Read;

use anyhow::Result;

use crate::model::cassandra_info::{CassandraItem, KEYSPACE_CQL};

/// Opens one component's bytes (called at most once, only by [`restore`]).
pub type OpenFn<'a> = Box<dyn FnOnce() -> Result<Box<dyn Read + 'a>> + 'a>;

/// One backed-up file of a table: an SSTable component, the table's `schema.cql` or the
/// snapshot's `manifest.json`; or of a keyspace: its `keyspace.cql` (the `DESCRIBE KEYSPACE`
/// output), with an empty `table`.
pub struct RestoreComponent<'a> {
    pub keyspace: String,
    /// Empty for the keyspace's `keyspace.cql`.
    pub table: String,
    /// Path relative to the table directory: a component file name (`md-1-big-Data.db`),
    /// `.<index>/<file>` for a secondary index, `schema.cql`, `manifest.json`.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits as backed up (`0o640`); None: the restore's default (0644).
    pub mode: Option<u32>,
    /// Opens the bytes.
    pub open: OpenFn<'a>,
}

impl fmt::Debug for RestoreComponent<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestoreComponent")
            .field("keyspace", &self.keyspace)
            .field("table", &self.table)
            .field("name", &self.name)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl<'a> RestoreComponent<'a> {
    /// Build from a snapshot item name `cassandra/<ks>/<table>/<name…>` (or
    /// `cassandra/<ks>/keyspace.cql`, which gets an empty `table`); None for other items.
    pub fn from_item_name(item: &str, size: u64, open: OpenFn<'a>) -> Option<Self> {
        let (keyspace, table, name) = match CassandraItem::parse(item)? {
            CassandraItem::KeyspaceCql { keyspace } => {
                (keyspace, String::new(), KEYSPACE_CQL.into())
            }
            CassandraItem::TableFile {
                keyspace,
                table,
                file,
            } => (keyspace, table, file),
        };
        Some(RestoreComponent {
            keyspace,
            table,
            name,
            size,
            mode: None,
            open,
        })
    }
}
