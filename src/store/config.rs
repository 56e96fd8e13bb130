//! `[repository.s3]`: the settings an object-store backend needs (the configuration file's
//! section; it lives here so the store layer does not import the configuration).

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// `[repository.s3]`: how to reach an object store. The secret is never in this file nor on the
/// command line: it is read from `secret_access_key_file` or the environment variable named by
/// `secret_access_key_env` (default `AWS_SECRET_ACCESS_KEY`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObjectStoreConfig {
    /// `https://rgw.example:7480`; default: the service's own (AWS: from the region), or the
    /// `AWS_ENDPOINT_URL` environment variable.
    pub endpoint: Option<String>,
    /// Default `us-east-1` (what RGW and MinIO accept), or `AWS_REGION`.
    pub region: Option<String>,
    /// Default: the `AWS_ACCESS_KEY_ID` environment variable.
    pub access_key_id: Option<String>,
    /// A file holding the secret key (mode 0600). For `sftp://`: the private key file.
    pub secret_access_key_file: Option<PathBuf>,
    /// The environment variable holding the secret key (when no file is given).
    pub secret_access_key_env: String,
    /// Path-style addressing (`endpoint/bucket/key`), as Ceph RGW and MinIO want. Default true.
    pub path_style: bool,
    /// Commit with a conditional PUT (`If-None-Match: *`): true, false, or unset to use it where
    /// the service supports it. False: a HEAD before and a read-after-write check after.
    pub conditional_put: Option<bool>,
    /// Retries of a transiently failing request (exponential backoff with jitter).
    pub retries: usize,
    /// Timeout of one request, in seconds.
    pub timeout_seconds: u64,
}

impl Default for ObjectStoreConfig {
    fn default() -> Self {
        ObjectStoreConfig {
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key_file: None,
            secret_access_key_env: "AWS_SECRET_ACCESS_KEY".into(),
            path_style: true,
            conditional_put: None,
            retries: 6,
            timeout_seconds: 120,
        }
    }
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl ObjectStoreConfig {
    pub fn endpoint(&self) -> Result<Option<String>> {
        Ok(self
            .endpoint
            .clone()
            .or_else(|| env_nonempty("AWS_ENDPOINT_URL")))
    }

    pub fn region(&self) -> String {
        self.region
            .clone()
            .or_else(|| env_nonempty("AWS_REGION"))
            .unwrap_or_else(|| "us-east-1".into())
    }

    pub fn access_key_id(&self) -> Result<Option<String>> {
        Ok(self
            .access_key_id
            .clone()
            .or_else(|| env_nonempty("AWS_ACCESS_KEY_ID")))
    }

    /// The secret key: from the file (first line), else the environment variable; None when
    /// neither is set (anonymous access, or an sftp key file).
    pub fn secret(&self) -> Result<Option<String>> {
        if let Some(f) = &self.secret_access_key_file {
            let s = std::fs::read_to_string(f).with_context(|| {
                format!(
                    "reading [repository.s3] secret_access_key_file {}",
                    f.display()
                )
            })?;
            return Ok(s.lines().next().map(|l| l.trim().to_string()));
        }
        Ok(env_nonempty(&self.secret_access_key_env))
    }

    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.timeout_seconds.max(1))
    }
}
