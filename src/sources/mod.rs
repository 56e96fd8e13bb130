//! What is backed up: each source hands items to an [`crate::source::ItemSink`].

pub mod cassandra;
pub mod files;
