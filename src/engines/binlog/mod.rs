//! MariaDB binlog capture and replay (point-in-time recovery, issue 20), standalone: not yet
//! wired to the repository, jobs or `restore --until` (see `docs/binlog.md`).
//!
//! - [`capture`]: follow a server's binlog as a replica, verify CRC32, cut into segments
//!   delivered to a [`SegmentSink`];
//! - [`segment`]: the segment file (binlog file format) and its typed [`SegmentInfo`];
//! - [`gaps`]: resume checks and the typed [`Gap`]s (purged, reset, restart);
//! - [`replay`]: selected transactions through `mariadb-binlog` into the `mariadb` client;
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
