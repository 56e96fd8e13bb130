//! One module per source engine, each owning both directions of its format (backup and restore).

pub mod mariadb;
