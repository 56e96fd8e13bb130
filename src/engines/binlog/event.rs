//! Raw binlog events as MariaDB writes them (`sql/log_event.cc`): a 19-byte header, the
//! event body, and with `binlog_checksum=CRC32` a 4-byte CRC32 of everything before it.
//!
//! Only what capture and replay need is decoded: the header, the checksum, rotate targets,
//! MariaDB GTID and GTID-list events, the database of table maps and query events.

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Magic at the start of every binlog file (`BINLOG_MAGIC`).
pub const BINLOG_MAGIC: [u8; 4] = [0xfe, b'b', b'i', b'n'];
/// Length of the common event header (binlog format v4).
pub const HEADER_LEN: usize = 19;
/// Length of a CRC32 event checksum.
pub const CHECKSUM_LEN: usize = 4;
/// `LOG_EVENT_BINLOG_IN_USE_F`: set on the Format_description event of a file being written.
pub const FLAG_IN_USE: u16 = 0x1;
/// `LOG_EVENT_ARTIFICIAL_F`: an event the server made up for the dump (fake rotate).
pub const FLAG_ARTIFICIAL: u16 = 0x20;

/// Event type codes used here (`enum Log_event_type`).
pub mod kind {
    pub const QUERY: u8 = 2;
    pub const STOP: u8 = 3;
    pub const ROTATE: u8 = 4;
    pub const FORMAT_DESCRIPTION: u8 = 15;
    pub const XID: u8 = 16;
    pub const TABLE_MAP: u8 = 19;
    pub const HEARTBEAT: u8 = 27;
    pub const ANNOTATE_ROWS: u8 = 160;
    pub const BINLOG_CHECKPOINT: u8 = 161;
    pub const GTID: u8 = 162;
    pub const GTID_LIST: u8 = 163;
}

/// A malformed event or a checksum mismatch.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("binlog event too short ({0} bytes)")]
    Short(usize),
    #[error("binlog event length {header} in its header, but {actual} bytes received")]
    Length { header: u32, actual: usize },
    #[error(
        "binlog event at {file}:{pos} (type {kind}) has CRC32 {stored:08x}, computed {computed:08x}: \
         the event was damaged on the server or on the way"
    )]
    Checksum {
        file: String,
        pos: u64,
        kind: u8,
        stored: u32,
        computed: u32,
    },
    #[error("not a binlog file (magic {0:02x?})")]
    Magic([u8; 4]),
    #[error("binlog file: {0}")]
    Io(#[from] io::Error),
}

