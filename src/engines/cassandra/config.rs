use std::fs;
use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};

use super::plan::CassandraRestoreConfig;
use super::sstable::is_valid_name;
use super::tool::{split_command_line, JmxPassword, Nodetool};
use crate::error::MnError;

/// A command given in the configuration either as one string (`"nodetool"`,
/// `"/opt/cassandra/bin/nodetool -Dcom.sun.jndi.rmiURLParsing=legacy"`, split like a shell
/// would, without expansions) or as a list of words.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum CommandLine {
    Line(String),
    Argv(Vec<String>),
}

impl CommandLine {
    /// Program and arguments.
    pub fn argv(&self) -> Vec<String> {
        match self {
            CommandLine::Line(s) => split_command_line(s),
            CommandLine::Argv(v) => v.clone(),
        }
    }
}

/// `[cassandra]`: back up the local Cassandra node.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CassandraConfig {
    /// The node's `data_file_directories` (cassandra.yaml).
    pub data_dirs: Vec<PathBuf>,
    /// How to run nodetool: a path or a command with arguments.
    pub nodetool: CommandLine,
    /// JMX host (nodetool `-h`); unset uses nodetool's default, 127.0.0.1.
    pub host: Option<String>,
    /// JMX port (nodetool `-p`).
    pub port: u16,
    /// JMX user, when JMX authentication is on.
    pub jmx_user: Option<String>,
    /// Name of an environment variable holding the JMX password.
    pub jmx_password_env: Option<String>,
    /// A file holding the JMX password, or a JMX password file (`<user> <password>` lines).
    pub jmx_password_file: Option<PathBuf>,
    /// Keyspaces to back up; unset: every keyspace found in `data_dirs` except Cassandra's own
    /// (`system*`, `dse_*`).
    pub keyspaces: Option<Vec<String>>,
    /// Run `nodetool flush` per keyspace before the snapshot.
    pub flush: bool,
    /// cqlsh command (with host, `-u`, … as needed): the backup stores each keyspace's
    /// `DESCRIBE KEYSPACE` through it, the restore creates missing keyspaces and tables with it.
    pub cqlsh: Option<CommandLine>,
    /// Owner of restored files (skipped when the user does not exist).
    pub owner: Option<String>,
    /// Restore with `nodetool import` (Cassandra 4.0+) instead of placing the files in the live
    /// table directory and running `nodetool refresh`.
    pub import: bool,
    /// Seconds a nodetool or cqlsh command may run before it is killed (with its children) and
    /// the backup or restore of Cassandra fails naming it.
    pub command_timeout_seconds: u64,
}

impl Default for CassandraConfig {
    fn default() -> Self {
        CassandraConfig {
            data_dirs: vec![PathBuf::from("/var/lib/cassandra/data")],
            nodetool: CommandLine::Line("nodetool".to_string()),
            host: None,
            port: 7199,
            jmx_user: None,
            jmx_password_env: None,
            jmx_password_file: None,
            keyspaces: None,
            flush: true,
            cqlsh: None,
            owner: Some("cassandra".to_string()),
            import: false,
            command_timeout_seconds: super::tool::DEFAULT_COMMAND_TIMEOUT_SECS,
        }
    }
}

impl CassandraConfig {
    /// Check the configuration without running anything.
    pub fn validate(&self) -> Result<()> {
        if self.data_dirs.is_empty() {
            return Err(MnError::Usage(
                "[cassandra] data_dirs is empty; give the node's data_file_directories \
                 (default /var/lib/cassandra/data)"
                    .into(),
            )
            .into());
        }
        if self.command_timeout_seconds == 0 {
            return Err(MnError::Usage(
                "[cassandra] command_timeout_seconds is 0; give the seconds a nodetool or cqlsh \
                 command may take (default 600)"
                    .into(),
            )
            .into());
        }
        if self.nodetool.argv().is_empty() {
            return Err(MnError::Usage("[cassandra] nodetool is empty".into()).into());
        }
        if self.jmx_password_env.is_some() && self.jmx_password_file.is_some() {
            return Err(MnError::Usage(
                "[cassandra] sets both jmx_password_env and jmx_password_file; keep one".into(),
            )
            .into());
        }
        if (self.jmx_password_env.is_some() || self.jmx_password_file.is_some())
            && self.jmx_user.is_none()
        {
            return Err(MnError::Usage(
                "[cassandra] has a JMX password but no jmx_user; nodetool needs both".into(),
            )
            .into());
        }
        if let Some(list) = &self.keyspaces {
            for ks in list {
                if !is_valid_name(ks) {
                    return Err(MnError::Usage(format!(
                        "[cassandra] keyspaces: {ks:?} is not a Cassandra keyspace name \
                         ([A-Za-z0-9_])"
                    ))
                    .into());
                }
            }
        }
        Ok(())
    }

