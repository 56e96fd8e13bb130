//! One module per command. `run` dispatches; every command gets the [`Ctx`].

pub mod binlog;
pub mod cat;
pub mod check;
pub mod cluster;
pub mod config_check;
pub mod copy;
pub mod daemon;
pub mod drill;
pub mod export;
pub mod forget;
pub mod grants;
pub mod init;
pub mod key;
pub mod list;
pub mod migrate;
pub mod password;
pub mod prune;
pub mod repair;
pub mod restore;
pub mod schedule;
pub mod show;
pub mod snapshot;
pub mod status;
pub mod unlock;
pub mod verify;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use crate::cli::{Cli, Command, ConfigCommand, ScheduleCommand};
use crate::config::{Config, DEFAULT_CONFIG};
use crate::error::MnError;
use crate::repo::Repo;

/// What every command needs: the parsed global options and the loaded configuration.
pub struct Ctx {
    pub repo_path: Option<PathBuf>,
    pub config_path: Option<PathBuf>,
    pub config: Config,
    pub json: bool,
    pub quiet: bool,
    pub verbose: u8,
}

impl Ctx {
    /// Build the context: load the config from `-c`, `MNBACKUP_CONFIG` or the default path.
    pub fn new(cli: &Cli) -> Result<Ctx> {
        let config_path = cli.config.clone().or_else(|| {
            let d = PathBuf::from(DEFAULT_CONFIG);
            d.exists().then_some(d)
        });
        let mut config = match &config_path {
            Some(p) => Config::load(p)?,
            None => Config::default(),
        };
        if let Some(w) = cli.retry_lock {
            config.repository.lock_wait_seconds = w;
        }
        Ok(Ctx {
            repo_path: cli.repo.clone(),
            config_path,
            config,
            json: cli.json,
            quiet: cli.quiet,
            verbose: cli.verbose,
        })
    }

    /// The repository path: `-r`, `MNBACKUP_REPO`, or `[repository] path`.
    pub fn repo_path(&self) -> Result<PathBuf> {
        self.repo_path
            .clone()
            .or_else(|| self.config.repository.path.clone())
            .ok_or_else(|| {
                MnError::Usage(
                    "no repository given: use -r PATH, set MNBACKUP_REPO, or set [repository] \
                     path in the configuration"
                        .into(),
                )
                .into()
            })
    }

    /// Open the repository (refusing a path without the marker).
    pub fn open_repo(&self) -> Result<Repo> {
        let mut repo = self.open_location(&self.repo_path()?.to_string_lossy())?;
        repo.stale_after = Duration::from_secs(
            self.config
                .repository
                .lock_stale_minutes
                .clamp(1, 7 * 24 * 60)
                * 60,
        );
        if let Some(h) = &self.config.repository.host {
            repo.host = h.clone();
        }
        Ok(repo)
    }

    /// Open the repository at a path or URL, object stores with `[repository.s3]`; an
    /// encrypted one is unlocked with the passphrase from the configured sources
    /// ([`password::current`]).
    pub fn open_location(&self, location: &str) -> Result<Repo> {
        self.open_unlocked(location, false)
    }

    /// Open (and unlock) the destination of `copy`.
    pub fn open_dest(&self, location: &str) -> Result<Repo> {
        self.open_unlocked(location, true)
    }

    /// Open without unlocking (an encrypted repository's objects and manifests stay closed).
    pub fn open_locked(&self, location: &str) -> Result<Repo> {
        Repo::open_on(crate::store::open_with(
            location,
            &self.config.repository.s3,
        )?)
    }

    fn open_unlocked(&self, location: &str, dest: bool) -> Result<Repo> {
        let mut repo = self.open_locked(location)?;
        if repo.encrypted() {
            let pass = password::current(self, &repo.location(), dest)?;
            repo.unlock(pass.as_bytes())?;
        }
        Ok(repo)
    }