/// One raw event: header + body (+ checksum), byte for byte as on the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent(pub Vec<u8>);

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl RawEvent {
    /// Check the header's length against the bytes.
    pub fn new(bytes: Vec<u8>) -> Result<RawEvent, EventError> {
        if bytes.len() < HEADER_LEN {
            return Err(EventError::Short(bytes.len()));
        }
        let ev = RawEvent(bytes);
        if ev.size() as usize != ev.0.len() {
            return Err(EventError::Length {
                header: ev.size(),
                actual: ev.0.len(),
            });
        }
        Ok(ev)
    }
    /// Seconds since the epoch when the statement started (0 for artificial events).
    pub fn timestamp(&self) -> u32 {
        le_u32(&self.0, 0)
    }
    pub fn kind(&self) -> u8 {
        self.0[4]
    }
    pub fn server_id(&self) -> u32 {
        le_u32(&self.0, 5)
    }
    pub fn size(&self) -> u32 {
        le_u32(&self.0, 9)
    }
    /// Position just after this event in the server's binlog file (0 for artificial ones).
    pub fn log_pos(&self) -> u32 {
        le_u32(&self.0, 13)
    }
    pub fn flags(&self) -> u16 {
        le_u16(&self.0, 17)
    }
    /// Position of this event in the server's file.
    pub fn start_pos(&self) -> u64 {
        u64::from(self.log_pos()).saturating_sub(u64::from(self.size()))
    }
    pub fn is_artificial(&self) -> bool {
        self.flags() & FLAG_ARTIFICIAL != 0 || self.log_pos() == 0
    }

    /// The CRC32 MariaDB stores: over header and body, with the in-use flag cleared.
    fn crc_of_prefix(&self) -> u32 {
        let end = self.0.len() - CHECKSUM_LEN;
        let mut h = crc32fast::Hasher::new();
        let mut head = [0u8; HEADER_LEN];
        head.copy_from_slice(&self.0[..HEADER_LEN]);
        let flags = le_u16(&head, 17) & !FLAG_IN_USE;
        head[17..19].copy_from_slice(&flags.to_le_bytes());
        h.update(&head);
        h.update(&self.0[HEADER_LEN..end]);
        h.finalize()
    }
    fn stored_crc(&self) -> u32 {
        le_u32(&self.0, self.0.len() - CHECKSUM_LEN)
    }
    /// Whether the last 4 bytes are a valid CRC32 of the rest (used where the checksum's
    /// presence is not announced, as for the dump's first, artificial rotate).
    pub fn has_valid_crc(&self) -> bool {
        self.0.len() >= HEADER_LEN + CHECKSUM_LEN && self.crc_of_prefix() == self.stored_crc()
    }
    /// Verify the CRC32 checksum (`file` only names the event in the error).
    pub fn verify_crc(&self, file: &str) -> Result<(), EventError> {
        if self.0.len() < HEADER_LEN + CHECKSUM_LEN {
            return Err(EventError::Short(self.0.len()));
        }
        let (stored, computed) = (self.stored_crc(), self.crc_of_prefix());
        if stored != computed {
            return Err(EventError::Checksum {
                file: file.to_string(),
                pos: self.start_pos(),
                kind: self.kind(),
                stored,
                computed,
            });
        }
        Ok(())
    }
    /// The body without the checksum.
    pub fn body(&self, crc: bool) -> &[u8] {
        let end = if crc {
            self.0.len().saturating_sub(CHECKSUM_LEN)
        } else {
            self.0.len()
        };
        &self.0[HEADER_LEN.min(end)..end]
    }
    /// Clear the in-use flag (a Format_description event of a closed file). The checksum
    /// does not cover this flag, so it stays valid.
    pub fn clear_in_use(&mut self) {
        let flags = self.flags() & !FLAG_IN_USE;
        self.0[17..19].copy_from_slice(&flags.to_le_bytes());
    }

    /// Format_description: the checksum algorithm (0 off, 1 CRC32) and the create timestamp
    /// (non-zero only in the first binlog a server writes after it starts).
    pub fn fde_info(&self) -> Option<FdeInfo> {
        if self.kind() != kind::FORMAT_DESCRIPTION || self.0.len() < HEADER_LEN + 57 {
            return None;
        }
        let b = &self.0[HEADER_LEN..];
        let version_raw = &b[2..52];
        let nul = version_raw.iter().position(|&c| c == 0).unwrap_or(50);
        let server_version = String::from_utf8_lossy(&version_raw[..nul]).into_owned();
        // With checksums (MariaDB >= 5.3) the body ends with alg (1 byte) + CRC (4 bytes).
        let alg = self.0[self.0.len() - CHECKSUM_LEN - 1];
        Some(FdeInfo {
            server_version,
            created: le_u32(b, 52),
            checksum_crc32: alg == 1,
        })
    }

    /// Rotate: the next file and the position in it.
    pub fn rotate_target(&self, crc: bool) -> Option<(String, u64)> {
        if self.kind() != kind::ROTATE {
            return None;
        }
        let body = self.body(crc);
        if body.len() < 8 {
            return None;
        }
        let name = String::from_utf8_lossy(&body[8..]).into_owned();
        Some((name, le_u64(body, 0)))
    }

    /// MariaDB GTID event: the GTID and whether the group is one standalone statement.
    pub fn gtid(&self) -> Option<(Gtid, bool)> {
        if self.kind() != kind::GTID || self.0.len() < HEADER_LEN + 13 {
            return None;
        }
        let b = &self.0[HEADER_LEN..];
        let gtid = Gtid {
            domain: le_u32(b, 8),
            server: self.server_id(),
            seq: le_u64(b, 0),
        };
        Some((gtid, b[12] & 1 != 0))
    }

    /// Table_map: (database, table).
    pub fn table_map(&self, crc: bool) -> Option<(u64, String, String)> {
        if self.kind() != kind::TABLE_MAP {
            return None;
        }
        let b = self.body(crc);
        let mut id = [0u8; 8];
        id[..6].copy_from_slice(b.get(..6)?);
        let db_len = *b.get(8)? as usize;
        let db = b.get(9..9 + db_len)?;
        let tl_at = 9 + db_len + 1;
        let tl = *b.get(tl_at)? as usize;
        let table = b.get(tl_at + 1..tl_at + 1 + tl)?;
        Some((
            u64::from_le_bytes(id),
            String::from_utf8_lossy(db).into_owned(),
            String::from_utf8_lossy(table).into_owned(),
        ))
    }

    /// Table id of a rows event (all rows event types start with a 6-byte table id).
    pub fn rows_table_id(&self) -> Option<u64> {
        let k = self.kind();
        let is_rows = (23..=25).contains(&k) || (30..=32).contains(&k) || (166..=171).contains(&k);
        if !is_rows {
            return None;
        }
        let mut id = [0u8; 8];
        id[..6].copy_from_slice(self.0.get(HEADER_LEN..HEADER_LEN + 6)?);
        Some(u64::from_le_bytes(id))
    }

    /// A Query event of our own (no default database, no status variables), as `mariadb-binlog`
    /// prints it: the statement. `crc`: with a CRC32 checksum (as the stream's other events).
    pub fn query_event(timestamp: u32, server_id: u32, log_pos: u32, sql: &str, crc: bool) -> Self {
        let body_len = 13 + 1 + sql.len();
        let size = HEADER_LEN + body_len + if crc { CHECKSUM_LEN } else { 0 };
        let mut b = Vec::with_capacity(size);
        b.extend_from_slice(&timestamp.to_le_bytes());
        b.push(kind::QUERY);
        b.extend_from_slice(&server_id.to_le_bytes());
        b.extend_from_slice(&(size as u32).to_le_bytes());
        b.extend_from_slice(&log_pos.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes()); // thread id
        b.extend_from_slice(&0u32.to_le_bytes()); // execution time
        b.push(0); // default database length
        b.extend_from_slice(&0u16.to_le_bytes()); // error code
        b.extend_from_slice(&0u16.to_le_bytes()); // status variables length
        b.push(0); // the (empty) database name's terminator
        b.extend_from_slice(sql.as_bytes());
        if crc {
            let c = crc32fast::hash(&b);
            b.extend_from_slice(&c.to_le_bytes());
        }
        RawEvent(b)
    }

    /// Query: (default database, statement text).
    pub fn query(&self, crc: bool) -> Option<(String, String)> {
        if self.kind() != kind::QUERY {
            return None;
        }
        let b = self.body(crc);
        let db_len = *b.get(8)? as usize;
        let status_len = le_u16(b.get(..13)?, 11) as usize;
        let db_at = 13 + status_len;
        let db = b.get(db_at..db_at + db_len)?;
        let q = b.get(db_at + db_len + 1..)?;
        Some((
            String::from_utf8_lossy(db).into_owned(),
            String::from_utf8_lossy(q).into_owned(),
        ))
    }
}

