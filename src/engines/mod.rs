//! One module per source, each owning both directions of its format: what is backed up and
//! how it is put back.

pub mod cassandra;
pub mod files;
