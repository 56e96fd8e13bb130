//! Cron schedules in crontab syntax, evaluated in a time zone with cronie/Vixie-cron
//! daylight-saving rules.
//!
//! # Syntax
//!
//! * 5 fields, exactly like `crontab(5)`: `minute hour day-of-month month day-of-week`,
//!   e.g. `0 0,12 * * *` (00:00 and 12:00 every day — the product default).
//! * 6 fields with a leading seconds field: `second minute hour dom month dow`.
//! * Names: `@yearly`/`@annually`, `@monthly`, `@weekly`, `@daily`/`@midnight`, `@hourly`.
//!
//! Each field is a comma-separated list of `*`, `N`, `N-M`, `*/S`, `N-M/S` or `N/S`
//! (= `N-max/S`). Months accept `jan`..`dec`, days of week `sun`..`sat` (full names
//! too, case-insensitive). Day of week uses crontab numbering: `0` and `7` are Sunday,
//! `1` is Monday … `6` is Saturday, so `1-5` is Monday to Friday. (The `cron` crate
//! numbers Sunday as 1; we do not use it for evaluation, so no translation is needed
//! and crontab lines mean exactly what they mean in crontab.) Ranges do not wrap
//! (`5-1` is rejected; write `5-7,0-1`). Quartz extensions (`L`, `W`, `#`, `?`) and a
//! 7th "year" field are rejected.
//!
//! **Day-of-month vs day-of-week:** as in Vixie cron/cronie, when *both* fields are
//! restricted (neither starts with `*`) a day matches if *either* matches (OR):
//! `0 0 1 * 1` runs on the 1st of the month *and* on every Monday. If either field
//! starts with `*` the other alone decides.
//!
//! # Daylight-saving time
//!
//! Jobs are classified like Vixie cron: a job is *wildcard* if its seconds, minute or
//! hour field starts with `*` (e.g. `*/5 * * * *`, `0 * * * *`), otherwise *fixed-time*
//! (e.g. `30 2 * * *`, `0 0,12 * * *`).
//!
//! * Spring forward (local times skipped): a fixed-time slot that falls in the gap
//!   fires once at the first instant after the gap (e.g. 03:00 in New York), so the
//!   day's backup is never skipped. Wildcard jobs follow real time: slots in the gap
//!   simply do not exist.
//! * Fall back (local times repeated): a fixed-time slot fires once, at the first
//!   occurrence. Wildcard jobs follow real time and fire in both occurrences
//!   (an `@hourly` job runs twice during the repeated hour, an hour apart).
//!
//! All results are returned as UTC instants.

use std::fmt;

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset,
    TimeZone, Timelike, Utc,
};

/// Errors from parsing a schedule or a time zone. Messages name the offending field and
/// say what is expected, so they can be shown to the operator as-is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// Wrong number of whitespace-separated fields.
    #[error(
        "schedule {expr:?} has {found} field(s); expected 5 crontab fields \
         \"minute hour day-of-month month day-of-week\" (e.g. \"0 0,12 * * *\" = 00:00 and \
         12:00 every day), 6 fields with a leading seconds field, or a name like @daily"
    )]
    FieldCount {
        /// The expression as given.
        expr: String,
        /// Number of fields found.
        found: usize,
    },
    /// One field could not be parsed.
    #[error(
        "schedule {expr:?}: {field} field {value:?} is invalid: {reason}; expected {expected}"
    )]
    BadField {
        /// The expression as given.
        expr: String,
        /// Human name of the field ("minute", "day-of-week", ...).
        field: &'static str,
        /// The field text.
        value: String,
        /// What is wrong.
        reason: String,
        /// What the field accepts.
        expected: &'static str,
    },
    /// An `@name` that is not supported.
    #[error(
        "schedule {expr:?}: unknown or unsupported name; use @yearly, @annually, @monthly, \
         @weekly, @daily, @midnight or @hourly, or a 5-field crontab expression{hint}"
    )]
    UnknownName {
        /// The expression as given.
        expr: String,
        /// Extra hint (e.g. for @reboot).
        hint: &'static str,
    },
    /// The expression is valid but can never fire (e.g. `0 0 31 2 *`).
    #[error(
        "schedule {expr:?} never fires (no matching date within 40 years, e.g. February 30th \
         or the 31st of a 30-day month); check the day-of-month and month fields"
    )]
    NeverFires {
        /// The expression as given.
        expr: String,
    },
    /// Unknown time zone name.
    #[error(
        "unknown time zone {name:?}; use an IANA name such as \"Asia/Shanghai\", \"UTC\" or \
         \"America/New_York\" (see /usr/share/zoneinfo), or \"local\" for the system zone"
    )]
    UnknownTimeZone {
        /// The name as given.
        name: String,
    },
}

/// The time zone a schedule is evaluated in.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum TzSpec {
    /// The system local zone (`TZ` environment variable, else `/etc/localtime`), as
    /// resolved by `chrono::Local`.
    #[default]
    Local,
    /// An IANA zone such as `Asia/Shanghai`.
    Named(chrono_tz::Tz),
}