/// What a Format_description event says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdeInfo {
    pub server_version: String,
    pub created: u32,
    pub checksum_crc32: bool,
}

/// A MariaDB GTID: `domain-server-seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Gtid {
    pub domain: u32,
    pub server: u32,
    pub seq: u64,
}

impl fmt::Display for Gtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server, self.seq)
    }
}

impl FromStr for Gtid {
    type Err = String;
    fn from_str(s: &str) -> Result<Gtid, String> {
        let bad = || format!("not a MariaDB GTID (domain-server-seq): {s:?}");
        let mut it = s.trim().splitn(3, '-');
        let mut next = || it.next().ok_or_else(bad);
        let (d, sv, sq) = (next()?, next()?, next()?);
        Ok(Gtid {
            domain: d.parse().map_err(|_| bad())?,
            server: sv.parse().map_err(|_| bad())?,
            seq: sq.parse().map_err(|_| bad())?,
        })
    }
}

impl From<Gtid> for String {
    fn from(g: Gtid) -> String {
        g.to_string()
    }
}

impl TryFrom<String> for Gtid {
    type Error = String;
    fn try_from(s: String) -> Result<Gtid, String> {
        s.parse()
    }
}

/// Parse a GTID list as `@@gtid_binlog_pos` shows it (`0-1-5,1-2-9`; empty for none).
pub fn parse_gtid_list(s: &str) -> Result<Vec<Gtid>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::parse)
        .collect()
}

