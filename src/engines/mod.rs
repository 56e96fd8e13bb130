//! One module per source engine, owning both directions of its format.

pub mod binlog;