/// The IANA zone named by a `TZ` value, an `/etc/localtime` symlink target or an
/// `/etc/timezone` file, in that order (see [`TzSpec::system`]).
pub fn resolve_system_zone(
    tz_env: Option<&str>,
    localtime_link: Option<&std::path::Path>,
    timezone_file: Option<&str>,
) -> Option<chrono_tz::Tz> {
    let by_name = |s: &str| -> Option<chrono_tz::Tz> {
        let s = s.trim().trim_start_matches(':');
        if s.is_empty() {
            return None;
        }
        // A path such as /usr/share/zoneinfo/Asia/Shanghai (or .../zoneinfo/posix/...).
        let name = match s.rfind("zoneinfo/") {
            Some(i) => &s[i + "zoneinfo/".len()..],
            None => s,
        };
        let name = name
            .strip_prefix("posix/")
            .or_else(|| name.strip_prefix("right/"))
            .unwrap_or(name);
        name.parse::<chrono_tz::Tz>().ok()
    };
    if let Some(tz) = tz_env {
        // A set TZ decides, as it does for the C library; only a value that names no zone
        // (e.g. POSIX rules like "CST-8") falls through.
        if let Some(z) = by_name(tz) {
            return Some(z);
        }
    }
    if let Some(z) = localtime_link.and_then(|p| by_name(&p.to_string_lossy())) {
        return Some(z);
    }
    timezone_file.and_then(by_name)
}

impl TzSpec {
    /// Parses `"local"` (or an empty string) as the system's zone, anything else as an
    /// IANA zone name (`UTC`, `Asia/Shanghai`, ...). The system's zone is resolved to its
    /// IANA name ([`TzSpec::system`]) so that it follows exactly the same DST rules as that
    /// name; only when no name can be found does it stay [`TzSpec::Local`].
    pub fn parse(name: &str) -> Result<Self, ScheduleError> {
        let t = name.trim();
        if t.is_empty() || t.eq_ignore_ascii_case("local") {
            return Ok(TzSpec::system());
        }
        t.parse::<chrono_tz::Tz>()
            .map(TzSpec::Named)
            .map_err(|_| ScheduleError::UnknownTimeZone {
                name: t.to_string(),
            })
    }

    /// The system's zone by IANA name: the `TZ` environment variable (`Asia/Shanghai`,
    /// `:Asia/Shanghai`, or a path under a `zoneinfo` directory), else the target of the
    /// `/etc/localtime` symlink (`/usr/share/zoneinfo/Asia/Shanghai`), else `/etc/timezone`
    /// (Debian); [`TzSpec::Local`] if none of them names a known zone.
    pub fn system() -> Self {
        let tz = std::env::var("TZ").ok();
        let link = std::fs::read_link("/etc/localtime").ok();
        let file = std::fs::read_to_string("/etc/timezone").ok();
        resolve_system_zone(tz.as_deref(), link.as_deref(), file.as_deref())
            .map(TzSpec::Named)
            .unwrap_or(TzSpec::Local)
    }

    /// The name to show and persist: `"local"` or the IANA name.
    pub fn name(&self) -> String {
        match self {
            TzSpec::Local => "local".to_string(),
            TzSpec::Named(tz) => tz.name().to_string(),
        }
    }

    /// Converts a UTC instant to local wall-clock time in this zone.
    pub fn to_local(&self, t: DateTime<Utc>) -> NaiveDateTime {
        t.naive_utc() + Duration::seconds(i64::from(self.offset_secs(t)))
    }

    /// Formats an instant in this zone, e.g. `2026-03-08 03:00:00 EDT (-04:00)`.
    pub fn format(&self, t: DateTime<Utc>) -> String {
        match self {
            TzSpec::Local => t
                .with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S (%:z)")
                .to_string(),
            TzSpec::Named(tz) => t
                .with_timezone(tz)
                .format("%Y-%m-%d %H:%M:%S %Z (%:z)")
                .to_string(),
        }
    }

    /// UTC offset in seconds (local minus UTC) at instant `t`.
    pub fn offset_secs(&self, t: DateTime<Utc>) -> i32 {
        let n = t.naive_utc();
        match self {
            TzSpec::Local => chrono::Local.offset_from_utc_datetime(&n).fix(),
            TzSpec::Named(tz) => tz.offset_from_utc_datetime(&n).fix(),
        }
        .local_minus_utc()
    }

    /// Maps a local wall-clock time to UTC instant(s).
    fn resolve(&self, n: NaiveDateTime) -> LocalResult<DateTime<Utc>> {
        match self {
            TzSpec::Local => chrono::Local
                .from_local_datetime(&n)
                .map(|d| d.with_timezone(&Utc)),
            TzSpec::Named(tz) => tz.from_local_datetime(&n).map(|d| d.with_timezone(&Utc)),
        }
    }

    /// For a local time `n` inside a spring-forward gap, the first instant after the gap
    /// (the transition instant, whose local time is the end of the gap).
    fn gap_end(&self, n: NaiveDateTime) -> DateTime<Utc> {
        let guess = n.and_utc();
        let mut lo = guess - Duration::hours(26); // local(lo) < n
        let mut hi = guess + Duration::hours(26); // local(hi) > n
        while hi - lo > Duration::seconds(1) {
            let mid = lo + (hi - lo) / 2;
            if self.to_local(mid) < n {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        hi.with_nanosecond(0).unwrap_or(hi)
    }
}

impl fmt::Display for TzSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl std::str::FromStr for TzSpec {
    type Err = ScheduleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TzSpec::parse(s)
    }
}

/// Bit sets of allowed values for each field, in crontab terms.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Fields {
    sec: u64,
    min: u64,
    hour: u32,
    dom: u32,
    month: u16,
    /// bit 0 = Sunday … bit 6 = Saturday.
    dow: u8,
    dom_star: bool,
    dow_star: bool,
    /// Vixie "wildcard" job (seconds, minute or hour field starts with `*`).
    wildcard: bool,
}