/// Read a binlog file (a segment): checks the magic, returns its events in order.
pub fn read_binlog_file(mut r: impl Read) -> Result<Vec<RawEvent>, EventError> {
    let mut magic = [0u8; 4];
    r.read_exact(&mut magic)?;
    if magic != BINLOG_MAGIC {
        return Err(EventError::Magic(magic));
    }
    let mut out = Vec::new();
    loop {
        let mut head = [0u8; HEADER_LEN];
        match r.read_exact(&mut head[..1]) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(out),
            Err(e) => return Err(e.into()),
        }
        r.read_exact(&mut head[1..])?;
        let size = le_u32(&head, 9) as usize;
        if size < HEADER_LEN {
            return Err(EventError::Short(size));
        }
        let mut bytes = Vec::with_capacity(size);
        bytes.extend_from_slice(&head);
        bytes.resize(size, 0);
        r.read_exact(&mut bytes[HEADER_LEN..])?;
        out.push(RawEvent::new(bytes)?);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: u8, body: &[u8], log_pos: u32) -> RawEvent {
        let size = (HEADER_LEN + body.len() + CHECKSUM_LEN) as u32;
        let mut b = Vec::new();
        b.extend_from_slice(&1_700_000_000u32.to_le_bytes());
        b.push(kind);
        b.extend_from_slice(&7u32.to_le_bytes());
        b.extend_from_slice(&size.to_le_bytes());
        b.extend_from_slice(&log_pos.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(body);
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        RawEvent::new(b).unwrap()
    }

    #[test]
    fn own_query_events_read_back() {
        for crc in [true, false] {
            let e = RawEvent::query_event(1_700_000_000, 7, 500, "DO 1", crc);
            let e = RawEvent::new(e.0).unwrap();
            assert_eq!(e.query(crc), Some((String::new(), "DO 1".to_string())));
            assert_eq!(e.log_pos(), 500);
            if crc {
                e.verify_crc("f").unwrap();
            }
        }
    }

    #[test]
    fn crc_is_verified_and_damage_detected() {
        let mut body = Vec::new();
        body.extend_from_slice(&42u64.to_le_bytes());
        body.extend_from_slice(&3u32.to_le_bytes());
        body.push(1);
        let ev = event(kind::GTID, &body, 500);
        ev.verify_crc("f").unwrap();
        assert_eq!(
            ev.gtid(),
            Some((
                Gtid {
                    domain: 3,
                    server: 7,
                    seq: 42
                },
                true
            ))
        );
        assert_eq!(ev.start_pos(), 500 - ev.size() as u64);
        let mut bad = ev.clone();
        bad.0[HEADER_LEN] ^= 1;
        assert!(matches!(
            bad.verify_crc("f"),
            Err(EventError::Checksum { .. })
        ));
        // The in-use flag is not covered.
        let mut flagged = ev.clone();
        flagged.0[17] |= FLAG_IN_USE as u8;
        flagged.verify_crc("f").unwrap();
    }

    #[test]
    fn gtid_text_round_trips() {
        let g: Gtid = "0-1-15".parse().unwrap();
        assert_eq!(g.to_string(), "0-1-15");
        assert!("0-1".parse::<Gtid>().is_err());
        assert_eq!(parse_gtid_list("0-1-5, 2-3-9").unwrap().len(), 2);
        assert!(parse_gtid_list("").unwrap().is_empty());
    }

    #[test]
    fn file_reader_wants_magic_and_whole_events() {
        let ev = event(kind::XID, &9u64.to_le_bytes(), 100);
        let mut f = BINLOG_MAGIC.to_vec();
        f.extend_from_slice(&ev.0);
        assert_eq!(read_binlog_file(&f[..]).unwrap(), vec![ev.clone()]);
        assert!(matches!(
            read_binlog_file(&ev.0[..]),
            Err(EventError::Magic(_))
        ));
        let cut = &f[..f.len() - 1];
        assert!(read_binlog_file(cut).is_err());
    }
}
