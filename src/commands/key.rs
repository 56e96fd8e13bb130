//! `mnbackup key list|add|remove|passwd|export`: the key files of an encrypted repository.

use std::io::Read;

use anyhow::{Context, Result};
use zeroize::Zeroizing;

use super::{password, Ctx};
use crate::cli::KeyCommand;
use crate::repo::Repo;

fn open(ctx: &Ctx, from_paper_key: bool) -> Result<Repo> {
    let location = ctx.repo_path()?.to_string_lossy().into_owned();
    let mut repo = ctx.open_locked(&location)?;
    if !repo.encrypted() {
        return Err(crate::error::usage(format!(
            "the repository at {} is not encrypted ({}): it has no keys",
            repo.location(),
            repo.encryption_summary()
        )));
    }
    if from_paper_key {
        let mut text = Zeroizing::new(String::new());
        std::io::stdin()
            .take(64 << 10)
            .read_to_string(&mut text)
            .context("reading the paper key from stdin")?;
        let (id, master) = crate::repo::crypto::parse_paper_key(&text).map_err(|e| {
            crate::error::usage(format!("the text on stdin is not a paper key: {e:#}"))
        })?;
        if id != repo.config.id {
            return Err(crate::error::MnError::Key(format!(
                "the paper key is for repository {id}, this is {}",
                repo.config.id
            ))
            .into());
        }
        repo.use_master(master)?;
    } else {
        let pass = password::current(ctx, &repo.location(), false)?;
        repo.unlock(pass.as_bytes())?;
    }
    if let Some(h) = &ctx.config.repository.host {
        repo.host = h.clone();
    }
    Ok(repo)
}

pub fn run(ctx: &Ctx, cmd: KeyCommand) -> Result<i32> {
    let wait = ctx.lock_wait();
    match cmd {
        KeyCommand::List => {
            let repo = open(ctx, false)?;
            let keys = repo.list_keys()?;
            if ctx.json {
                let v: Vec<_> = keys
                    .iter()
                    .map(|(id, f)| match f {
                        Ok(f) => serde_json::json!({
                            "id": id, "current": Some(id) == repo.key_id.as_ref(),
                            "host": f.host, "created": f.created,
                            "kdf": f.kdf, "m_cost": f.m_cost, "t_cost": f.t_cost,
                        }),
                        Err(e) => serde_json::json!({"id": id, "error": format!("{e:#}")}),
                    })
                    .collect();
                println!("{}", serde_json::to_string(&v)?);
            } else {
                for (id, f) in &keys {
                    let mark = if Some(id) == repo.key_id.as_ref() {
                        "*"
                    } else {
                        " "
                    };
                    match f {
                        Ok(f) => println!(
                            "{mark} {id}  {}  {}  argon2id m={} KiB t={}",
                            f.created.format("%Y-%m-%d %H:%M:%S UTC"),
                            f.host,
                            f.m_cost,
                            f.t_cost
                        ),
                        Err(e) => println!("{mark} {id}  not usable: {e:#}"),
                    }
                }
            }
        }
        KeyCommand::Add { from_paper_key } => {
            let repo = open(ctx, from_paper_key)?;
            let pass = password::new("for the new key")?;
            let _l = repo.lock(false, "key add", wait)?;
            let id = repo.add_key(pass.as_bytes())?;
            ctx.say(format!("added key {id}"));
        }
        KeyCommand::Remove { id } => {
            let repo = open(ctx, false)?;
            let _l = repo.lock(true, "key remove", wait)?;
            repo.remove_key(&id)?;
            ctx.say(format!("removed key {id}"));
        }
        KeyCommand::Passwd => {
            let repo = open(ctx, false)?;
            let old = repo
                .key_id
                .clone()
                .context("no key opened the repository")?;
            let pass = password::new("for this key")?;
            let _l = repo.lock(true, "key passwd", wait)?;
            let id = repo.add_key(pass.as_bytes())?;
            repo.remove_key(&old)?;
            ctx.say(format!(
                "changed the passphrase: key {old} was replaced by key {id}"
            ));
        }
        KeyCommand::Export => {
            let repo = open(ctx, false)?;
            let paper = repo.paper_key()?;
            print!("{}", paper.as_str());
            if !ctx.quiet {
                eprintln!(
                    "this is the master key of the repository: anyone holding it reads every \
                     backup. Keep it off the node (print it, store it in a safe); `mnbackup key \
                     add --from-paper-key < FILE` adds a passphrase with it"
                );
            }
        }
    }
    Ok(0)
}