/// How far ahead we search for a matching date before concluding there is none.
const MAX_SEARCH_DAYS: u32 = 366 * 40;

fn bit64(set: u64, i: u32) -> bool {
    set & (1u64 << i) != 0
}

impl Fields {
    fn day_matches(&self, d: NaiveDate) -> bool {
        if !bit64(u64::from(self.month), d.month()) {
            return false;
        }
        let dom_ok = bit64(u64::from(self.dom), d.day());
        let dow_ok = bit64(u64::from(self.dow), d.weekday().num_days_from_sunday());
        if self.dom_star || self.dow_star {
            dom_ok && dow_ok
        } else {
            dom_ok || dow_ok
        }
    }

    /// First allowed time of day at or after `start`.
    fn first_time_from(&self, start: NaiveTime) -> Option<NaiveTime> {
        let (sh, sm, ss) = (start.hour(), start.minute(), start.second());
        for h in sh..24 {
            if !bit64(u64::from(self.hour), h) {
                continue;
            }
            let m0 = if h == sh { sm } else { 0 };
            for m in m0..60 {
                if !bit64(self.min, m) {
                    continue;
                }
                let s0 = if h == sh && m == sm { ss } else { 0 };
                if let Some(s) = (s0..60).find(|&s| bit64(self.sec, s)) {
                    return NaiveTime::from_hms_opt(h, m, s);
                }
            }
        }
        None
    }

    /// First matching local wall-clock time at or after `from` (whole seconds).
    fn next_naive(&self, from: NaiveDateTime) -> Option<NaiveDateTime> {
        let mut date = from.date();
        let mut start = from.time().with_nanosecond(0)?;
        for _ in 0..MAX_SEARCH_DAYS {
            if self.day_matches(date) {
                if let Some(t) = self.first_time_from(start) {
                    return Some(date.and_time(t));
                }
            }
            start = NaiveTime::MIN;
            date = date.succ_opt()?;
        }
        None
    }
}

