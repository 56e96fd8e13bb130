//! MariaDB binlog capture and replay (point-in-time recovery, issue 20; see `docs/binlog.md`).
//! The repository side (shipping batches, `restore --until`) is `ops::binlog`.
//!
//! - [`capture`]: follow a server's binlog as a replica, verify CRC32, cut into segments
//!   delivered to a [`SegmentSink`];
//! - [`segment`]: the segment file (binlog file format) and its typed [`SegmentInfo`];
//! - [`gaps`]: resume checks and the typed [`Gap`]s (purged, reset, restart);
//! - [`replay`]: selected transactions through `mariadb-binlog` into the `mariadb` client;
//! - [`series`]: the batches a repository holds, their chains and the point-in-time plan;
//! - [`requirements`]: the server settings capture needs, with what to set in `my.cnf`;
//! - [`event`]: raw events and binlog files.

pub mod capture;
pub mod event;
pub mod gaps;
pub mod replay;
pub mod requirements;
pub mod segment;
pub mod series;

pub use capture::{capture, CaptureConfig, CaptureError, CaptureMode, CaptureOutcome};
pub use event::{Gtid, RawEvent};
pub use gaps::{check_resume, current_position, BinlogPos, Gap};
pub use replay::{replay, AppliedEvent, ReplayError, ReplayOptions, ReplayReport, StopAt};
pub use requirements::{check_requirements, Finding, Level, RequirementInputs};
pub use segment::{DirSink, SegmentInfo, SegmentSink};
