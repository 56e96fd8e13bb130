//! Application accounts: `CREATE USER` with the password hash (loaded first, so definers exist)
//! and their grants (loaded last, when the objects they name exist).

use anyhow::Result;
use mysql_async::prelude::*;
use mysql_async::Conn;

use super::errors::explain;
use super::sqlfmt::{header, quoted};

/// Accounts never dumped: the server's internal ones (`mariadb.sys`, `mysql`, the `PUBLIC`
/// role, anonymous users) and the distribution's maintenance accounts, whose passwords live in
/// the target's own files. Every other account is dumped, `root` included: ZStack's
/// `deploydb.sh` creates `root@'%'`, `root@'127.0.0.1'` and `root@<management IP>` and a rebuilt
/// node needs them (restore keeps the target's own `root@localhost` unless asked otherwise).
pub fn is_system_account(user: &str) -> bool {
    matches!(
        user,
        "mariadb.sys" | "mysql" | "PUBLIC" | "" | "debian-sys-maint" | "healthcheck"
    ) || user.starts_with("mysql.")
}

/// Whether `user@host` is the server's local administrator, `root@localhost`.
pub fn is_local_root(user: &str, host: &str) -> bool {
    user == "root" && host.eq_ignore_ascii_case("localhost")
}

fn account(user: &str, host: &str) -> String {
    format!("{}@{}", quoted(user), quoted(host))
}

/// The accounts item and the grants item.
pub struct Accounts {
    pub accounts_sql: Vec<u8>,
    pub grants_sql: Vec<u8>,
    /// `user@host` of every account dumped.
    pub names: Vec<String>,
    /// Accounts in mysql.user that the running server ignores (e.g. host names under
    /// `skip-name-resolve`), with why: not dumped.
    pub ignored: Vec<String>,
}

/// Dump every non-system account and role.
pub async fn dump_accounts(conn: &mut Conn, addr: &str) -> Result<Accounts> {
    let rows: Vec<(String, String, String)> = conn
        .query("SELECT User, Host, IF(is_role = 'Y', 'Y', 'N') FROM mysql.user ORDER BY User, Host")
        .await
        .map_err(|e| explain(e, addr, "listing accounts (SELECT on mysql.user)"))?;
    let mut acc = header(
        "accounts (CREATE USER / CREATE ROLE; grants are in the grants item)",
        None,
    );
    let mut grants = header("grants of the accounts", None);
    let mut names = Vec::new();
    let mut ignored = Vec::new();
    for (user, host, is_role) in rows {
        if is_system_account(&user) {
            continue;
        }
        let is_role = is_role == "Y";
        let target = if is_role {
            quoted(&user)
        } else {
            account(&user, &host)
        };
        if is_role {
            acc.push_str(&format!("CREATE ROLE IF NOT EXISTS {target};\n"));
        } else {
            let create: Option<String> =
                match conn.query_first(format!("SHOW CREATE USER {target}")).await {
                    Ok(c) => c,
                    // In mysql.user but not loaded by the server (a host name under
                    // skip-name-resolve): nobody can log in with it.
                    Err(mysql_async::Error::Server(e)) if e.code == 1133 => {
                        ignored.push(format!(
                            "account {user}@{host} not backed up: the server ignores it ({})",
                            e.message
                        ));
                        continue;
                    }
                    Err(e) => return Err(explain(e, addr, &format!("SHOW CREATE USER {target}"))),
                };
            let Some(create) = create else { continue };
            // Created when missing, then set to the recorded password hash and options; never
            // `CREATE OR REPLACE`, which would strip the privileges of the very account a
            // restore session may be using (root, or root@'%' of a ZStack node).
            let rest = create.strip_prefix("CREATE USER ").unwrap_or(&create);
            acc.push_str(&format!("CREATE USER IF NOT EXISTS {rest};\n"));
            acc.push_str(&format!("ALTER USER {rest};\n"));
        }
        let lines: Vec<String> = conn
            .query(format!("SHOW GRANTS FOR {target}"))
            .await
            .map_err(|e| explain(e, addr, &format!("SHOW GRANTS FOR {target}")))?;
        for g in lines {
            grants.push_str(&format!("{g};\n"));
        }
        names.push(format!("{user}@{host}"));
    }
    Ok(Accounts {
        accounts_sql: acc.into_bytes(),
        grants_sql: grants.into_bytes(),
        names,
        ignored,
    })
}
