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
/// Which optional columns `mysql.user` has on this server. MariaDB 5.5 has `Password`,
/// `plugin` and `authentication_string` but no `is_role` (roles came with 10.0.5); MySQL 5.7 has
/// no `Password` (5.7.6) and no `is_role`; MariaDB 10.4+ makes `mysql.user` a view over
/// `mysql.global_priv` that keeps `is_role`, `plugin` and `authentication_string`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserColumns {
    pub is_role: bool,
    pub password: bool,
    pub plugin: bool,
    pub authentication_string: bool,
}

impl UserColumns {
    /// From the lowercase column names of `mysql.user`.
    pub fn of(cols: &[String]) -> UserColumns {
        let has = |c: &str| cols.iter().any(|x| x == c);
        UserColumns {
            is_role: has("is_role"),
            password: has("password"),
            plugin: has("plugin"),
            authentication_string: has("authentication_string"),
        }
    }

    /// The select expression telling roles (`'Y'`) from users: no role exists where the column
    /// does not.
    pub fn role_expr(&self) -> &'static str {
        if self.is_role {
            "IF(is_role = 'Y', 'Y', 'N')"
        } else {
            "'N'"
        }
    }

    fn select_auth(&self) -> String {
        let col = |has: bool, c: &str| if has { c.to_string() } else { "''".to_string() };
        format!(
            "{}, {}, {}",
            col(self.password, "Password"),
            col(self.plugin, "plugin"),
            col(self.authentication_string, "authentication_string")
        )
    }
}

/// What follows `CREATE USER ` for an account of a server without `SHOW CREATE USER` (MariaDB
/// before 10.2), from its `mysql.user` row: the native password hash, or the plugin and its
/// string, or no authentication at all.
pub fn legacy_identified(target: &str, password: &str, plugin: &str, auth: &str) -> String {
    if !plugin.is_empty() && plugin != "mysql_native_password" && plugin != "mysql_old_password" {
        if auth.is_empty() {
            format!("{target} IDENTIFIED VIA {plugin}")
        } else {
            format!("{target} IDENTIFIED VIA {plugin} USING {}", quoted(auth))
        }
    } else {
        let hash = if password.is_empty() { auth } else { password };
        if hash.is_empty() {
            target.to_string()
        } else {
            format!("{target} IDENTIFIED BY PASSWORD {}", quoted(hash))
        }
    }
}

