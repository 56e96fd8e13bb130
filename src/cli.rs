//! The command line, in the conventions of restic and borg.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::engines::mariadb::MariadbConfig;

/// Backup and disaster recovery for the ZStack / Mevoco management node.
#[derive(Debug, Parser)]
#[command(name = "mnbackup", version, about, long_about = None, after_help = EXIT_CODES)]
pub struct Cli {
    /// Repository: a directory on the pool, or a URL (`file:///mysql_bk/mnbackup`).
    #[arg(short = 'r', long = "repo", env = "MNBACKUP_REPO", global = true)]
    pub repo: Option<PathBuf>,
    /// Configuration file [default: /etc/mnbackup/mnbackup.toml when it exists].
    #[arg(short = 'c', long = "config", env = "MNBACKUP_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Print only errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More detail (-v, -vv).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Machine-readable JSON output on standard output.
    #[arg(long, global = true)]
    pub json: bool,
    /// `snapshot` and `verify` by hand: run `[daemon] on_success` / `on_failure` afterwards, as
    /// the daemon does for its jobs (MNBACKUP_JOB=manual).
    #[arg(long, global = true)]
    pub hooks: bool,
    /// Wait up to this long for a lock held by another process (e.g. 30s, 10m, 2h; plain
    /// numbers are seconds) instead of failing at once with exit 4. Overrides
    /// [repository] lock_wait_seconds.
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_wait)]
    pub retry_lock: Option<u64>,
    #[command(subcommand)]
    pub command: Command,
}

