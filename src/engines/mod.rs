//! One module per source engine, each owning both directions of its format (backup and restore).

pub mod cassandra;
pub mod files;
pub mod mariadb;
