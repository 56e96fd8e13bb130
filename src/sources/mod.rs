//! What is backed up: each source hands items to an [`crate::source::ItemSink`]. Cassandra and
//! files live in [`crate::engines`].

pub mod mariadb;