struct FieldDef {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [(&'static str, u32)],
    expected: &'static str,
}

const MONTH_NAMES: &[(&str, u32)] = &[
    ("jan", 1),
    ("feb", 2),
    ("mar", 3),
    ("apr", 4),
    ("may", 5),
    ("jun", 6),
    ("jul", 7),
    ("aug", 8),
    ("sep", 9),
    ("oct", 10),
    ("nov", 11),
    ("dec", 12),
    ("january", 1),
    ("february", 2),
    ("march", 3),
    ("april", 4),
    ("june", 6),
    ("july", 7),
    ("august", 8),
    ("september", 9),
    ("october", 10),
    ("november", 11),
    ("december", 12),
];

const DOW_NAMES: &[(&str, u32)] = &[
    ("sun", 0),
    ("mon", 1),
    ("tue", 2),
    ("wed", 3),
    ("thu", 4),
    ("fri", 5),
    ("sat", 6),
    ("sunday", 0),
    ("monday", 1),
    ("tuesday", 2),
    ("wednesday", 3),
    ("thursday", 4),
    ("friday", 5),
    ("saturday", 6),
];

const SECOND: FieldDef = FieldDef {
    name: "second",
    min: 0,
    max: 59,
    names: &[],
    expected: "0-59, e.g. \"0\" or \"*/30\"",
};
const MINUTE: FieldDef = FieldDef {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
    expected: "0-59, e.g. \"0\", \"15,45\" or \"*/10\"",
};
const HOUR: FieldDef = FieldDef {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
    expected: "0-23, e.g. \"0,12\" or \"*/6\"",
};
const DOM: FieldDef = FieldDef {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
    expected: "1-31, e.g. \"1\", \"1,15\" or \"*\"",
};
const MONTH: FieldDef = FieldDef {
    name: "month",
    min: 1,
    max: 12,
    names: MONTH_NAMES,
    expected: "1-12 or jan-dec, e.g. \"*\" or \"1,7\"",
};
const DOW: FieldDef = FieldDef {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: DOW_NAMES,
    expected: "0-7 (0 and 7 = Sunday, 1 = Monday) or sun-sat, e.g. \"1-5\" for Monday-Friday",
};

fn parse_field(expr: &str, def: &FieldDef, text: &str) -> Result<u64, ScheduleError> {
    let bad = |reason: String| ScheduleError::BadField {
        expr: expr.to_string(),
        field: def.name,
        value: text.to_string(),
        reason,
        expected: def.expected,
    };
    if text.contains('#') || text.contains('?') {
        return Err(bad(
            "'#' and '?' are Quartz-cron extensions that crontab does not support; \
             use '*' or a list of values"
                .to_string(),
        ));
    }
    let value = |s: &str| -> Result<u32, ScheduleError> {
        if let Ok(n) = s.parse::<u32>() {
            if n < def.min || n > def.max {
                return Err(bad(format!("{n} is out of range {}-{}", def.min, def.max)));
            }
            return Ok(n);
        }
        let lower = s.to_ascii_lowercase();
        if let Some((_, v)) = def.names.iter().find(|(n, _)| *n == lower) {
            return Ok(*v);
        }
        let quartz = {
            let u = s.to_ascii_uppercase();
            u == "L"
                || u == "LW"
                || ((u.ends_with('L') || u.ends_with('W'))
                    && u.len() > 1
                    && u[..u.len() - 1].chars().all(|c| c.is_ascii_digit()))
        };
        if quartz {
            Err(bad(format!(
                "{s:?}: 'L' (last) and 'W' (weekday) are Quartz-cron extensions that crontab \
                 does not support"
            )))
        } else if s.is_empty() {
            Err(bad("empty value (stray ',', '-' or '/'?)".to_string()))
        } else if def.names.is_empty() {
            Err(bad(format!("{s:?} is not a number")))
        } else {
            Err(bad(format!("{s:?} is not a number or a known name")))
        }
    };
    let mut set = 0u64;
    for item in text.split(',') {
        if item.is_empty() {
            return Err(bad("empty list item (stray ',')".to_string()));
        }
        let (base, step) = match item.split_once('/') {
            Some((b, s)) => {
                let step: u32 = s
                    .parse()
                    .map_err(|_| bad(format!("step {s:?} after '/' is not a number")))?;
                if step == 0 || step > def.max {
                    return Err(bad(format!(
                        "step {step} must be between 1 and {}",
                        def.max
                    )));
                }
                (b, Some(step))
            }
            None => (item, None),
        };
        let (lo, hi) = if base == "*" {
            (def.min, def.max)
        } else if let Some((a, b)) = base.split_once('-') {
            let (a, b) = (value(a)?, value(b)?);
            if a > b {
                return Err(bad(format!(
                    "range {a}-{b} goes backwards; crontab ranges do not wrap around, \
                     split it (e.g. \"{a}-{},{}-{b}\")",
                    def.max, def.min
                )));
            }
            (a, b)
        } else {
            let a = value(base)?;
            // `N/S` means `N-max/S` (cronie extension).
            (a, if step.is_some() { def.max } else { a })
        };
        let step = step.unwrap_or(1);
        let mut v = lo;
        while v <= hi {
            set |= 1u64 << v;
            v += step;
        }
    }
    Ok(set)
}

/// A parsed schedule bound to a time zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    expr: String,
    tz: TzSpec,
    fields: Fields,
}

impl Schedule {
    /// Parses a crontab expression (5 fields, 6 with leading seconds, or `@name`) to be
    /// evaluated in `tz`.
    ///
    /// ```
    /// use mnbackup_scheduler::schedule::{Schedule, TzSpec};
    /// let s = Schedule::parse("0 0,12 * * *", TzSpec::parse("Asia/Shanghai").unwrap()).unwrap();
    /// assert_eq!(s.expr(), "0 0,12 * * *");
    /// ```
    pub fn parse(expr: &str, tz: TzSpec) -> Result<Self, ScheduleError> {
        let trimmed = expr.trim();
        let expanded = if let Some(name) = trimmed.strip_prefix('@') {
            match name.to_ascii_lowercase().as_str() {
                "yearly" | "annually" => "0 0 1 1 *",
                "monthly" => "0 0 1 * *",
                "weekly" => "0 0 * * 0",
                "daily" | "midnight" => "0 0 * * *",
                "hourly" => "0 * * * *",
                "reboot" => {
                    return Err(ScheduleError::UnknownName {
                        expr: trimmed.to_string(),
                        hint: " (@reboot is not supported: the daemon already catches up \
                               missed runs when it starts)",
                    })
                }
                _ => {
                    return Err(ScheduleError::UnknownName {
                        expr: trimmed.to_string(),
                        hint: "",
                    })
                }
            }
        } else {
            trimmed
        };
        let parts: Vec<&str> = expanded.split_whitespace().collect();
        let (sec, rest) = match parts.len() {
            5 => ("0", &parts[..]),
            6 => (parts[0], &parts[1..]),
            n => {
                return Err(ScheduleError::FieldCount {
                    expr: trimmed.to_string(),
                    found: n,
                })
            }
        };
        let (min, hour, dom, month, dow) = (rest[0], rest[1], rest[2], rest[3], rest[4]);
        let mut dow_bits = parse_field(trimmed, &DOW, dow)?;
        if dow_bits & (1 << 7) != 0 {
            dow_bits = (dow_bits & !(1 << 7)) | 1; // 7 = Sunday = 0
        }
        let fields = Fields {
            sec: parse_field(trimmed, &SECOND, sec)?,
            min: parse_field(trimmed, &MINUTE, min)?,
            hour: parse_field(trimmed, &HOUR, hour)? as u32,
            dom: parse_field(trimmed, &DOM, dom)? as u32,
            month: parse_field(trimmed, &MONTH, month)? as u16,
            dow: dow_bits as u8,
            dom_star: dom.starts_with('*'),
            dow_star: dow.starts_with('*'),
            wildcard: sec.starts_with('*') || min.starts_with('*') || hour.starts_with('*'),
        };
        let probe = NaiveDate::from_ymd_opt(2024, 1, 1)
            .unwrap_or_default()
            .and_time(NaiveTime::MIN);
        if fields.next_naive(probe).is_none() {
            return Err(ScheduleError::NeverFires {
                expr: trimmed.to_string(),
            });
        }
        Ok(Schedule {
            expr: trimmed.to_string(),
            tz,
            fields,
        })
    }