    /// How to run nodetool, with the JMX password resolved (never placed on a command line).
    pub fn nodetool(&self) -> Result<Nodetool> {
        self.validate()?;
        let password = if let Some(var) = &self.jmx_password_env {
            match std::env::var(var) {
                Ok(v) if !v.is_empty() => Some(JmxPassword::Value(v)),
                _ => {
                    return Err(MnError::Usage(format!(
                        "[cassandra] jmx_password_env names {var}, but that environment variable \
                         is not set (or empty) in mnbackup's environment"
                    ))
                    .into())
                }
            }
        } else if let Some(path) = &self.jmx_password_file {
            let text = fs::read_to_string(path).with_context(|| {
                format!(
                    "reading the JMX password file {} ([cassandra] jmx_password_file)",
                    path.display()
                )
            })?;
            let user = self.jmx_user.as_deref().unwrap_or("");
            let jmx_format = text.lines().any(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.len() == 2 && w[0] == user
            });
            if jmx_format {
                Some(JmxPassword::PasswordFile(path.clone()))
            } else {
                let pw = text.trim_end_matches(['\r', '\n']).to_string();
                if pw.is_empty() {
                    return Err(MnError::Usage(format!(
                        "the JMX password file {} is empty",
                        path.display()
                    ))
                    .into());
                }
                Some(JmxPassword::Value(pw))
            }
        } else {
            None
        };
        Ok(Nodetool {
            argv: self.nodetool.argv(),
            host: self.host.clone(),
            port: Some(self.port),
            user: self.jmx_user.clone(),
            password,
        })
    }

    /// The restore's configuration: into `data_dir` (default: the first of `data_dirs`).
    pub fn restore_config(&self, data_dir: Option<PathBuf>) -> Result<CassandraRestoreConfig> {
        let nodetool = self.nodetool()?; // validates: data_dirs is not empty
        super::tool::set_command_timeout(self.command_timeout_seconds);
        let data_dir = match data_dir.or_else(|| self.data_dirs.first().cloned()) {
            Some(d) => d,
            None => {
                return Err(MnError::Usage(
                    "[cassandra] data_dirs is empty; give the node's data_file_directories \
                     (default /var/lib/cassandra/data)"
                        .into(),
                )
                .into())
            }
        };
        let mut rc = CassandraRestoreConfig::new(data_dir, nodetool);
        rc.cqlsh = self.cqlsh.as_ref().map(|c| c.argv());
        rc.owner = self.owner.clone();
        rc.use_import = self.import;
        Ok(rc)
    }
}

/// Parse a `[cassandra]` table (for tests and `config check`).
pub fn parse_config(toml_text: &str) -> Result<CassandraConfig> {
    toml::from_str(toml_text).map_err(|e| anyhow!("invalid [cassandra] configuration: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_unknown_keys() {
        let c = parse_config("").unwrap();
        assert_eq!(c.data_dirs, vec![PathBuf::from("/var/lib/cassandra/data")]);
        assert_eq!(c.port, 7199);
        assert!(c.flush);
        assert_eq!(c.nodetool.argv(), vec!["nodetool"]);
        let c = parse_config(
            "nodetool = \"/opt/cassandra/bin/nodetool -Dx=1\"\nkeyspaces = [\"kairosdb\"]\n\
             cqlsh = [\"cqlsh\", \"127.0.0.1\"]\nflush = false",
        )
        .unwrap();
        assert_eq!(
            c.nodetool.argv(),
            vec!["/opt/cassandra/bin/nodetool", "-Dx=1"]
        );
        assert_eq!(c.cqlsh.unwrap().argv(), vec!["cqlsh", "127.0.0.1"]);
        assert!(!c.flush);
        let e = parse_config("nodetol = \"x\"").unwrap_err();
        assert!(format!("{e:#}").contains("nodetol"), "{e:#}");
    }

    #[test]
    fn password_needs_user_and_stays_off_argv() {
        let c = CassandraConfig {
            jmx_password_env: Some("MNB_TEST_UNSET_VAR_XYZ".into()),
            ..Default::default()
        };
        assert!(c.nodetool().is_err());
        std::env::set_var("MNB_TEST_JMX_PW_1", "s3cret");
        let c = CassandraConfig {
            jmx_user: Some("cassandra".into()),
            jmx_password_env: Some("MNB_TEST_JMX_PW_1".into()),
            ..Default::default()
        };
        let nt = c.nodetool().unwrap();
        assert!(!format!("{nt:?}").contains("s3cret"));
        assert!(!nt.argv.iter().any(|a| a.contains("s3cret")));
    }
}
