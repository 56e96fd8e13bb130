use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() {
    tune_malloc();
    let cli = mnbackup::cli::Cli::parse();
    use mnbackup::cli::{Command, ScheduleCommand};
    let keep_ignoring = matches!(
        cli.command,
        Command::Daemon
            | Command::Schedule {
                command: ScheduleCommand::ImportCrontab { .. }
            }
    );
    if !keep_ignoring {
        // A closed pipe (`mnbackup show ID | head -1`) ends the process quietly, as it does
        // `cat`: Rust ignores SIGPIPE, and `println!` then panics on EPIPE. The daemon keeps
        // ignoring it, so a restarted journald (its stderr) cannot kill it, and so does
        // `import-crontab`, which writes into `crontab -` and must report its failure.
        // SAFETY: setting a signal disposition to the default before any thread is started.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let level = if cli.quiet {
        "error"
    } else {
        match cli.verbose {
            0 => "info",
            1 => "debug",
            _ => "trace",
        }
    };
    let filter = EnvFilter::try_from_env("MNBACKUP_LOG").unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "warn,mnbackup={level},mnbackup_restore={level},mnbackup_scheduler={level}"
        ))
    });
    let journal = mnbackup::ui::stderr_is_journal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if journal {
        // Under systemd: journald adds the time; each line carries its priority.
        let format = tracing_subscriber::fmt::format()
            .with_target(false)
            .with_ansi(false)
            .without_time();
        builder
            .event_format(mnbackup::ui::JournalPriority(format))
            .init();
    } else {
        builder.init();
    }
    let error_prefix = if journal { "<3>error" } else { "error" };
    let hooks = match mnbackup::commands::daemon::ManualHooks::for_cli(&cli) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("{error_prefix}: {e:#}");
            std::process::exit(mnbackup::error::exit_code(&e));
        }
    };
    let result = mnbackup::commands::run(cli);
    if let Some(h) = hooks {
        h.after(&result);
    }
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{error_prefix}: {e:#}");
            mnbackup::error::exit_code(&e)
        }
    };
    std::process::exit(code);
}

/// glibc's malloc, left alone, keeps memory a backup run has freed: one arena per thread (up to
/// 8 per core) and a mmap threshold that grows to 32 MiB after the first large buffers are freed,
/// so later piece buffers (1-8 MiB) stay on the heap. Two arenas, buffers of 256 KiB and more
/// in their own mappings, and the heap's top returned above 1 MiB halve the peak RSS of a
/// snapshot (the benchmark reports it). A setting the operator gives in the environment
/// (`MALLOC_ARENA_MAX`, `MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`, read by glibc
/// itself) is left as given.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    for (var, param, value) in [
        ("MALLOC_ARENA_MAX", libc::M_ARENA_MAX, 2),
        ("MALLOC_MMAP_THRESHOLD_", libc::M_MMAP_THRESHOLD, 256 << 10),
        ("MALLOC_TRIM_THRESHOLD_", libc::M_TRIM_THRESHOLD, 1 << 20),
    ] {
        if std::env::var_os(var).is_none() {
            // SAFETY: mallopt only changes the allocator's tunables; called before any thread.
            unsafe {
                libc::mallopt(param, value);
            }
        }
    }
}
