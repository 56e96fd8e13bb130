//! `mnbackup schedule import-crontab`: take over the operator's existing cron backups.
//!
//! Recognised lines (comments and already-disabled lines are ignored):
//!
//! * ZStack's own dump, e.g. `30 0,12 * * * zstack-ctl dump_mysql --keep-amount 14`
//!   (installed by the ZStack installer; `--keep-amount N` becomes a `last: N` hint).
//! * Any `rsync` whose source mentions the `mysql-backup` directory, e.g.
//!   `0 0,12 * * * rsync -a /var/lib/zstack/mysql-backup/* /mysql_bk/`; its destination
//!   becomes the proposed pool path.
//!
//! The proposed schedules keep the operator's times: one per distinct `dump_mysql` line if
//! there is one (that is when the database is dumped; the rsync lines copy its output), else
//! one per distinct rsync line. Lines are read as cron reads them: an unescaped `%` ends the
//! command (the rest is its standard input), `\%` is a literal `%`, an unquoted `#` starts a
//! shell comment, `CRON_TZ=` applies to the lines after it, and `TZ=` only sets the commands'
//! environment (cron does not schedule by it). `@reboot` lines are not proposed as schedules.
//!
//! Anything that makes the take-over unsafe is listed in [`Proposal::ambiguities`] (a line
//! that runs more than the backup, a destination that the shell computes at run time, several
//! destinations, several time zones); the caller must refuse to apply such a proposal.
//!
//! [`Proposal::apply`] comments the matched lines out with a marker, keeping the rest of
//! the crontab byte for byte. The commented-out `dump_mysql` line still contains the
//! text `zstack-ctl dump_mysql`, so the ZStack installer's "add it if missing" check does
//! not re-add it on upgrade. Reading `crontab -l`, saving a backup copy
//! ([`backup_file_name`]) and installing the result are left to the caller.

use chrono::{DateTime, NaiveDate, Utc};

use crate::schedule::{Schedule, TzSpec};

/// Prefix of the comment put in front of disabled lines.
pub const DISABLED_MARKER: &str = "# disabled by mnbackup schedule import-crontab";

/// What a matched line does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MatchKind {
    /// `rsync ... <mysql-backup dir> ... <dest>`.
    RsyncMysqlBackup {
        /// Source arguments.
        sources: Vec<String>,
        /// Destination argument as written.
        dest: String,
    },
    /// `zstack-ctl dump_mysql ...`.
    ZstackDumpMysql {
        /// `--keep-amount N`, if given.
        keep_amount: Option<u32>,
        /// `--host user@host`, if the dump is also copied to another host.
        remote_host: Option<String>,
    },
}

/// A crontab line that mnbackup would replace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatchedLine {
    /// 1-based line number.
    pub line_no: usize,
    /// The line's schedule (5 fields or `@name`).
    pub schedule: String,
    /// The full line as written.
    pub text: String,
    /// What it does.
    pub kind: MatchKind,
    /// The `CRON_TZ=` in effect for this line, if any.
    pub tz: Option<String>,
}

/// One proposed mnbackup schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProposedJob {
    /// Crontab expression.
    pub schedule: String,
    /// `CRON_TZ` of its line(s), if any.
    pub tz: Option<String>,
    /// The crontab lines (1-based) it replaces.
    pub lines: Vec<usize>,
}

/// The result of analysing a crontab.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    /// Proposed mnbackup schedule (crontab syntax), if a backup line was found.
    pub schedule: Option<String>,
    /// Time zone from a `CRON_TZ=` or `TZ=` line, if any (else the system zone applies).
    pub tz: Option<String>,
    /// Proposed pool path (local rsync destination, trailing `/` removed).
    pub pool: Option<String>,
    /// `--keep-amount` of the `dump_mysql` line, a hint for `KeepPolicy::last`.
    pub keep_last: Option<u32>,
    /// Lines that would be disabled.
    pub matches: Vec<MatchedLine>,
    /// Things the operator should double-check.
    pub warnings: Vec<String>,
    /// One proposed schedule per distinct backup line (see the module docs).
    pub jobs: Vec<ProposedJob>,
    /// Reasons the proposal must not be applied automatically; empty when it is safe.
    pub ambiguities: Vec<String>,
    original: String,
}

