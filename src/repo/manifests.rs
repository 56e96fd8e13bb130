//! Manifests (`snapshots/<id>.json`) and the marker (`mnbackup-repo.json`): their encoding,
//! listing, loading, resolving, committing and removing.

use anyhow::{bail, Context, Result};

use super::{se, Repo, RepoConfig, FORMAT_V1, FORMAT_VERSION, MARKER_FORMAT, SNAPSHOTS};
use crate::error::{integrity, MnError};
use crate::model::{check_snapshot_id, Manifest, MAX_MANIFEST, MAX_PIECE};
use crate::store::StoreError;

const MANIFEST_HEADER: &str = "mnbackup-manifest";

fn manifest_key(id: &str) -> Result<String> {
    check_snapshot_id(id)?;
    Ok(format!("{SNAPSHOTS}/{id}.json"))
}

impl Repo {
    /// All snapshot ids, oldest first (ids sort by time).
    pub fn snapshot_ids(&self) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        let prefix = format!("{SNAPSHOTS}/");
        for (k, _) in self
            .store
            .list(&prefix)
            .map_err(se)
            .with_context(|| format!("listing {}/{SNAPSHOTS}", self.location()))?
        {
            let name = &k[prefix.len()..];
            if let Some(id) = name.strip_suffix(".json") {
                if !id.contains('.') && !id.contains('/') {
                    ids.push(id.to_string());
                }
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Whether snapshot `id` has a manifest (loadable or not).
    pub fn has_manifest(&self, id: &str) -> bool {
        manifest_key(id).is_ok_and(|k| !matches!(self.store.stat(&k), Err(StoreError::NotFound(_))))
    }

    /// Load and check one manifest.
    pub fn load_manifest(&self, id: &str) -> Result<Manifest> {
        let key = manifest_key(id)?;
        let bytes = match self.store.get(&key, MAX_MANIFEST) {
            Ok(b) => b,
            Err(StoreError::Refused(e)) => {
                return Err(crate::error::unsafe_content(format!(
                    "snapshot {id} is not used: its manifest {e}"
                )));
            }
            Err(e) => {
                return Err(se(e))
                    .with_context(|| format!("reading manifest {}/{key}", self.location()))
            }
        };
        let m = self.decode_manifest_file(&key, &bytes).map_err(|e| {
            match e.downcast_ref::<MnError>() {
                Some(MnError::Unsafe(msg)) => {
                    return crate::error::unsafe_content(format!(
                        "snapshot {id} is not used: {msg}"
                    ));
                }
                Some(MnError::Key(_)) => return e,
                _ => {}
            }
            integrity(format!(
                "the manifest of snapshot {id} is damaged: {e:#}. That snapshot cannot be \
                 used; other snapshots are not affected (`mnbackup verify` checks them)"
            ))
        })?;
        if m.id != id {
            return Err(crate::error::unsafe_content(format!(
                "snapshot {id} is not used: its manifest names itself `{}` (a manifest was \
                 copied or renamed by hand)",
                m.id.escape_debug()
            )));
        }
        Ok(m)
    }

    /// Load every manifest; damaged ones are returned as errors beside the good ones.
    pub fn load_all(&self) -> Result<Vec<std::result::Result<Manifest, (String, anyhow::Error)>>> {
        Ok(self
            .snapshot_ids()?
            .into_iter()
            .map(|id| self.load_manifest(&id).map_err(|e| (id, e)))
            .collect())
    }
    /// Resolve `latest`, a full id or a unique prefix of one.
    pub fn resolve(&self, spec: &str) -> Result<String> {
        let ids = self.snapshot_ids()?;
        if spec == "latest" || spec == "latest:safety" {
            return self.latest(&ids, spec == "latest:safety");
        }
        if ids.iter().any(|i| i == spec) {
            return Ok(spec.to_string());
        }
        let m: Vec<_> = ids.iter().filter(|i| i.starts_with(spec)).collect();
        match m.len() {
            1 => Ok(m[0].clone()),
            0 => Err(MnError::Usage(format!(
                "no snapshot `{spec}` in {}; `mnbackup list` shows the snapshots",
                self.location()
            ))
            .into()),
            n => Err(MnError::Usage(format!(
                "`{spec}` matches {n} snapshots; give more of the id (`mnbackup list`)"
            ))
            .into()),
        }
    }

    /// `latest` is the newest snapshot of this repository handle's host series ([`Repo::host`])
    /// of the node's own sources, never a safety snapshot that `restore --force` took of the
    /// target; `latest:safety` is the newest of those. When the host has no snapshot at all and
    /// a single other host has (a replaced node restoring), that host's newest is taken. A
    /// manifest that does not load is returned as it is, so its error is what the operator
    /// sees.
    fn latest(&self, ids: &[String], want_safety: bool) -> Result<String> {
        let mut others: Vec<(String, String)> = Vec::new();
        for id in ids.iter().rev() {
            let m = match self.load_manifest(id) {
                Ok(m) => m,
                Err(_) => return Ok(id.clone()),
            };
            // Binlog batches (trigger `binlog`, `ops::binlog`) are not snapshots.
            if m.trigger == "binlog" || (m.trigger == "safety") != want_safety {
                continue;
            }
            if m.host() == self.host {
                return Ok(id.clone());
            }
            if !others.iter().any(|(h, _)| h == m.host()) {
                others.push((m.host().to_string(), id.clone()));
            }
        }
        let what = if want_safety {
            "safety snapshot (restore --force takes one)"
        } else {
            "snapshot"
        };
        match others.as_slice() {
            [] => Err(MnError::Usage(if want_safety {
                format!("the repository at {} has no {what}", self.location())
            } else {
                format!(
                    "the repository at {} has no snapshots yet; take one with `mnbackup snapshot`",
                    self.location()
                )
            })
            .into()),
            [(h, id)] => {
                tracing::info!("host {} has no {what}; `latest` is host {h}'s", self.host);
                Ok(id.clone())
            }
            many => {
                let hosts: Vec<&str> = many.iter().map(|(h, _)| h.as_str()).collect();
                Err(MnError::Usage(format!(
                    "host {} has no {what} in {}; the hosts there are {}: give --host or a \
                     snapshot id (`mnbackup list`)",
                    self.host,
                    self.location(),
                    hosts.join(", ")
                ))
                .into())
            }
        }
    }

    /// Commit a new snapshot's manifest: the snapshot exists from the moment the write is
    /// durable. Written with "put if absent" (a hard link on a directory, `If-None-Match: *` on
    /// an object store): a manifest is never written over, whoever else writes that id.
    pub fn commit_manifest(&self, m: &Manifest) -> Result<u64> {
        let bytes = self.encode_manifest_file(m)?;
        let key = manifest_key(&m.id)?;
        put_new(&*self.store, &key, &bytes)
            .map_err(se)
            .with_context(|| format!("committing snapshot {} in {}", m.id, self.location()))?;
        Ok(bytes.len() as u64)
    }

    /// Rewrite an existing manifest (`repair`, under the exclusive lock).
    pub fn replace_manifest(&self, m: &Manifest) -> Result<u64> {
        let bytes = self.encode_manifest_file(m)?;
        self.store
            .put_replace(&manifest_key(&m.id)?, &bytes)
            .map_err(se)?;
        Ok(bytes.len() as u64)
    }

    /// The stored bytes of a manifest in this repository's format (v1: [`encode_manifest`]; v2:
    /// compressed and sealed under its key name, see `sealing.rs`).
    pub fn encode_manifest_file(&self, m: &Manifest) -> Result<Vec<u8>> {
        if self.config.version == FORMAT_V1 {
            return encode_manifest(m);
        }
        self.seal_manifest_body(&manifest_key(&m.id)?, &serde_json::to_vec(m)?)
    }

    /// Parse and check stored manifest bytes read from `key`.
    pub fn decode_manifest_file(&self, key: &str, bytes: &[u8]) -> Result<Manifest> {
        if self.config.version == FORMAT_V1 {
            return decode_manifest(bytes);
        }
        let body = self.open_manifest_body(key, bytes)?;
        let m: Manifest = serde_json::from_slice(&body).context("body is not a valid manifest")?;
        crate::repo::codec::validate_manifest(&m)?;
        Ok(m)
    }

    /// The key name of a snapshot's manifest (`snapshots/<id>.json`).
    pub fn manifest_key(id: &str) -> Result<String> {
        manifest_key(id)
    }

    /// Remove a manifest (forget). Durable on return.
    pub fn remove_manifest(&self, id: &str) -> Result<()> {
        let key = manifest_key(id)?;
        self.store
            .delete(&key)
            .map_err(se)
            .with_context(|| format!("removing {}/{key}", self.location()))
    }
}

/// Serialize a format v1 manifest: a header line with the format version and the BLAKE3 of the JSON body,
/// then the body.
pub fn encode_manifest(m: &Manifest) -> Result<Vec<u8>> {
    let body = serde_json::to_vec(m)?;
    let mut out = format!(
        "{MANIFEST_HEADER} v{FORMAT_V1} blake3={}\n",
        blake3::hash(&body).to_hex()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    Ok(out)
}

/// Parse and check a format v1 manifest file.
pub fn decode_manifest(bytes: &[u8]) -> Result<Manifest> {
    let nl = bytes
        .iter()
        .position(|&b| b == b'\n')
        .context("no header line")?;
    let header = std::str::from_utf8(&bytes[..nl]).context("header is not text")?;
    let mut parts = header.split(' ');
    if parts.next() != Some(MANIFEST_HEADER) {
        bail!("not a manifest header");
    }
    let version = parts.next().unwrap_or("");
    if version != format!("v{FORMAT_V1}") {
        bail!("unknown manifest version `{version}`");
    }
    let hash = parts
        .next()
        .and_then(|h| h.strip_prefix("blake3="))
        .context("no checksum in the header")?;
    let body = &bytes[nl + 1..];
    if blake3::hash(body).to_hex().as_str() != hash {
        bail!("checksum mismatch (the file was changed or truncated)");
    }
    let m: Manifest = serde_json::from_slice(body).context("body is not a valid manifest")?;
    crate::repo::codec::validate_manifest(&m)?;
    Ok(m)
}

/// Serialize the marker: the configuration's fields plus `checksum`, the BLAKE3 of the compact
/// JSON of the other fields.
pub fn encode_marker(c: &RepoConfig) -> Result<Vec<u8>> {
    let body = serde_json::to_vec(c)?;
    let mut v = serde_json::to_value(c)?;
    v["checksum"] = serde_json::Value::String(blake3::hash(&body).to_hex().to_string());
    Ok(serde_json::to_vec_pretty(&v)?)
}

/// Parse, checksum-check and validate a marker.
pub fn decode_marker(bytes: &[u8]) -> Result<RepoConfig> {
    let mut v: serde_json::Value = serde_json::from_slice(bytes).context("not valid JSON")?;
    let obj = v.as_object_mut().context("not a JSON object")?;
    if obj.get("format").and_then(|f| f.as_str()) != Some(MARKER_FORMAT) {
        return Err(
            MnError::NoRepo("the marker is not an mnbackup repository marker".into()).into(),
        );
    }
    let version = obj.get("version").and_then(|f| f.as_u64());
    if !version.is_some_and(|v| (FORMAT_V1 as u64..=FORMAT_VERSION as u64).contains(&v)) {
        return Err(MnError::Usage(format!(
            "the repository has format version {}, this mnbackup reads versions {FORMAT_V1} and \
             {FORMAT_VERSION}; use a matching mnbackup release",
            version
                .map(|v| v.to_string())
                .unwrap_or_else(|| "(none)".into())
        ))
        .into());
    }
    // A marker written before the checksum existed (every repository of the first release) has
    // none: it stays readable, and the validation below still refuses every unsafe value.
    let sum = match obj.remove("checksum") {
        Some(serde_json::Value::String(s)) => Some(s),
        None => None,
        Some(_) => bail!("its checksum is not a string"),
    };
    let c: RepoConfig = serde_json::from_value(v).context("its fields are not valid")?;
    if let Some(sum) = sum {
        let body = serde_json::to_vec(&c)?;
        if blake3::hash(&body).to_hex().as_str() != sum {
            bail!("checksum mismatch (a value was changed)");
        }
    }
    validate_marker(&c)?;
    Ok(c)
}

/// Check every field of the marker against what this build accepts.
pub fn validate_marker(c: &RepoConfig) -> Result<()> {
    use fastcdc::v2020 as cdc;
    if c.id.len() != 32
        || !c
            .id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(crate::error::unsafe_content(format!(
            "the repository id `{}` is not 32 lowercase hex digits",
            c.id.escape_debug()
        )));
    }
    let ok = (cdc::MINIMUM_MIN..=cdc::MINIMUM_MAX).contains(&c.chunk_min)
        && (cdc::AVERAGE_MIN..=cdc::AVERAGE_MAX).contains(&c.chunk_avg)
        && (cdc::MAXIMUM_MIN..=cdc::MAXIMUM_MAX).contains(&c.chunk_max)
        && c.chunk_min <= c.chunk_avg
        && c.chunk_avg <= c.chunk_max
        && (c.chunk_max as u64) <= MAX_PIECE;
    if !ok {
        return Err(crate::error::unsafe_content(format!(
            "the repository's chunk sizes (min {}, avg {}, max {}) are outside what this build \
             accepts (min {}..={}, avg {}..={}, max {}..={}, min <= avg <= max)",
            c.chunk_min,
            c.chunk_avg,
            c.chunk_max,
            cdc::MINIMUM_MIN,
            cdc::MINIMUM_MAX,
            cdc::AVERAGE_MIN,
            cdc::AVERAGE_MAX,
            cdc::MAXIMUM_MIN,
            cdc::MAXIMUM_MAX
        )));
    }
    Ok(())
}

/// Write a key that must not exist yet ("put if absent"). A key already holding exactly these
/// bytes is this writer's own earlier attempt (a retried request whose first try landed): fine.
/// Any other value there is refused.
pub fn put_new(
    store: &dyn crate::store::Backend,
    key: &str,
    bytes: &[u8],
) -> std::result::Result<(), StoreError> {
    if store.put_if_absent(key, bytes)? {
        return Ok(());
    }
    match store.get(key, bytes.len() as u64) {
        Ok(v) if v == bytes => Ok(()),
        Ok(_) | Err(StoreError::Refused(_)) => Err(StoreError::Permanent(format!(
            "{}/{key} exists already with other content; it is never written over",
            store.location()
        ))),
        Err(e) => Err(e),
    }
}