pub const EXIT_CODES: &str = "Exit codes: 0 ok; 1 failed; 2 bad usage or configuration; 3 no repository at the \
path (not initialised or pool not mounted); 4 repository locked; 5 damaged or missing data; 6 unsafe \
repository content (path traversal, absurd sizes); 7 out of space; 11 wrong or missing passphrase of an \
encrypted repository. verify, restore and status add their own \
(see `mnbackup help verify`).";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new repository (the only command that creates one): format v2, encrypted with a
    /// passphrase from MNBACKUP_PASSWORD_FILE, [repository] password_file / password_command,
    /// MNBACKUP_PASSWORD, or asked on a terminal.
    Init {
        /// Create an unencrypted repository (anyone who can read the pool reads the backups).
        #[arg(long)]
        no_encryption: bool,
        /// Create a format v1 repository (unencrypted), readable by the first release.
        #[arg(long, hide = true)]
        format_v1: bool,
        /// Write every object as its own file, as the first release did, instead of packing
        /// small objects together (packs make many small files much cheaper to back up).
        #[arg(long)]
        no_packs: bool,
    },
    /// Keys of an encrypted repository: list, add, remove, change the passphrase, export the
    /// master key as a paper key.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Convert a format v1 repository to format v2 in place: encrypted with a new passphrase
    /// (from the same sources as `init`), small objects in packs. Resumable: after a stop, run
    /// it again (with the same passphrase). Takes the exclusive lock.
    Migrate {
        /// Convert to an unencrypted v2 repository (anyone who can read the pool reads the
        /// backups).
        #[arg(long)]
        no_encryption: bool,
    },
    /// Take a snapshot of the configured sources now.
    Snapshot(SnapshotArgs),
    /// List snapshots (or, with --binlog, the binlog chains, gaps and recoverable ranges).
    #[command(alias = "snapshots")]
    List {
        /// Only the snapshots of this host's series.
        #[arg(long)]
        host: Option<String>,
        /// Show the shipped binlog: chains, gaps, the recoverable time ranges.
        #[arg(long)]
        binlog: bool,
    },
    /// Ship the MariaDB binlog into the repository (point-in-time recovery, `docs/binlog.md`).
    Binlog {
        /// Ship what is new since the last stored segment and stop.
        #[arg(long, conflicts_with = "follow")]
        once: bool,
        /// Follow the server continuously in the foreground, storing every segment as it is
        /// cut (`[binlog] segment_seconds`), until SIGTERM / SIGINT (the daemon's `binlog` job
        /// does the same in the background).
        #[arg(long)]
        follow: bool,
    },
    /// Show a snapshot's items.
    Show {
        /// Snapshot id, unique prefix, or `latest`.
        snapshot: String,
    },
    /// Write an item's plain content to standard output.
    Cat {
        snapshot: String,
        /// Item name as `show` lists it (e.g. files/etc/my.cnf).
        item: String,
    },
    /// Write a snapshot's items as plain files, with their metadata, under DIR.
    Export {
        snapshot: String,
        dir: PathBuf,
        /// Only items whose names start with this prefix (e.g. `files/` or `mariadb/zstack/`).
        #[arg(long)]
        include: Vec<String>,
        /// Drop setuid, setgid and sticky bits (an export for inspection should not carry them).
        #[arg(long)]
        no_special_bits: bool,
    },
    /// Check the repository: structure (fast), or every byte with --read-data.
    ///
    /// Exit codes: 0 ok; 5 damaged data (or damaged manifest, or a chain over policy);
    /// 8 objects missing; 9 drill mismatch; 1, 3, 4 could not run.
    Verify {
        /// Read, decompress and reconstruct every piece, checking each BLAKE3.
        #[arg(long)]
        read_data: bool,
        /// Read only a subset: N/M (bucket N of M by object id; 1/M … M/M cover the pool) or P%.
        #[arg(long, value_name = "N/M|P%")]
        subset: Option<String>,
        /// Restore SNAPSHOT's MariaDB data into scratch databases (mnbackup_drill_<db>), compare
        /// every table's row fingerprint, drop them. Default SNAPSHOT: latest.
        #[arg(long, value_name = "SNAPSHOT", num_args = 0..=1, default_missing_value = "latest")]
        drill: Option<String>,
        /// With --drill: a point-in-time drill. The base is the newest snapshot from which the
        /// shipped binlog reaches TIME (`YYYY-MM-DD HH:MM:SS` UTC, RFC 3339, or `latest`);
        /// after its load the binlog is replayed up to TIME into the scratch databases.
        #[arg(long, value_name = "TIME", requires = "drill")]
        until: Option<String>,
        /// Where the drill loads (default: the [mariadb] connection).
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Rebuild the node from a snapshot: MariaDB, files, Cassandra; proven by row fingerprints.
    ///
    /// Exit codes: 0 restored and every table matches; 9 a table does not match its
    /// fingerprint; 2 refused by a preflight check (non-empty target databases, running
    /// service, moved volumes: see --plan) or bad usage; 5 damaged or missing data; 7 no space.
    Restore(RestoreArgs),
    /// Check, without taking a snapshot, that the configured credentials, the pool and the
    /// tools can give a complete snapshot; each failing line names the statement that fixes it.
    ///
    /// Exit codes: 0 all good; 10 some capability missing; 1 cannot connect.
    Check,
    /// Print the CREATE USER + GRANT script of a dedicated backup account for the configured
    /// server's version.
    Grants {
        /// The account's user name.
        #[arg(long, default_value = "mnbackup")]
        user: String,
        /// The account's host part.
        #[arg(long, default_value = "localhost")]
        host: String,
        /// Print for this server version instead of asking the configured server.
        #[arg(long, value_name = "VERSION")]
        server_version: Option<String>,
    },
    /// Copy snapshots to another repository (e.g. an s3:// bucket), sending only the objects it
    /// lacks. Resumable: run it again after an interruption.
    Copy(CopyArgs),
    /// Remove snapshots by id or by the retention policy ([retention] or --keep-*).
    Forget(ForgetArgs),
    /// Remove objects no snapshot references (never a base a kept delta needs).
    Prune {
        /// Only report what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Make a damaged repository consistent: remove damaged objects, drop what cannot be
    /// recovered from the snapshots (recorded as gaps) and say which snapshots lost what.
    ///
    /// Exit codes: 0 nothing lost; 10 snapshots lost items (marked incomplete); 5 damaged
    /// manifests remain (not repairable); 1, 3, 4 could not run.
    Repair {
        /// Only report what would be done.
        #[arg(long)]
        dry_run: bool,
    },
    /// Run the configured schedules in the foreground (for systemd).
    Daemon,
    /// Health of the scheduled jobs (state files and repository), as a Nagios plugin: the
    /// first line is the verdict; exit 0 OK, 1 WARNING (stale), 2 CRITICAL (failing, never,
    /// newest snapshot incomplete), 3 UNKNOWN.
    Status,
    /// Schedule commands: next fire times, systemd unit, crontab import.
    Schedule {
        #[command(subcommand)]
        command: ScheduleCommand,
    },
    /// Remove stale locks (a process that died, a host that crashed).
    Unlock {
        /// Remove every lock, also live ones. Only when you are sure no mnbackup runs anywhere.
        #[arg(long)]
        remove_all: bool,
    },
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// List the key files (id, host, creation time); `*` marks the one that opened.
    List,
    /// Add a key with a new passphrase (MNBACKUP_NEW_PASSWORD_FILE, MNBACKUP_NEW_PASSWORD, or
    /// asked). With --from-paper-key the repository is opened with the paper key read from
    /// stdin instead of a passphrase (the recovery when every passphrase is lost).
    Add {
        #[arg(long)]
        from_paper_key: bool,
    },
    /// Remove a key file (never the last one).
    Remove {
        /// The key id (`mnbackup key list`).
        id: String,
    },
    /// Change the passphrase: add a key with the new passphrase, remove the one that opened.
    Passwd,
    /// Print the master key as a paper key (keep it off the node: print it, store it in a safe).
    Export,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check the configuration and print the effective settings, secrets masked.
    Check,
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Print the next N fire times of each schedule (or of EXPR).
    Next {
        /// How many.
        #[arg(default_value_t = 5)]
        n: usize,
        /// A cron expression to explain instead of the configured schedules.
        #[arg(long)]
        expr: Option<String>,
    },
    /// Write a systemd unit running `mnbackup daemon`.
    Install {
        /// Print the unit instead of writing it.
        #[arg(long)]
        dry_run: bool,
    },
    /// Find the old rsync / zstack-ctl dump_mysql crontab lines and propose the schedule.
    ImportCrontab {
        /// Read this file instead of `crontab -l`.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Comment the old lines out (after saving a copy of the crontab).
        #[arg(long)]
        apply: bool,
    },
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Snapshots to copy (ids, prefixes, `latest`); without them, all.
    pub snapshots: Vec<String>,
    /// The destination: the name of a `[[copy]]` target of the configuration (its location,
    /// credentials, selection and upload limit), or a path or URL (`s3://bucket/prefix`, its
    /// credentials from `[repository.s3]`).
    #[arg(long, value_name = "NAME|LOCATION")]
    pub to: String,
    /// Only snapshots of this host.
    #[arg(long)]
    pub host: Option<String>,
    /// Limit the upload rate, in KiB/s.
    #[arg(long, value_name = "KIB_PER_SEC")]
    pub limit_upload: Option<u64>,
    /// Copy only the snapshots `forget` with this policy would keep, in each host's series
    /// (with ids and --host: those of them it keeps). Replaces a target's keep_*, refused
    /// with a target of `snapshots = "latest"`.
    #[command(flatten)]
    pub keep: KeepArgs,
}

/// A retention policy on the command line (`forget`, `copy`), as restic's `--keep-*`.
#[derive(Debug, Args, Clone, Default)]
pub struct KeepArgs {
    /// Keep the N newest snapshots.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the N most recent hours that have one.
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the N most recent days that have one.
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the N most recent ISO weeks that have one.
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the N most recent months that have one.
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the N most recent years that have one.
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<u32>,
}

impl KeepArgs {
    /// The policy given (unset counts are None).
    pub fn policy(&self) -> mnbackup_scheduler::KeepPolicy {
        mnbackup_scheduler::KeepPolicy {
            last: self.keep_last,
            hourly: self.keep_hourly,
            daily: self.keep_daily,
            weekly: self.keep_weekly,
            monthly: self.keep_monthly,
            yearly: self.keep_yearly,
        }
    }

    /// Whether any --keep-* was given.
    pub fn given(&self) -> bool {
        [
            self.keep_last,
            self.keep_hourly,
            self.keep_daily,
            self.keep_weekly,
            self.keep_monthly,
            self.keep_yearly,
        ]
        .iter()
        .any(Option::is_some)
    }
}

#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// Snapshots to remove (ids, prefixes, `latest`); without them the policy decides.
    pub snapshots: Vec<String>,
    #[command(flatten)]
    pub keep: KeepArgs,
    /// Only report what would be removed.
    #[arg(long)]
    pub dry_run: bool,
    /// Prune afterwards.
    #[arg(long)]
    pub prune: bool,
    /// Only this host's snapshots (and `latest` is this host's).
    #[arg(long)]
    pub host: Option<String>,
    /// Apply the policy to each group of snapshots: `host` (default), `host,components`,
    /// `components` or `none` (all snapshots as one group).
    #[arg(long, default_value = "host", value_parser = crate::model::GroupBy::parse)]
    pub group_by: crate::model::GroupBy,
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Also back up these files or directories.
    #[arg(long = "files", num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// Skip the configured sources and back up only --files.
    #[arg(long)]
    pub only_files: bool,
    /// Record this host name instead of `[repository] host` or the system's: the snapshot's
    /// series.
    #[arg(long)]
    pub host: Option<String>,
    /// Read every file, also the ones whose size, mtime, ctime and inode match the parent
    /// snapshot's (by default those are reused without reading them).
    #[arg(long)]
    pub force_read: bool,
    /// What started the snapshot (recorded in the manifest).
    #[arg(long, default_value = "manual", hide = true)]
    pub trigger: String,
}

