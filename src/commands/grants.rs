//! `mnbackup grants`: print the `CREATE USER` + `GRANT` script of a dedicated backup account for
//! the configured server's version (connecting with the configured credentials to read it).

use anyhow::Result;
use mysql_async::prelude::*;

use super::Ctx;
use crate::engines::mariadb::consistency::ServerVersion;
use crate::engines::mariadb::privileges;
use crate::error::usage;

pub fn run(ctx: &Ctx, user: &str, host: &str, server_version: Option<&str>) -> Result<i32> {
    let version = match server_version {
        Some(v) => v.to_string(),
        None => {
            let Some(cfg) = &ctx.config.mariadb else {
                return Err(usage(
                    "no [mariadb] section: mnbackup grants reads the server's version from it \
                     (or give --server-version, e.g. --server-version 10.3.39-MariaDB)",
                ));
            };
            let rt = super::restore::runtime()?;
            rt.block_on(async {
                let params = cfg.resolve()?;
                let mut c = crate::engines::mariadb::connect(
                    &params.opts()?,
                    &params,
                    "reading the server version",
                )
                .await?;
                let v: Option<String> = c.query_first("SELECT VERSION()").await?;
                c.disconnect().await.ok();
                anyhow::Ok(v.unwrap_or_default())
            })
            .map_err(|e| {
                e.context(
                    "mnbackup grants cannot read the server version with the configured \
                     credentials (give --server-version to print the script anyway)",
                )
            })?
        }
    };
    let v = ServerVersion::parse(&version);
    let script = privileges::backup_user_script(user, host, &v);
    if ctx.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "server_version": version, "user": user, "host": host, "script": script
            }))?
        );
    } else {
        print!("{script}");
    }
    Ok(0)
}
