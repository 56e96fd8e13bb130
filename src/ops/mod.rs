//! Use cases: what a command does, without printing, clap types or exit codes (the binary layer
//! in `commands/` renders results and progress).

pub mod forget;
pub mod progress;
pub mod prune;
pub mod verify;
