//! Files: both directions of the `files/<path>` items.
//!
//! * [`walk`]: the backup, walking the configured paths ([`backup`], [`item_name`]);
//! * [`place`]: the restore, placing entries safely under a target root ([`place()`]), and the
//!   byte-exact name encoding both share ([`encode_name`], [`decode_name`]).
//!
//! The `sources.files` manifest entry is [`crate::model::files_info::FilesSummary`].

pub mod component;
pub mod place;
pub mod walk;

pub use crate::model::files_info::FilesSummary;
pub use place::{
    check_relative, decode_name, encode_name, place, preflight, rel_path, Content, Entry,
    EntryMeta, Existing, Kind, PlaceOptions, PlaceReport, Unsafe,
};
pub use walk::{backup, file_meta, item_name, FilesConfig};