pub use crate::config::MAX_LOCK_WAIT_SECONDS;

/// Parse `--retry-lock`: seconds, or a number with s, m or h; at most a week.
pub fn parse_wait(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.chars().last() {
        Some('s') => (&t[..t.len() - 1], 1),
        Some('m') => (&t[..t.len() - 1], 60),
        Some('h') => (&t[..t.len() - 1], 3600),
        _ => (t, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a duration; use e.g. 30s, 10m or 2h"))?;
    let secs = n.saturating_mul(mult);
    if secs > MAX_LOCK_WAIT_SECONDS {
        return Err(format!(
            "`{s}` is longer than the {MAX_LOCK_WAIT_SECONDS} seconds (one week) allowed"
        ));
    }
    Ok(secs)
}

/// Where the restore (or the drill) loads MariaDB: defaults to the `[mariadb]` connection of the
/// configuration; each option overrides one part. The password follows the configuration's
/// rules (inline, `password_env`, `option_file`, `zstack_properties`) and is never taken from
/// the command line: `--target-password-env VAR` names an environment variable holding it.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TargetArgs {
    /// Target MariaDB host (TCP) [default: the [mariadb] connection].
    #[arg(long, value_name = "HOST")]
    pub target_host: Option<String>,
    /// Target MariaDB TCP port.
    #[arg(long, value_name = "PORT")]
    pub target_port: Option<u16>,
    /// Target MariaDB Unix socket (instead of TCP).
    #[arg(long, value_name = "PATH")]
    pub target_socket: Option<PathBuf>,
    /// Target MariaDB user.
    #[arg(long, value_name = "USER")]
    pub target_user: Option<String>,
    /// Name of an environment variable holding the target user's password.
    #[arg(long, value_name = "VAR")]
    pub target_password_env: Option<String>,
}

impl TargetArgs {
    /// The MariaDB configuration of the target: `base` (the `[mariadb]` connection) with the
    /// options given.
    pub fn config(&self, base: Option<&MariadbConfig>) -> MariadbConfig {
        let mut c = base.cloned().unwrap_or_default();
        if self.target_host.is_some() {
            c.host = self.target_host.clone();
            c.socket = None;
        }
        if self.target_port.is_some() {
            c.port = self.target_port;
        }
        if self.target_socket.is_some() {
            c.socket = self.target_socket.clone();
            c.host = None;
        }
        if self.target_user.is_some() {
            c.user = self.target_user.clone();
        }
        if self.target_password_env.is_some() {
            c.password = None;
            c.password_env = self.target_password_env.clone();
        }
        c
    }
}

/// `mnbackup restore` options.
#[derive(Debug, Clone, clap::Args)]
pub struct RestoreArgs {
    /// Snapshot id, unique prefix, or `latest`.
    #[arg(default_value = "latest")]
    pub snapshot: String,
    /// Show the ordered plan and the preflight results; change nothing.
    #[arg(long)]
    pub plan: bool,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Restore database FROM as TO (repeatable), e.g. `--rename-db zstack=zstack_old` to inspect
    /// an old state beside the live one. Accounts, grants and events are then skipped.
    #[arg(long = "rename-db", value_name = "FROM=TO")]
    pub rename_db: Vec<String>,
    /// With --rename-db, restore the accounts and grants anyway.
    #[arg(long)]
    pub with_accounts: bool,
    /// Replace the target's own root@localhost with the snapshot's (its password and grants);
    /// by default the target's is kept and every other account is restored.
    #[arg(long)]
    pub replace_local_root: bool,
    /// Rebuild mode: switch the target server's durability off for the load
    /// (innodb_flush_log_at_trx_commit = 0, sync_binlog = 0) and set it back afterwards, also
    /// after a failure. Faster; a server crash during the load loses its last commits (run the
    /// restore again). See docs/disaster-recovery.md.
    #[arg(long)]
    pub rebuild: bool,
    /// With --rebuild, also keep the load out of the binlog (SET SESSION sql_log_bin = 0):
    /// replicas do not receive the restored data.
    #[arg(long, requires = "rebuild")]
    pub rebuild_skip_binlog: bool,
    /// Replace non-empty target databases and existing files (after a safety snapshot), and
    /// proceed although the management service runs or volumes moved.
    #[arg(long)]
    pub force: bool,
    /// Switch ZStack's VM HA off after the load (GlobalConfigVO ha.enable = false).
    #[arg(long)]
    pub disable_vm_ha: bool,
    /// Where files go (their original absolute paths below it).
    #[arg(long, default_value = "/", value_name = "DIR")]
    pub files_root: PathBuf,
    /// Do not restore files.
    #[arg(long)]
    pub no_files: bool,
    /// Do not restore MariaDB.
    #[arg(long)]
    pub no_mariadb: bool,
    /// Do not restore Cassandra.
    #[arg(long)]
    pub no_cassandra: bool,
    /// Do not restore the Prometheus blocks.
    #[arg(long)]
    pub no_prometheus: bool,
    /// Parallel MariaDB connections for the data [default: [mariadb] workers, or the cores].
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// The restore journal [default: restore-journal.json in [daemon] state_dir].
    #[arg(long, value_name = "PATH")]
    pub journal: Option<PathBuf>,
    /// MiB of checked SQL items held in memory between their check and their load [default:
    /// half of `[limits] memory`].
    #[arg(long, hide = true)]
    pub memory_budget_mib: Option<u64>,
    /// Point-in-time: restore the newest snapshot before TIME (UTC, `2026-12-03 13:52:07` or
    /// RFC 3339) and replay the shipped binlog up to it (`latest`: every shipped event).
    #[arg(long, value_name = "TIME|latest", conflicts_with_all = ["until_gtid", "snapshot"])]
    pub until: Option<String>,
    /// Point-in-time: replay the shipped binlog up to and including this GTID.
    #[arg(long, value_name = "GTID", conflicts_with = "snapshot")]
    pub until_gtid: Option<String>,
    /// Rebuild node NODE (cluster mode): its newest node-local files (its own series) and the
    /// newest shared data (MariaDB, Cassandra, Prometheus) whichever node took it. Only with
    /// `latest`.
    #[arg(long, value_name = "NODE", conflicts_with_all = ["until", "until_gtid"])]
    pub host: Option<String>,
}
