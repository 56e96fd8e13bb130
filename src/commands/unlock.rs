//! `mnbackup unlock`: remove stale locks.

use anyhow::Result;

use super::Ctx;

pub fn run(ctx: &Ctx, all: bool) -> Result<i32> {
    let repo = ctx.open_repo()?;
    let removed: Vec<_> = repo
        .remove_locks(all)?
        .into_iter()
        .map(|(k, i)| (format!("{}/{k}", repo.location()), i))
        .collect();
    if ctx.json {
        let v: Vec<_> = removed
            .iter()
            .map(|(p, i)| serde_json::json!({"file": p, "lock": i}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if removed.is_empty() {
        ctx.say("no stale locks");
    } else {
        for (p, info) in &removed {
            match info {
                Some(i) => ctx.say(format!(
                    "removed lock of `{}` (pid {} on {}, last heartbeat {})",
                    i.command, i.pid, i.host, i.heartbeat
                )),
                None => ctx.say(format!("removed unreadable lock file {p}")),
            }
        }
    }
    Ok(0)
}