/// `SHOW CREATE USER`'s answer rebuilt for servers that lack it.
async fn legacy_create_user(
    conn: &mut Conn,
    cols: &UserColumns,
    user: &str,
    host: &str,
    addr: &str,
) -> Result<Option<String>> {
    let row: Option<(String, String, String)> = conn
        .query_first(format!(
            "SELECT {} FROM mysql.user WHERE User = {} AND Host = {}",
            cols.select_auth(),
            quoted(user),
            quoted(host)
        ))
        .await
        .map_err(|e| {
            explain(
                e,
                addr,
                "reading an account's password hash from mysql.user",
            )
        })?;
    Ok(row.map(|(p, plugin, auth)| {
        format!(
            "CREATE USER {}",
            legacy_identified(&account(user, host), &p, &plugin, &auth)
        )
    }))
}

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
    let cols: Vec<String> = conn
        .query(
            "SELECT LOWER(COLUMN_NAME) FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = 'mysql' AND TABLE_NAME = 'user'",
        )
        .await
        .map_err(|e| explain(e, addr, "listing the columns of mysql.user"))?;
    let cols = UserColumns::of(&cols);
    let rows: Vec<(String, String, String)> = conn
        .query(format!(
            "SELECT User, Host, {} FROM mysql.user ORDER BY User, Host",
            cols.role_expr()
        ))
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
        let mut create_sql = String::new();
        if is_role {
            create_sql.push_str(&format!("CREATE ROLE IF NOT EXISTS {target};\n"));
        } else {
            let create: Option<String> =
                match conn.query_first(format!("SHOW CREATE USER {target}")).await {
                    Ok(c) => c,
                    // No SHOW CREATE USER before MariaDB 10.2 (a syntax error, 1064): the
                    // statement is rebuilt from mysql.user.
                    Err(mysql_async::Error::Server(e)) if e.code == 1064 => {
                        legacy_create_user(conn, &cols, &user, &host, addr).await?
                    }
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
            create_sql.push_str(&format!("CREATE USER IF NOT EXISTS {rest};\n"));
            create_sql.push_str(&format!("ALTER USER {rest};\n"));
        }
        let lines: Vec<String> = match conn.query(format!("SHOW GRANTS FOR {target}")).await {
            Ok(l) => l,
            // The same account the server ignores, on a server without SHOW CREATE USER (5.5,
            // 10.0, 10.1): the rebuilt statement came from mysql.user, but the server has no
            // grants loaded for it (1141, ER_NONEXISTING_GRANT).
            Err(mysql_async::Error::Server(e)) if e.code == 1141 && !is_role => {
                ignored.push(format!(
                    "account {user}@{host} not backed up: the server ignores it ({})",
                    e.message
                ));
                continue;
            }
            Err(e) => return Err(explain(e, addr, &format!("SHOW GRANTS FOR {target}"))),
        };
        acc.push_str(&create_sql);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn names(s: &str) -> Vec<String> {
        s.split(',')
            .map(|c| c.trim().to_ascii_lowercase())
            .collect()
    }

    /// `mysql.user` columns as the servers define them (MariaDB 5.5 `scripts/mysql_system_tables.sql`,
    /// MySQL 5.7 `scripts/mysql_system_tables.sql`, the MariaDB 10.4+ `mysql.user` view); the
    /// privilege columns in between are left out.
    #[test]
    fn user_columns_of_old_and_new_servers() {
        let m55 = UserColumns::of(&names(
            "Host, User, Password, Select_priv, ssl_type, max_user_connections, plugin, authentication_string",
        ));
        assert_eq!(m55.role_expr(), "'N'");
        assert!(m55.password && m55.plugin && !m55.is_role);
        assert_eq!(m55.select_auth(), "Password, plugin, authentication_string");
        let my57 = UserColumns::of(&names(
            "Host, User, Select_priv, plugin, authentication_string, password_expired, password_last_changed, account_locked",
        ));
        assert_eq!(my57.role_expr(), "'N'");
        assert_eq!(my57.select_auth(), "'', plugin, authentication_string");
        let m1011 = UserColumns::of(&names(
            "Host, User, Password, Select_priv, plugin, authentication_string, password_expired, is_role, default_role, max_statement_time",
        ));
        assert_eq!(m1011.role_expr(), "IF(is_role = 'Y', 'Y', 'N')");
    }

    /// The accounts of a MariaDB 5.5 `mysql.user` (no `SHOW CREATE USER` there).
    #[test]
    fn create_user_of_a_55_account() {
        let t = account("zstack", "%");
        let hash = "*9D5FB7C4FA0A3E9A5C0D6B9C1E9E2D6F4B7C8A91";
        assert_eq!(
            legacy_identified(&t, hash, "", ""),
            format!("'zstack'@'%' IDENTIFIED BY PASSWORD '{hash}'")
        );
        assert_eq!(
            legacy_identified(&t, hash, "mysql_native_password", ""),
            format!("'zstack'@'%' IDENTIFIED BY PASSWORD '{hash}'")
        );
        assert_eq!(
            legacy_identified(&t, "", "unix_socket", ""),
            "'zstack'@'%' IDENTIFIED VIA unix_socket"
        );
        assert_eq!(
            legacy_identified(&t, "", "pam", "mariadb"),
            "'zstack'@'%' IDENTIFIED VIA pam USING 'mariadb'"
        );
        assert_eq!(legacy_identified(&t, "", "", ""), "'zstack'@'%'");
    }
}