impl Proposal {
    /// True if at least one backup line was recognised.
    pub fn found(&self) -> bool {
        !self.matches.is_empty()
    }

    /// The crontab with every matched line commented out as
    /// `# disabled by mnbackup schedule import-crontab <today>: <original line>`.
    /// Everything else (including line endings) is unchanged.
    pub fn apply(&self, today: NaiveDate) -> String {
        let mut out = String::with_capacity(self.original.len() + 128);
        for (i, line) in self.original.split_inclusive('\n').enumerate() {
            if self.matches.iter().any(|m| m.line_no == i + 1) {
                out.push_str(&format!("{DISABLED_MARKER} {}: ", today.format("%Y-%m-%d")));
            }
            out.push_str(line);
        }
        out
    }

    /// A human-readable summary for the terminal.
    pub fn summary(&self) -> String {
        if !self.found() {
            return "No rsync of the mysql-backup directory and no `zstack-ctl dump_mysql` \
                    line found in this crontab; nothing to import. Configure the schedule \
                    and pool by hand (default schedule \"0 0,12 * * *\")."
                .to_string();
        }
        let mut s = String::from("Found existing backup lines:\n");
        for m in &self.matches {
            s.push_str(&format!("  line {}: {}\n", m.line_no, m.text.trim_end()));
        }
        s.push_str(&format!(
            "Proposed schedule: {}{}\n",
            self.schedule
                .as_deref()
                .unwrap_or("(none — set one by hand)"),
            self.tz
                .as_ref()
                .map(|t| format!(" (time zone {t})"))
                .unwrap_or_default()
        ));
        s.push_str(&format!(
            "Proposed pool:     {}\n",
            self.pool.as_deref().unwrap_or("(none found — pass --pool)")
        ));
        if let Some(k) = self.keep_last {
            s.push_str(&format!(
                "Retention hint:    dump_mysql kept {k} dumps (keep last = {k})\n"
            ));
        }
        if self.jobs.len() > 1 {
            s.push_str("Proposed schedules:\n");
            for j in &self.jobs {
                s.push_str(&format!(
                    "  {}{} (replaces line {})\n",
                    j.schedule,
                    j.tz.as_ref()
                        .map(|t| format!(" (time zone {t})"))
                        .unwrap_or_default(),
                    j.lines
                        .iter()
                        .map(|l| l.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        for w in &self.warnings {
            s.push_str(&format!("WARNING: {w}\n"));
        }
        for a in &self.ambiguities {
            s.push_str(&format!("NOT SAFE TO APPLY: {a}\n"));
        }
        s
    }

    /// The change [`Proposal::apply`] makes, as unified-diff style lines (`-old`, `+new`) with
    /// their line numbers.
    pub fn diff(&self, today: NaiveDate) -> String {
        let new = self.apply(today);
        let mut out = String::new();
        for (i, (a, b)) in self.original.lines().zip(new.lines()).enumerate() {
            if a != b {
                out.push_str(&format!("@@ line {} @@\n-{a}\n+{b}\n", i + 1));
            }
        }
        out
    }
}

/// A name for the backup copy of the old crontab, e.g.
/// `crontab.before-mnbackup.20260308T120000Z`.
pub fn backup_file_name(now: DateTime<Utc>) -> String {
    format!("crontab.before-mnbackup.{}", now.format("%Y%m%dT%H%M%SZ"))
}

#[derive(Debug, PartialEq)]
enum Tok {
    Word(String),
    Op(String),
}

/// Minimal shell tokenizer: words (with quotes and backslashes), and control /
/// redirection operators.
fn tokenize(s: &str) -> Vec<Tok> {
    let mut toks = vec![];
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars().peekable();
    let flush = |cur: &mut String, in_word: &mut bool, toks: &mut Vec<Tok>| {
        if *in_word {
            toks.push(Tok::Word(std::mem::take(cur)));
            *in_word = false;
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    cur.push(c);
                }
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => {
                            if let Some(n) = chars.next() {
                                cur.push(n);
                            }
                        }
                        _ => cur.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() => flush(&mut cur, &mut in_word, &mut toks),
            // An unquoted `#` at the start of a word starts a shell comment.
            '#' if !in_word => break,
            ';' | '|' | '&' | '>' | '<' => {
                // `2>` / `2>>`: the digits belong to the operator.
                let mut op = String::new();
                if c == '>' && in_word && cur.chars().all(|d| d.is_ascii_digit()) {
                    op = std::mem::take(&mut cur);
                    in_word = false;
                }
                flush(&mut cur, &mut in_word, &mut toks);
                op.push(c);
                if let Some(&n) = chars.peek() {
                    if (n == c && c != ';') || (c == '>' && n == '&') || (c == '&' && n == '>') {
                        op.push(n);
                        chars.next();
                    }
                }
                toks.push(Tok::Op(op));
            }
            _ => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    flush(&mut cur, &mut in_word, &mut toks);
    toks
}

/// Splits a command into simple commands (word lists), dropping redirections.
fn simple_commands(cmd: &str) -> Vec<Vec<String>> {
    let mut out = vec![];
    let mut cur = vec![];
    let mut skip_next_word = false;
    for t in tokenize(cmd) {
        match t {
            Tok::Word(w) => {
                if std::mem::take(&mut skip_next_word) {
                    continue;
                }
                cur.push(w);
            }
            Tok::Op(op) if op.contains('>') || op.contains('<') => {
                // The next word is the target file (or the fd number after `>&`).
                skip_next_word = true;
            }
            Tok::Op(_) => {
                skip_next_word = false;
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// rsync options that take their value as the next argument.
const RSYNC_OPTS_WITH_ARG: &[&str] = &[
    "-e",
    "--rsh",
    "--exclude",
    "--include",
    "--exclude-from",
    "--include-from",
    "--filter",
    "-f",
    "--files-from",
    "--password-file",
    "--log-file",
    "--bwlimit",
    "--port",
    "--timeout",
    "--contimeout",
    "--backup-dir",
    "--suffix",
    "--chmod",
    "--chown",
    "-T",
    "--temp-dir",
    "--compare-dest",
    "--copy-dest",
    "--link-dest",
    "--partial-dir",
    "--max-size",
    "--min-size",
    "--rsync-path",
];

fn basename(w: &str) -> &str {
    w.rsplit('/').next().unwrap_or(w)
}

fn analyse_command(cmd: &str) -> Option<MatchKind> {
    for words in simple_commands(cmd) {
        let Some(pos) = words
            .iter()
            .position(|w| matches!(basename(w), "rsync" | "zstack-ctl"))
        else {
            continue;
        };
        let args = &words[pos + 1..];
        if basename(&words[pos]) == "zstack-ctl" {
            if args.first().map(String::as_str) != Some("dump_mysql") {
                continue;
            }
            let mut keep_amount = None;
            let mut remote_host = None;
            let mut it = args.iter().skip(1);
            while let Some(a) = it.next() {
                let (key, inline) = match a.split_once('=') {
                    Some((k, v)) => (k, Some(v.to_string())),
                    None => (a.as_str(), None),
                };
                let mut value = || inline.clone().or_else(|| it.next().cloned());
                match key {
                    "--keep-amount" => keep_amount = value().and_then(|v| v.parse().ok()),
                    "--host" => remote_host = value(),
                    _ => {}
                }
            }
            return Some(MatchKind::ZstackDumpMysql {
                keep_amount,
                remote_host,
            });
        }
        let mut positional = vec![];
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if a == "--" {
                positional.extend(it.by_ref().cloned());
                break;
            }
            if a.starts_with('-') && a.len() > 1 {
                if !a.contains('=') && RSYNC_OPTS_WITH_ARG.contains(&a.as_str()) {
                    it.next();
                }
                continue;
            }
            positional.push(a.clone());
        }
        if positional.len() < 2 {
            continue;
        }
        let dest = positional.pop().unwrap_or_default();
        if positional.iter().any(|s| s.contains("mysql-backup")) {
            return Some(MatchKind::RsyncMysqlBackup {
                sources: positional,
                dest,
            });
        }
    }
    None
}

fn is_env_line(line: &str) -> Option<(String, String)> {
    let (name, value) = line.split_once('=')?;
    let name = name.trim();
    let mut chars = name.chars();
    let first = chars.next()?;
    if !(first.is_ascii_alphabetic() || first == '_')
        || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return None;
    }
    let v = value.trim();
    let v = v
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
        .unwrap_or(v);
    Some((name.to_string(), v.to_string()))
}

/// The command as cron runs it: an unescaped `%` ends it (the rest becomes its standard
/// input) and `\%` stands for `%`.
fn cron_command(cmd: &str) -> String {
    let mut out = String::with_capacity(cmd.len());
    let mut chars = cmd.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'%') => {
                out.push('%');
                chars.next();
            }
            '%' => break,
            _ => out.push(c),
        }
    }
    out
}

/// Splits a crontab job line into (schedule, command).
fn split_job_line(line: &str) -> Option<(String, String)> {
    let t = line.trim_start();
    if t.starts_with('@') {
        let (name, cmd) = t.split_once(char::is_whitespace)?;
        return Some((name.to_string(), cmd.trim_start().to_string()));
    }
    let mut rest = t;
    let mut fields = vec![];
    for _ in 0..5 {
        let (f, r) = rest.split_once(char::is_whitespace)?;
        fields.push(f);
        rest = r.trim_start();
    }
    Some((fields.join(" "), rest.to_string()))
}

fn pool_from_dest(dest: &str, warnings: &mut Vec<String>) -> Option<String> {
    let is_remote = dest.contains("::")
        || dest.starts_with("rsync://")
        || dest
            .split_once(':')
            .is_some_and(|(host, _)| !host.contains('/'));
    if is_remote {
        warnings.push(format!(
            "the rsync destination {dest:?} is on another host; mnbackup's pool must be a \
             local directory or a mounted filesystem (e.g. an NFS mount of that host) — \
             choose one and pass it with --pool"
        ));
        return None;
    }
    if !dest.starts_with('/') {
        warnings.push(format!(
            "the rsync destination {dest:?} is a relative path (cron runs in the user's home \
             directory); pass the absolute pool path with --pool"
        ));
        return None;
    }
    let trimmed = dest.trim_end_matches('/');
    Some(if trimmed.is_empty() { "/" } else { trimmed }.to_string())
}

/// Analyses a crontab (the text of `crontab -l`).
pub fn import_crontab(text: &str) -> Proposal {
    let mut warnings = vec![];
    let mut ambiguities = vec![];
    let matches = matched_lines(text, &mut warnings, &mut ambiguities);
    for m in matches.iter().filter(|m| m.schedule == "@reboot") {
        warnings.push(format!(
            "line {} runs at boot (@reboot); that is not a schedule — the daemon catches up a \
             missed run at start (catch_up = true) instead",
            m.line_no
        ));
    }
    let timed = |m: &&MatchedLine| m.schedule != "@reboot";
    let dumps: Vec<&MatchedLine> = matches
        .iter()
        .filter(|m| matches!(m.kind, MatchKind::ZstackDumpMysql { .. }))
        .filter(timed)
        .collect();
    let rsyncs: Vec<&MatchedLine> = matches
        .iter()
        .filter(|m| matches!(m.kind, MatchKind::RsyncMysqlBackup { .. }))
        .collect();
    // One job per distinct (schedule, zone): the dumps' if any, else the rsyncs'.
    let sources: Vec<&MatchedLine> = if dumps.is_empty() {
        rsyncs.iter().copied().filter(timed).collect()
    } else {
        dumps.clone()
    };
    let mut jobs = proposed_jobs(&sources);
    let keep_last = dump_hints(&dumps, &rsyncs, &mut warnings);
    let pools = pools(&rsyncs, &mut warnings, &mut ambiguities);
    check_jobs(&mut jobs, &mut ambiguities);
    if !matches.is_empty() && jobs.is_empty() && ambiguities.is_empty() {
        ambiguities.push(
            "no backup line has a schedule mnbackup can take over; set the schedule by hand"
                .to_string(),
        );
    }
    Proposal {
        schedule: jobs.first().map(|j| j.schedule.clone()),
        tz: jobs.first().and_then(|j| j.tz.clone()),
        pool: pools.first().cloned(),
        keep_last,
        matches,
        warnings,
        jobs,
        ambiguities,
        original: text.to_string(),
    }
}

/// The backup lines of a crontab, each with the `CRON_TZ=` in effect; a line that runs more
/// than the backup is an ambiguity, a `TZ=` line (when a backup line is found) a warning.
fn matched_lines(
    text: &str,
    warnings: &mut Vec<String>,
    ambiguities: &mut Vec<String>,
) -> Vec<MatchedLine> {
    let mut matches = vec![];
    let mut cron_tz: Option<String> = None;
    let mut tz_env_lines = vec![];
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((name, value)) = is_env_line(line) {
            if name == "CRON_TZ" {
                // Applies to the lines after it.
                cron_tz = Some(value).filter(|v| !v.is_empty());
            } else if name == "TZ" {
                tz_env_lines.push(i + 1);
            }
            continue;
        }
        let Some((schedule, cmd)) = split_job_line(line) else {
            continue;
        };
        let cmd = cron_command(&cmd);
        if let Some(kind) = analyse_command(&cmd) {
            let commands = simple_commands(&cmd);
            if commands.len() > 1 {
                ambiguities.push(format!(
                    "line {} runs more than the backup ({}); disabling it would stop the rest \
                     too: split it into separate lines first",
                    i + 1,
                    commands
                        .iter()
                        .map(|c| format!("`{}`", c.join(" ")))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            matches.push(MatchedLine {
                line_no: i + 1,
                schedule,
                text: raw.to_string(),
                kind,
                tz: cron_tz.clone(),
            });
        }
    }
    if !matches.is_empty() {
        for l in tz_env_lines {
            warnings.push(format!(
                "line {l} sets TZ=, which only changes the commands' environment: cron does not \
                 schedule by it (CRON_TZ= does), so it is not taken as the schedule's time zone"
            ));
        }
    }
    matches
}

/// One proposed job per distinct (schedule, zone) of `sources`, in order.
fn proposed_jobs(sources: &[&MatchedLine]) -> Vec<ProposedJob> {
    let mut jobs: Vec<ProposedJob> = vec![];
    for m in sources {
        match jobs
            .iter_mut()
            .find(|j| j.schedule == m.schedule && j.tz == m.tz)
        {
            Some(j) => j.lines.push(m.line_no),
            None => jobs.push(ProposedJob {
                schedule: m.schedule.clone(),
                tz: m.tz.clone(),
                lines: vec![m.line_no],
            }),
        }
    }
    jobs
}

/// The `--keep-amount` hint of the `dump_mysql` lines; a remote copy, or an rsync at other
/// times than the dump, is a warning.
fn dump_hints(
    dumps: &[&MatchedLine],
    rsyncs: &[&MatchedLine],
    warnings: &mut Vec<String>,
) -> Option<u32> {
    let mut keep_last = None;
    for d in dumps {
        if let MatchKind::ZstackDumpMysql {
            keep_amount,
            remote_host,
        } = &d.kind
        {
            keep_last = keep_last.or(*keep_amount);
            if let Some(h) = remote_host {
                warnings.push(format!(
                    "the dump_mysql line also copies dumps to {h}; mnbackup does not do that — \
                     keep an off-host copy of the pool (e.g. mount remote storage as the pool)"
                ));
            }
        }
    }
    if let Some(d) = dumps.first() {
        for r in rsyncs.iter().filter(|r| r.schedule != d.schedule) {
            warnings.push(format!(
                "dump_mysql runs at \"{}\" but the rsync on line {} runs at \"{}\"; proposing \
                 the dump_mysql times",
                d.schedule, r.line_no, r.schedule
            ));
        }
    }
    keep_last
}

/// The distinct local pool paths the rsync lines copy to; a destination the shell computes, or
/// more than one pool, is an ambiguity.
fn pools(
    rsyncs: &[&MatchedLine],
    warnings: &mut Vec<String>,
    ambiguities: &mut Vec<String>,
) -> Vec<String> {
    let mut pools: Vec<String> = vec![];
    for r in rsyncs {
        if let MatchKind::RsyncMysqlBackup { dest, .. } = &r.kind {
            // `$(…)`, `${…}`, `$VAR` or backquotes anywhere in the command may make up the
            // destination (the tokenizer does not expand them).
            let cmd = split_job_line(&r.text)
                .map(|(_, c)| cron_command(&c))
                .unwrap_or_default();
            if cmd.contains('$') || cmd.contains('`') {
                ambiguities.push(format!(
                    "the destination of line {} ({dest:?}) is computed by the shell at run time; \
                     the pool cannot be derived from it — set [repository] path by hand",
                    r.line_no
                ));
                continue;
            }
            if let Some(p) = pool_from_dest(dest, warnings) {
                if !pools.contains(&p) {
                    pools.push(p);
                }
            }
        }
    }
    if pools.len() > 1 {
        ambiguities.push(format!(
            "the rsync lines copy to different places ({}); choose one pool",
            pools.join(", ")
        ));
    }
    pools
}

/// Several zones are an ambiguity; a job whose zone or schedule does not parse is dropped, with
/// an ambiguity.
fn check_jobs(jobs: &mut Vec<ProposedJob>, ambiguities: &mut Vec<String>) {
    let mut zones: Vec<Option<String>> = jobs.iter().map(|j| j.tz.clone()).collect();
    zones.dedup();
    if zones.len() > 1 {
        ambiguities.push(format!(
            "the backup lines run in different CRON_TZ zones ({}); mnbackup has one [daemon] \
             timezone",
            zones
                .iter()
                .map(|z| z.as_deref().unwrap_or("system zone"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    jobs.retain(|j| {
        let zone = match j.tz.as_deref().map(TzSpec::parse) {
            Some(Ok(z)) => z,
            Some(Err(e)) => {
                ambiguities.push(format!("CRON_TZ of line {}: {e}", j.lines[0]));
                return false;
            }
            None => TzSpec::system(),
        };
        match Schedule::parse(&j.schedule, zone) {
            Ok(_) => true,
            Err(e) => {
                ambiguities.push(format!(
                    "the schedule of line {} cannot be taken over: {e}; set the schedule by hand",
                    j.lines[0]
                ));
                false
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 3, 8).unwrap()
    }

    #[test]
    fn operator_rsync_and_zstack_dump() {
        let text = "\
# m h dom mon dow command
SHELL=/bin/bash
MAILTO=\"\"
30 0,12 * * * zstack-ctl dump_mysql --keep-amount 14
0 1 * * * /usr/local/bin/cleanup-logs.sh > /dev/null 2>&1
45 0,12 * * * rsync -avz --delete /var/lib/zstack/mysql-backup/* /mysql_bk/ >> /var/log/bk.log 2>&1
";
        let p = import_crontab(text);
        assert!(p.found());
        assert_eq!(p.matches.len(), 2);
        assert_eq!(p.matches[0].line_no, 4);
        assert_eq!(p.matches[1].line_no, 6);
        assert_eq!(p.schedule.as_deref(), Some("30 0,12 * * *"));
        assert_eq!(p.pool.as_deref(), Some("/mysql_bk"));
        assert_eq!(p.keep_last, Some(14));
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
        assert!(p.warnings[0].contains("proposing the dump_mysql times"));
        let out = p.apply(day());
        let expected = "\
# m h dom mon dow command
SHELL=/bin/bash
MAILTO=\"\"
# disabled by mnbackup schedule import-crontab 2026-03-08: 30 0,12 * * * zstack-ctl dump_mysql --keep-amount 14
0 1 * * * /usr/local/bin/cleanup-logs.sh > /dev/null 2>&1
# disabled by mnbackup schedule import-crontab 2026-03-08: 45 0,12 * * * rsync -avz --delete /var/lib/zstack/mysql-backup/* /mysql_bk/ >> /var/log/bk.log 2>&1
";
        assert_eq!(out, expected);
        // Re-importing the result finds nothing (idempotent) but the ZStack installer's
        // grep still sees its line.
        assert!(!import_crontab(&out).found());
        assert!(out.contains("zstack-ctl dump_mysql"));
        assert!(p.summary().contains("Proposed pool:     /mysql_bk"));
    }

    #[test]
    fn rsync_only_keeps_its_times() {
        let text = "0 0,12 * * * /usr/bin/rsync -a -e 'ssh -p 2222' /var/lib/zstack/mysql-backup/ /mnt/backup/mn1/";
        let p = import_crontab(text);
        assert_eq!(p.schedule.as_deref(), Some("0 0,12 * * *"));
        assert_eq!(p.pool.as_deref(), Some("/mnt/backup/mn1"));
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        // No trailing newline in, none out.
        assert_eq!(
            p.apply(day()),
            format!("{DISABLED_MARKER} 2026-03-08: {text}")
        );
        match &p.matches[0].kind {
            MatchKind::RsyncMysqlBackup { sources, dest } => {
                assert_eq!(sources, &["/var/lib/zstack/mysql-backup/"]);
                assert_eq!(dest, "/mnt/backup/mn1/");
            }
            k => panic!("{k:?}"),
        }
    }

    #[test]
    fn chained_commands_tz_and_named_schedule() {
        let text = "CRON_TZ=Asia/Shanghai\n\
                    @daily cd /tmp && rsync -a \"/var/lib/zstack/mysql-backup\" /data/mysql_bk;echo done\r\n\
                    */5 * * * * /opt/monitor.sh\n";
        let p = import_crontab(text);
        assert_eq!(p.tz.as_deref(), Some("Asia/Shanghai"));
        assert_eq!(p.schedule.as_deref(), Some("@daily"));
        assert_eq!(p.pool.as_deref(), Some("/data/mysql_bk"));
        let out = p.apply(day());
        // CRLF line ending preserved.
        assert!(out.contains(
            "# disabled by mnbackup schedule import-crontab 2026-03-08: @daily cd /tmp && rsync"
        ));
        assert!(out.contains("echo done\r\n"));
        assert!(out.ends_with("*/5 * * * * /opt/monitor.sh\n"));
    }

    #[test]
    fn remote_destination_and_remote_dump() {
        let text = "\
30 */2 * * * zstack-ctl dump_mysql  --host root@10.0.0.2 --d --keep-amount 20
0 3 * * * rsync -a /var/lib/zstack/mysql-backup/ backup@nas:/volume1/mn/
";
        let p = import_crontab(text);
        assert_eq!(p.schedule.as_deref(), Some("30 */2 * * *"));
        assert_eq!(p.pool, None);
        assert_eq!(p.keep_last, Some(20));
        let w = p.warnings.join("\n");
        assert!(w.contains("root@10.0.0.2"), "{w}");
        assert!(w.contains("on another host"), "{w}");
        assert!(p.summary().contains("pass --pool"));
    }

    #[test]
    fn nothing_to_import() {
        let text = "\
# just comments
PATH=/usr/bin:/bin
0 2 * * * /usr/bin/certbot renew
# 0 0,12 * * * rsync -a /var/lib/zstack/mysql-backup/* /mysql_bk/
15 3 * * * rsync -a /etc/ /backup/etc/
";
        let p = import_crontab(text);
        assert!(!p.found());
        assert_eq!(p.schedule, None);
        assert_eq!(p.pool, None);
        assert_eq!(p.apply(day()), text);
        assert!(p.summary().contains("nothing to import"));
        assert!(!import_crontab("").found());
    }

    #[test]
    fn tokenizer_and_redirections() {
        assert_eq!(
            simple_commands("rsync -a src dst 2>/dev/null >>log; echo \"a b\" | tee x &>/dev/null"),
            vec![
                vec!["rsync", "-a", "src", "dst"],
                vec!["echo", "a b"],
                vec!["tee", "x"],
            ]
        );
        assert_eq!(
            simple_commands("rsync a b > /dev/null 2>&1"),
            vec![vec!["rsync", "a", "b"]]
        );
        assert_eq!(
            backup_file_name(
                DateTime::parse_from_rfc3339("2026-03-08T12:00:00Z")
                    .unwrap()
                    .with_timezone(&Utc)
            ),
            "crontab.before-mnbackup.20260308T120000Z"
        );
    }

    /// Issue 14 item 10: each case of the import that used to act on a wrong proposal.
    #[test]
    fn import_cases_from_issue_14() {
        // Two rsync lines with different schedules: one proposed schedule each.
        let p = import_crontab(
            "0 1 * * * rsync -a /var/lib/zstack/mysql-backup/ /mysql_bk/\n\
             0 13 * * 1-5 rsync -a /var/lib/zstack/mysql-backup/ /mysql_bk/\n",
        );
        let scheds: Vec<&str> = p.jobs.iter().map(|j| j.schedule.as_str()).collect();
        assert_eq!(scheds, ["0 1 * * *", "0 13 * * 1-5"]);
        assert!(p.ambiguities.is_empty(), "{:?}", p.ambiguities);
        assert_eq!(p.pool.as_deref(), Some("/mysql_bk"));

        // A chained line is not disabled silently: applying it is refused.
        let p = import_crontab(
            "0 1 * * * rsync -a /var/lib/zstack/mysql-backup/ /mysql_bk/ && /opt/cleanup.sh\n",
        );
        assert_eq!(p.ambiguities.len(), 1, "{:?}", p.ambiguities);
        assert!(
            p.ambiguities[0].contains("`/opt/cleanup.sh`"),
            "{:?}",
            p.ambiguities
        );

        // TZ= is not the schedule zone; CRON_TZ applies only after its line.
        let p = import_crontab(
            "TZ=Asia/Shanghai\n0 1 * * * rsync -a /var/lib/zstack/mysql-backup/ /mysql_bk/\n\
             CRON_TZ=Europe/Berlin\n",
        );
        assert_eq!(p.tz, None);
        assert_eq!(p.jobs[0].tz, None);
        assert!(
            p.warnings.iter().any(|w| w.contains("TZ=")),
            "{:?}",
            p.warnings
        );
        let p = import_crontab(
            "CRON_TZ=Europe/Berlin\n0 1 * * * rsync -a /var/lib/zstack/mysql-backup/ /b/\n",
        );
        assert_eq!(p.tz.as_deref(), Some("Europe/Berlin"));

        // @reboot first still gives the timed line's schedule.
        let p = import_crontab(
            "@reboot rsync -a /var/lib/zstack/mysql-backup/ /mysql_bk/\n\
             30 0,12 * * * rsync -a /var/lib/zstack/mysql-backup/ /mysql_bk/\n",
        );
        assert_eq!(p.schedule.as_deref(), Some("30 0,12 * * *"));
        assert_eq!(p.matches.len(), 2);
        assert!(p.ambiguities.is_empty(), "{:?}", p.ambiguities);

        // A trailing comment, `%` (stdin) and `\%` do not end up in the pool.
        let p = import_crontab(
            "0 1 * * * rsync -a /var/lib/zstack/mysql-backup/ /mysql_bk/ # nightly copy\n",
        );
        assert_eq!(p.pool.as_deref(), Some("/mysql_bk"));
        let p = import_crontab(
            "0 1 * * * rsync -a /var/lib/zstack/mysql-backup/ /mysql_bk/%some stdin\n",
        );
        assert_eq!(p.pool.as_deref(), Some("/mysql_bk"));
        let p = import_crontab(
            "0 1 * * * rsync -a /var/lib/zstack/mysql-backup/ /mysql_bk/$(date +\\%F)/\n",
        );
        assert_eq!(p.pool, None);
        assert!(
            p.ambiguities
                .iter()
                .any(|a| a.contains("computed by the shell")),
            "{:?}",
            p.ambiguities
        );
        // Different destinations: ambiguous.
        let p = import_crontab(
            "0 1 * * * rsync -a /var/lib/zstack/mysql-backup/ /a/\n\
             0 2 * * * rsync -a /var/lib/zstack/mysql-backup/ /b/\n",
        );
        assert!(
            p.ambiguities.iter().any(|a| a.contains("/a, /b")),
            "{:?}",
            p.ambiguities
        );
        // The diff shows exactly the lines that change.
        let p = import_crontab("MAILTO=x\n0 1 * * * rsync -a /var/lib/zstack/mysql-backup/ /a/\n");
        assert_eq!(
            p.diff(day()),
            "@@ line 2 @@\n-0 1 * * * rsync -a /var/lib/zstack/mysql-backup/ /a/\n\
             +# disabled by mnbackup schedule import-crontab 2026-03-08: 0 1 * * * rsync -a \
             /var/lib/zstack/mysql-backup/ /a/\n"
        );
    }
}