    /// The expression as given (trimmed), e.g. `0 0,12 * * *` or `@daily`.
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The time zone the schedule is evaluated in.
    pub fn tz(&self) -> &TzSpec {
        &self.tz
    }

    /// True for a Vixie "fixed-time" job (seconds, minute and hour fields are not `*`),
    /// which gets the DST protections described in the module docs.
    pub fn is_fixed_time(&self) -> bool {
        !self.fields.wildcard
    }

    /// UTC instants a local wall-clock slot maps to under the DST rules.
    fn instants(&self, n: NaiveDateTime) -> Vec<DateTime<Utc>> {
        match self.tz.resolve(n) {
            LocalResult::Single(t) => vec![t],
            LocalResult::Ambiguous(a, b) => {
                if self.fields.wildcard {
                    vec![a, b]
                } else {
                    vec![a]
                }
            }
            LocalResult::None => {
                if self.fields.wildcard {
                    vec![]
                } else {
                    vec![self.tz.gap_end(n)]
                }
            }
        }
    }

    /// The first fire time strictly after `after`, or `None` if there is none within
    /// 40 years.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let off_now = self.tz.offset_secs(after);
        let off_ahead = self.tz.offset_secs(after + Duration::hours(26));
        // Local time runs backwards across a fall-back transition; look back far enough to
        // see slots in the repeated hour.
        let lookback = i64::from((off_now - off_ahead).max(0));
        let mut cursor = self.tz.to_local(after) - Duration::seconds(lookback);
        let mut best: Option<DateTime<Utc>> = None;
        let mut guard = 0u32;
        loop {
            guard += 1;
            let Some(n) = self.fields.next_naive(cursor) else {
                return best;
            };
            if guard > 1_000_000 {
                return best; // pathological zone data; never seen in practice
            }
            if let Some(b) = best {
                // instant(n) >= n - max_offset, so nothing later can beat `b`.
                let max_off = off_now
                    .max(off_ahead)
                    .max(self.tz.offset_secs(b))
                    .max(self.tz.offset_secs(b + Duration::hours(26)));
                if n - Duration::seconds(i64::from(max_off)) >= b.naive_utc() {
                    return best;
                }
            }
            for t in self.instants(n) {
                if t > after && best.is_none_or(|b| t < b) {
                    best = Some(t);
                }
            }
            cursor = n + Duration::seconds(1);
        }
    }

    /// The next `n` fire times strictly after `from`.
    pub fn upcoming(&self, from: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        let mut t = from;
        while out.len() < n {
            match self.next_after(t) {
                Some(next) => {
                    out.push(next);
                    t = next;
                }
                None => break,
            }
        }
        out
    }

    /// Counts fire times in `(after, until]` (stopping at `cap`) and returns the count and
    /// the latest one seen.
    pub fn slots_between(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
        cap: u64,
    ) -> (u64, Option<DateTime<Utc>>) {
        let mut count = 0;
        let mut last = None;
        let mut t = after;
        while count < cap {
            match self.next_after(t) {
                Some(next) if next <= until => {
                    count += 1;
                    last = Some(next);
                    t = next;
                }
                _ => break,
            }
        }
        (count, last)
    }