    /// What the use cases in `ops` need: the configuration, the repository, the components.
    pub fn ops_env<'a>(
        &'a self,
        registry: &'a crate::engines::Registry,
    ) -> Result<crate::ops::Env<'a>> {
        Ok(crate::ops::Env {
            config: &self.config,
            repo: self.open_repo()?,
            lock_wait: self.lock_wait(),
            registry,
        })
    }

    pub fn lock_wait(&self) -> Duration {
        Duration::from_secs(
            self.config
                .repository
                .lock_wait_seconds
                .min(crate::cli::MAX_LOCK_WAIT_SECONDS),
        )
    }

    /// Print a line for humans (suppressed by -q and --json).
    pub fn say(&self, msg: impl AsRef<str>) {
        if !self.quiet && !self.json {
            println!("{}", msg.as_ref());
        }
    }
}

/// Run the parsed command line.
pub fn run(cli: Cli) -> Result<i32> {
    let mut ctx = Ctx::new(&cli)?;
    // `--host` of snapshot and forget sets the series host, as `[repository] host` does.
    let host = match &cli.command {
        Command::Snapshot(a) => a.host.clone(),
        Command::Forget(a) => a.host.clone(),
        _ => None,
    };
    if let Some(h) = host {
        crate::config::check_host(&h).map_err(crate::error::usage)?;
        ctx.config.repository.host = Some(h);
    }
    match cli.command {
        Command::Init {
            no_encryption,
            format_v1,
            no_packs,
        } => init::run(&ctx, no_encryption, format_v1, !no_packs),
        Command::Key { command } => key::run(&ctx, command),
        Command::Migrate { no_encryption } => migrate::run(&ctx, no_encryption),
        Command::Snapshot(args) => snapshot::run(&ctx, &args),
        Command::List {
            host,
            binlog: false,
        } => list::run(&ctx, host.as_deref()),
        Command::List { binlog: true, .. } => binlog::list(&ctx),
        Command::Binlog { once, follow } => binlog::run(&ctx, once, follow),
        Command::Show { snapshot } => show::run(&ctx, &snapshot),
        Command::Cat { snapshot, item } => cat::run(&ctx, &snapshot, &item),
        Command::Export {
            snapshot,
            dir,
            include,
            no_special_bits,
        } => export::run(&ctx, &snapshot, &dir, &include, no_special_bits),
        Command::Copy(a) => copy::run(&ctx, &a),
        Command::Forget(a) => forget::run(
            &ctx,
            &forget::ForgetArgs {
                snapshots: a.snapshots,
                keep: a.keep.policy(),
                dry_run: a.dry_run,
                prune: a.prune,
                host: a.host,
                group_by: a.group_by,
            },
        ),
        Command::Prune { dry_run } => prune::run(&ctx, dry_run),
        Command::Repair { dry_run } => repair::run(&ctx, dry_run),
        Command::Daemon => daemon::run(&ctx),
        Command::Status => status::run(&ctx),
        Command::Schedule { command } => match command {
            ScheduleCommand::Next { n, expr } => schedule::next(&ctx, n, expr.as_deref()),
            ScheduleCommand::Install { dry_run } => schedule::install(&ctx, dry_run),
            ScheduleCommand::ImportCrontab { file, apply } => {
                schedule::import_crontab(&ctx, file.as_deref(), apply)
            }
        },
        Command::Unlock { remove_all } => unlock::run(&ctx, remove_all),
        Command::Verify {
            drill: Some(snapshot),
            target,
            until,
            ..
        } => drill::run(&ctx, &snapshot, &target, until.as_deref()),
        Command::Verify {
            read_data, subset, ..
        } => verify::run(&ctx, &verify::VerifyArgs { read_data, subset }),
        Command::Restore(args) => restore::run(&ctx, &args),
        Command::Check => check::run(&ctx),
        Command::Grants {
            user,
            host,
            server_version,
        } => grants::run(&ctx, &user, &host, server_version.as_deref()),
        Command::Config {
            command: ConfigCommand::Check,
        } => config_check::run(&ctx),
    }
}
