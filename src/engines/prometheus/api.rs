//! The two requests a backup makes to Prometheus: the admin API's TSDB snapshot and the build
//! info (for the manifest).

use std::time::Duration;

use serde::Deserialize;

/// Why a snapshot could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The admin API is not there: Prometheus runs without `--web.enable-admin-api` (it answers
    /// "admin APIs disabled", HTTP 500 or 503), a proxy forbids it (403, 404), or nothing listens at the URL
    /// (connection refused). The backup falls back to copying the complete blocks.
    #[error("the Prometheus admin API is not available at {url}: {reason}")]
    Unavailable { url: String, reason: String },
    /// Anything else (a timeout, a server error, an answer that is not Prometheus'): the
    /// source fails, the fallback would hide a real problem.
    #[error("the Prometheus snapshot request to {url} failed: {reason}")]
    Failed { url: String, reason: String },
}

/// A client of one Prometheus server.
pub struct AdminApi {
    base: String,
    agent: ureq::Agent,
}

#[derive(Deserialize)]
struct Envelope<T> {
    status: String,
    data: Option<T>,
    error: Option<String>,
}

#[derive(Deserialize)]
struct SnapshotData {
    name: String,
}

#[derive(Deserialize)]
struct BuildInfo {
    version: String,
}

impl AdminApi {
    pub fn new(url: &str, timeout: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build()
            .into();
        AdminApi {
            base: url.trim_end_matches('/').to_string(),
            agent,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `POST /api/v1/admin/tsdb/snapshot` (head included): the name of the new directory
    /// under `<data_dir>/snapshots/`.
    pub fn snapshot(&self) -> Result<String, SnapshotError> {
        let url = self.url("/api/v1/admin/tsdb/snapshot");
        let failed = |reason: String| SnapshotError::Failed {
            url: url.clone(),
            reason,
        };
        let unavailable = |reason: String| SnapshotError::Unavailable {
            url: url.clone(),
            reason,
        };
        let mut resp = match self.agent.post(&url).send_empty() {
            Ok(r) => r,
            Err(ureq::Error::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Err(unavailable(format!(
                    "connection refused ({e}); is Prometheus running?"
                )))
            }
            Err(ureq::Error::ConnectionFailed) => {
                return Err(unavailable("connection refused".into()))
            }
            Err(e) => return Err(failed(e.to_string())),
        };
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| failed(format!("HTTP {status}, reading the answer: {e}")))?;
        let parsed = serde_json::from_str::<Envelope<SnapshotData>>(&body);
        let said = match &parsed {
            Ok(Envelope {
                error: Some(err), ..
            }) => err.clone(),
            _ => body.chars().take(200).collect(),
        };
        match status {
            200 => {}
            403 | 404 => return Err(unavailable(format!("HTTP {status}: {said}"))),
            // 2.42 answers 500 (`errorType: unavailable`), later releases 503.
            _ if said.contains("admin APIs disabled") => {
                return Err(unavailable(format!(
                    "HTTP {status}: {said} (Prometheus runs without --web.enable-admin-api)"
                )))
            }
            _ => return Err(failed(format!("HTTP {status}: {said}"))),
        }
        match parsed {
            Ok(Envelope {
                status,
                data: Some(d),
                ..
            }) if status == "success" && is_snapshot_name(&d.name) => Ok(d.name),
            _ => Err(failed(format!("unexpected answer: {said}"))),
        }
    }

    /// The server's version, None when it does not say.
    pub fn version(&self) -> Option<String> {
        let mut resp = self
            .agent
            .get(self.url("/api/v1/status/buildinfo"))
            .call()
            .ok()?;
        if resp.status().as_u16() != 200 {
            return None;
        }
        let env: Envelope<BuildInfo> = resp.body_mut().read_json().ok()?;
        env.data.map(|d| d.version)
    }
}

/// A snapshot directory name as Prometheus makes them (`20231204T101112Z-1a2b3c4d5e6f7a8b`):
/// never a path, so joining it to the snapshots directory stays inside it.
fn is_snapshot_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names_are_plain() {
        assert!(is_snapshot_name("20171210T211224Z-2be650b6d019eb54"));
        assert!(!is_snapshot_name("../../etc"));
        assert!(!is_snapshot_name(""));
        assert!(!is_snapshot_name("a/b"));
    }

    #[test]
    fn nothing_listening_is_unavailable() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let api = AdminApi::new(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(5));
        match api.snapshot() {
            Err(SnapshotError::Unavailable { reason, .. }) => {
                assert!(reason.contains("refused"), "{reason}")
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
        assert_eq!(api.version(), None);
    }
}