    /// The longest gap between consecutive fire times among the next `samples` fires
    /// after `from` (at least 2 are needed). Used for the default health max age.
    pub fn max_interval(&self, from: DateTime<Utc>, samples: usize) -> Option<Duration> {
        let times = self.upcoming(from, samples.max(2));
        times.windows(2).map(|w| w[1] - w[0]).max()
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.expr, self.tz)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tz(name: &str) -> TzSpec {
        TzSpec::parse(name).unwrap()
    }
    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }
    fn sched(expr: &str, zone: &str) -> Schedule {
        Schedule::parse(expr, tz(zone)).unwrap()
    }
    fn next_n(expr: &str, zone: &str, from: &str, n: usize) -> Vec<String> {
        sched(expr, zone)
            .upcoming(utc(from), n)
            .into_iter()
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .collect()
    }

    #[test]
    fn product_default_twice_daily() {
        assert_eq!(
            next_n("0 0,12 * * *", "UTC", "2026-01-01T05:00:00Z", 3),
            [
                "2026-01-01T12:00:00Z",
                "2026-01-02T00:00:00Z",
                "2026-01-02T12:00:00Z"
            ]
        );
        // Asia/Shanghai is UTC+8, no DST.
        assert_eq!(
            next_n("0 0,12 * * *", "Asia/Shanghai", "2026-01-01T00:00:00Z", 2),
            ["2026-01-01T04:00:00Z", "2026-01-01T16:00:00Z"]
        );
    }

    #[test]
    fn strictly_after() {
        assert_eq!(
            next_n("0 0,12 * * *", "UTC", "2026-01-01T12:00:00Z", 1),
            ["2026-01-02T00:00:00Z"]
        );
        assert_eq!(
            next_n("0 0,12 * * *", "UTC", "2026-01-01T11:59:59.999Z", 1),
            ["2026-01-01T12:00:00Z"]
        );
    }

    #[test]
    fn table_of_expressions() {
        let cases: &[(&str, &str, &[&str])] = &[
            ("@daily", "2026-05-05T10:00:00Z", &["2026-05-06T00:00:00Z"]),
            (
                "@midnight",
                "2026-05-05T10:00:00Z",
                &["2026-05-06T00:00:00Z"],
            ),
            (
                "@hourly",
                "2026-05-05T10:00:00Z",
                &["2026-05-05T11:00:00Z", "2026-05-05T12:00:00Z"],
            ),
            // 2026-05-05 is a Tuesday; next Sunday is 05-10.
            ("@weekly", "2026-05-05T10:00:00Z", &["2026-05-10T00:00:00Z"]),
            (
                "@monthly",
                "2026-05-05T10:00:00Z",
                &["2026-06-01T00:00:00Z"],
            ),
            ("@yearly", "2026-05-05T10:00:00Z", &["2027-01-01T00:00:00Z"]),
            (
                "@annually",
                "2026-05-05T10:00:00Z",
                &["2027-01-01T00:00:00Z"],
            ),
            // Month ends: only months with 31 days.
            (
                "0 0 31 * *",
                "2026-01-31T00:00:01Z",
                &[
                    "2026-03-31T00:00:00Z",
                    "2026-05-31T00:00:00Z",
                    "2026-07-31T00:00:00Z",
                ],
            ),
            // Leap day.
            (
                "0 0 29 2 *",
                "2026-01-01T00:00:00Z",
                &["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"],
            ),
            // 6 fields with seconds.
            (
                "*/20 * * * * *",
                "2026-01-01T00:00:05Z",
                &[
                    "2026-01-01T00:00:20Z",
                    "2026-01-01T00:00:40Z",
                    "2026-01-01T00:01:00Z",
                ],
            ),
            (
                "15 30 2 * * *",
                "2026-01-01T00:00:00Z",
                &["2026-01-01T02:30:15Z"],
            ),
            // Monday-Friday (crontab numbering: 1 = Monday). 2026-05-08 is a Friday.
            (
                "0 9 * * 1-5",
                "2026-05-08T10:00:00Z",
                &["2026-05-11T09:00:00Z", "2026-05-12T09:00:00Z"],
            ),
            // 0 and 7 are both Sunday.
            (
                "0 9 * * 7",
                "2026-05-08T10:00:00Z",
                &["2026-05-10T09:00:00Z"],
            ),
            (
                "0 9 * * 0",
                "2026-05-08T10:00:00Z",
                &["2026-05-10T09:00:00Z"],
            ),
            (
                "0 9 * * sat,sun",
                "2026-05-08T10:00:00Z",
                &["2026-05-09T09:00:00Z", "2026-05-10T09:00:00Z"],
            ),
            (
                "0 9 * * 6-7",
                "2026-05-08T10:00:00Z",
                &["2026-05-09T09:00:00Z", "2026-05-10T09:00:00Z"],
            ),
            // dom and dow both restricted: OR. 1st of June 2026 is a Monday; Fridays too.
            (
                "0 0 1 * 5",
                "2026-05-27T00:00:00Z",
                &[
                    "2026-05-29T00:00:00Z",
                    "2026-06-01T00:00:00Z",
                    "2026-06-05T00:00:00Z",
                ],
            ),
            // dow starts with '*': AND (only 13th that is ... every 13th, dow all).
            (
                "0 0 13 * */1",
                "2026-05-01T00:00:00Z",
                &["2026-05-13T00:00:00Z"],
            ),
            // Names and steps.
            (
                "0 0 1 jan,JUL *",
                "2026-02-01T00:00:00Z",
                &["2026-07-01T00:00:00Z"],
            ),
            (
                "0 */6 * * *",
                "2026-02-01T01:00:00Z",
                &["2026-02-01T06:00:00Z", "2026-02-01T12:00:00Z"],
            ),
            (
                "0 1-10/4 * * *",
                "2026-02-01T00:00:00Z",
                &[
                    "2026-02-01T01:00:00Z",
                    "2026-02-01T05:00:00Z",
                    "2026-02-01T09:00:00Z",
                    "2026-02-02T01:00:00Z",
                ],
            ),
            (
                "0 20/2 * * *",
                "2026-02-01T00:00:00Z",
                &[
                    "2026-02-01T20:00:00Z",
                    "2026-02-01T22:00:00Z",
                    "2026-02-02T20:00:00Z",
                ],
            ),
        ];
        for (expr, from, want) in cases {
            assert_eq!(&next_n(expr, "UTC", from, want.len()), want, "expr {expr}");
        }
    }

    #[test]
    fn new_york_spring_gap_fixed_job_fires_once_at_0300() {
        // 2026-03-08 02:00 EST -> 03:00 EDT.
        let s = sched("30 2 * * *", "America/New_York");
        let got = s.upcoming(utc("2026-03-07T00:00:00Z"), 3);
        assert_eq!(
            got,
            [
                utc("2026-03-07T07:30:00Z"), // 02:30 EST
                utc("2026-03-08T07:00:00Z"), // 03:00 EDT (first instant after the gap)
                utc("2026-03-09T06:30:00Z"), // 02:30 EDT
            ]
        );
        assert_eq!(s.tz().format(got[1]), "2026-03-08 03:00:00 EDT (-04:00)");
        // Several fixed slots in the gap collapse into one run.
        let s = sched("0,30 2 * * *", "America/New_York");
        let got = s.upcoming(utc("2026-03-08T06:00:00Z"), 2);
        assert_eq!(
            got,
            [utc("2026-03-08T07:00:00Z"), utc("2026-03-09T06:00:00Z")]
        );
    }

    #[test]
    fn new_york_fall_back_fixed_job_fires_once() {
        // 2026-11-01 02:00 EDT -> 01:00 EST; 01:30 happens twice.
        let s = sched("30 1 * * *", "America/New_York");
        let got = s.upcoming(utc("2026-10-31T12:00:00Z"), 3);
        assert_eq!(
            got,
            [
                utc("2026-11-01T05:30:00Z"), // 01:30 EDT, first occurrence only
                utc("2026-11-02T06:30:00Z"), // 01:30 EST next day
                utc("2026-11-03T06:30:00Z"),
            ]
        );
        // Asking from inside the repeated hour does not fire again.
        assert_eq!(
            s.next_after(utc("2026-11-01T06:10:00Z")),
            Some(utc("2026-11-02T06:30:00Z"))
        );
    }

    #[test]
    fn wildcard_jobs_follow_real_time_across_dst() {
        // Hourly in the repeated hour fires at 01:00 EDT and 01:00 EST.
        let s = sched("0 * * * *", "America/New_York");
        let got = s.upcoming(utc("2026-11-01T04:30:00Z"), 4);
        assert_eq!(
            got,
            [
                utc("2026-11-01T05:00:00Z"),
                utc("2026-11-01T06:00:00Z"),
                utc("2026-11-01T07:00:00Z"),
                utc("2026-11-01T08:00:00Z"),
            ]
        );
        // Spring gap: 02:00 does not exist, hourly goes 01:00 EST -> 03:00 EDT (one hour).
        let got = s.upcoming(utc("2026-03-08T05:30:00Z"), 2);
        assert_eq!(
            got,
            [utc("2026-03-08T06:00:00Z"), utc("2026-03-08T07:00:00Z")]
        );
    }

    #[test]
    fn berlin_dst() {
        // Spring: 2026-03-29 02:00 CET -> 03:00 CEST.
        let s = sched("30 2 * * *", "Europe/Berlin");
        assert_eq!(
            s.upcoming(utc("2026-03-28T12:00:00Z"), 3),
            [
                utc("2026-03-29T01:00:00Z"), // 03:00 CEST
                utc("2026-03-30T00:30:00Z"),
                utc("2026-03-31T00:30:00Z"),
            ]
        );
        // Autumn: 2026-10-25 03:00 CEST -> 02:00 CET; 02:30 repeats.
        assert_eq!(
            s.upcoming(utc("2026-10-24T12:00:00Z"), 2),
            [utc("2026-10-25T00:30:00Z"), utc("2026-10-26T01:30:00Z")]
        );
        // Product default is unaffected by DST.
        let d = sched("0 0,12 * * *", "Europe/Berlin");
        assert_eq!(
            d.upcoming(utc("2026-03-28T12:00:00Z"), 4),
            [
                utc("2026-03-28T23:00:00Z"),
                utc("2026-03-29T10:00:00Z"),
                utc("2026-03-29T22:00:00Z"),
                utc("2026-03-30T10:00:00Z"),
            ]
        );
    }

    #[test]
    fn whole_year_invariants_in_dst_zones() {
        for zone in ["America/New_York", "Europe/Berlin", "Australia/Lord_Howe"] {
            let z = tz(zone);
            let from = utc("2025-12-31T12:00:00Z");
            let end = utc("2027-01-01T12:00:00Z");
            // Fixed-time daily job: exactly one run per local calendar day of 2026.
            for expr in ["30 2 * * *", "0 0,12 * * *", "15 1 * * *"] {
                let s = sched(expr, zone);
                let per_day = if expr.contains(',') { 2 } else { 1 };
                let times: Vec<_> = s
                    .upcoming(from, 800)
                    .into_iter()
                    .filter(|t| z.to_local(*t).year() == 2026 && *t < end)
                    .collect();
                assert_eq!(times.len(), 365 * per_day, "{expr} in {zone}");
                assert!(times.windows(2).all(|w| w[0] < w[1]));
                let mut days: Vec<_> = times.iter().map(|t| z.to_local(*t).date()).collect();
                days.dedup();
                assert_eq!(days.len(), 365, "{expr} in {zone}");
            }
            // Wildcard hourly job follows real time: one run per real hour.
            let s = sched("0 * * * *", zone);
            let n = s.slots_between(
                utc("2026-01-01T00:00:00Z"),
                utc("2027-01-01T00:00:00Z"),
                100_000,
            );
            if zone == "Australia/Lord_Howe" {
                // 30-minute DST shift: real hours where local minute 0 exists.
                assert!(n.0 >= 8759 && n.0 <= 8761, "{zone}: {}", n.0);
            } else {
                assert_eq!(n.0, 8760, "{zone}");
            }
        }
    }

    #[test]
    fn errors_name_the_field() {
        let e = |expr: &str| {
            Schedule::parse(expr, TzSpec::Local)
                .unwrap_err()
                .to_string()
        };
        assert!(e("0 0 * *").contains("4 field(s)"), "{}", e("0 0 * *"));
        assert!(e("60 0 * * *").contains("minute field \"60\""));
        assert!(e("60 0 * * *").contains("out of range 0-59"));
        assert!(e("0 24 * * *").contains("hour field"));
        assert!(e("0 0 0 * *").contains("day-of-month field"));
        assert!(e("0 0 * 13 *").contains("month field"));
        assert!(e("0 0 * * 8").contains("day-of-week field"));
        assert!(e("0 0 * * 5-1").contains("goes backwards"));
        assert!(e("0 0 * * mon#2").contains("Quartz"));
        assert!(e("0 0 L * *").contains("Quartz"));
        assert!(e("0 0 ? * *").contains("Quartz"));
        assert!(e("0 0 * * funday").contains("known name"));
        assert!(e("0 */0 * * *").contains("step 0"));
        assert!(e("0 0 1,,2 * *").contains("empty list item"));
        assert!(e("0 0 0 1 1 * 2026").contains("7 field(s)"));
        assert!(e("@reboot").contains("@reboot is not supported"));
        assert!(e("@fortnightly").contains("unknown or unsupported name"));
        assert!(e("0 0 31 2 *").contains("never fires"));
        assert!(e("0 0 30 feb *").contains("never fires"));
        let tz_err = TzSpec::parse("Mars/Olympus").unwrap_err().to_string();
        assert!(tz_err.contains("IANA"), "{tz_err}");
        // Names containing W/L are fine.
        Schedule::parse("0 0 * * wed,sat", TzSpec::Local).unwrap();
        Schedule::parse("0 0 * jul *", TzSpec::Local).unwrap();
    }

    #[test]
    fn local_tz_parses() {
        assert_eq!(TzSpec::parse("local").unwrap(), TzSpec::system());
        assert_eq!(TzSpec::parse("").unwrap(), TzSpec::system());
        let s = Schedule::parse("0 0,12 * * *", TzSpec::Local).unwrap();
        assert!(s.next_after(Utc::now()).is_some());
        assert!(s.is_fixed_time());
        assert!(!sched("*/5 * * * *", "UTC").is_fixed_time());
    }

    /// Issue 14 item 5: "local" resolves to the system zone's IANA name.
    #[test]
    fn system_zone_is_resolved_to_its_name() {
        use std::path::Path;
        let ny: chrono_tz::Tz = "America/New_York".parse().unwrap();
        let sh: chrono_tz::Tz = "Asia/Shanghai".parse().unwrap();
        let link = Path::new("/usr/share/zoneinfo/America/New_York");
        assert_eq!(resolve_system_zone(None, Some(link), None), Some(ny));
        let rel = Path::new("../usr/share/zoneinfo/posix/America/New_York");
        assert_eq!(resolve_system_zone(None, Some(rel), None), Some(ny));
        // TZ wins, with or without the leading ':'; a POSIX rule falls through.
        assert_eq!(
            resolve_system_zone(Some(":Asia/Shanghai"), Some(link), None),
            Some(sh)
        );
        assert_eq!(
            resolve_system_zone(Some("Asia/Shanghai"), None, None),
            Some(sh)
        );
        assert_eq!(
            resolve_system_zone(Some("CST-8"), Some(link), None),
            Some(ny)
        );
        assert_eq!(
            resolve_system_zone(None, None, Some("Asia/Shanghai\n")),
            Some(sh)
        );
        assert_eq!(
            resolve_system_zone(None, Some(Path::new("/etc/foo")), None),
            None
        );
    }

    #[test]
    fn max_interval_and_slots_between() {
        let s = sched("0 0,12 * * *", "UTC");
        assert_eq!(
            s.max_interval(utc("2026-01-01T00:00:00Z"), 2),
            Some(Duration::hours(12))
        );
        let wk = sched("0 0 * * 1-5", "UTC");
        assert_eq!(
            wk.max_interval(utc("2026-01-01T00:00:00Z"), 16),
            Some(Duration::days(3))
        );
        let (n, last) = s.slots_between(
            utc("2026-01-01T00:00:00Z"),
            utc("2026-01-03T00:00:00Z"),
            100,
        );
        assert_eq!(n, 4);
        assert_eq!(last, Some(utc("2026-01-03T00:00:00Z")));
    }

    /// Cross-check against the `cron` crate in UTC (no DST) with day-of-week translated
    /// to its 1 = Sunday numbering, on expressions where it agrees with crontab (AND).
    #[test]
    fn agrees_with_cron_crate_in_utc() {
        use std::str::FromStr;
        let cases = [
            ("0 0,12 * * *", "0 0 0,12 * * *"),
            ("*/7 3-5 * * *", "0 */7 3-5 * * *"),
            ("0 0 * * 1-5", "0 0 0 * * 2-6"),
            ("0 6 * * 0", "0 0 6 * * 1"),
            ("0 0 31 * *", "0 0 0 31 * *"),
            ("0 0 29 2 *", "0 0 0 29 2 *"),
        ];
        let from = utc("2026-01-01T00:00:00Z");
        for (ours, theirs) in cases {
            let a = sched(ours, "UTC").upcoming(from, 12);
            let b: Vec<_> = cron::Schedule::from_str(theirs)
                .unwrap()
                .after(&from)
                .take(12)
                .collect();
            assert_eq!(a, b, "{ours}");
        }
    }
}
