//! Format v1 → v2 in place (`mnbackup migrate`), the repository's side: the v2 handle the
//! objects and manifests are rewritten through, the staged manifests, and the switch.
//!
//! ```text
//! migrate/state.json        the v2 marker to be, and the key file wrapping its master key
//! migrate/<snapshot>.json   a manifest rewritten for v2 (sealed under its final key name)
//! ```
//! Until the marker is replaced, the repository is a complete v1 repository (v2 objects have
//! other names, so they sit beside the v1 ones unreferenced); after it, the staged manifests
//! replace the v1 ones. The state is written before the key file, so a rerun always finds the
//! master key its objects were sealed with.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::crypto::{self, KeyFile, MasterKey};
use super::{encode_marker, se, Repo, RepoConfig, FORMAT_V1, FORMAT_VERSION, KEYS};
use crate::model::{check_snapshot_id, Manifest, MAX_MANIFEST};
use crate::store::StoreError;

/// The directory of the migration's state.
pub const MIGRATE: &str = "migrate";
const STATE: &str = "migrate/state.json";

/// What a rerun needs to continue.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct State {
    marker: RepoConfig,
    /// The key file of the new master key (encrypted migration), its id.
    key: Option<(String, KeyFile)>,
}

fn staged_key(id: &str) -> Result<String> {
    check_snapshot_id(id)?;
    Ok(format!("{MIGRATE}/{id}.json"))
}

impl Repo {
    /// Whether a migration was started here and not finished.
    pub fn migration_started(&self) -> bool {
        self.store.stat(STATE).is_ok()
    }

    /// The format v2 handle a migration of this v1 repository writes through: from the state
    /// of an interrupted run (unlocked with `passphrase`), or a new one (a new master key when
    /// `passphrase` is given, wrapped in a key file; unencrypted otherwise). Small objects go
    /// into packs.
    pub fn migration_target(&self, passphrase: Option<&[u8]>) -> Result<Repo> {
        let state = match self.store.get(STATE, 1 << 20) {
            Ok(b) => serde_json::from_slice::<State>(&b)
                .context("migrate/state.json (of an interrupted migrate) is damaged")?,
            Err(StoreError::NotFound(_)) => self.new_migration(passphrase)?,
            Err(e) => return Err(se(e)),
        };
        if state.marker.id != self.config.id || state.marker.version != FORMAT_VERSION {
            return Err(crate::error::integrity(
                "migrate/state.json belongs to another repository or format; remove the \
                 migrate/ directory and run `mnbackup migrate` again",
            ));
        }
        let mut target = Repo::with_store(self.store.clone(), state.marker);
        target.host = self.host.clone();
        if let Some((id, file)) = state.key {
            let pass = passphrase.ok_or_else(|| {
                crate::error::MnError::Key(
                    "an interrupted migrate to an encrypted repository is continued with the \
                     same passphrase: give it (MNBACKUP_PASSWORD_FILE, password_file, \
                     password_command or MNBACKUP_PASSWORD)"
                        .into(),
                )
            })?;
            let key = format!("{KEYS}/{id}");
            if let Err(StoreError::NotFound(_)) = self.store.stat(&key) {
                self.store.ensure_dir(KEYS).map_err(se)?;
                self.store
                    .put_replace(&key, &serde_json::to_vec_pretty(&file)?)
                    .map_err(se)?;
            }
            match file.unwrap_key(pass, &self.config.id)? {
                Some(k) => target.use_master(k)?,
                None => {
                    return Err(crate::error::MnError::Key(
                        "wrong passphrase: the interrupted migrate was started with another one; \
                         give that one, or remove the migrate/ directory and keys/ and start again"
                            .into(),
                    )
                    .into())
                }
            }
            target.key_id = Some(id);
        }
        Ok(target)
    }

    fn new_migration(&self, passphrase: Option<&[u8]>) -> Result<State> {
        let mut marker = self.config.clone();
        marker.version = FORMAT_VERSION;
        marker.packs = true;
        marker.encryption = Some(crypto::NONE.into());
        marker.key_check = None;
        let mut key = None;
        if let Some(pass) = passphrase {
            if pass.is_empty() {
                return Err(crate::error::usage("an empty passphrase is refused"));
            }
            let k = MasterKey::random();
            marker.encryption = Some(crypto::XCHACHA.into());
            marker.key_check = Some(k.check_value(&marker.id));
            let file = KeyFile::wrap(&k, pass, &marker.id, &self.host)?;
            key = Some((hex::encode(rand::random::<[u8; 8]>()), file));
        }
        let state = State { marker, key };
        self.store.ensure_dir(MIGRATE).map_err(se)?;
        self.store
            .put_replace(STATE, &serde_json::to_vec_pretty(&state)?)
            .map_err(se)?;
        Ok(state)
    }

    /// The snapshots already rewritten (staged) by this migration.
    pub fn staged_manifests(&self) -> Result<Vec<String>> {
        if !self.store.has_dir(MIGRATE) {
            return Ok(Vec::new());
        }
        self.store.check_dir(MIGRATE).map_err(se)?;
        Ok(self
            .store
            .list(&format!("{MIGRATE}/"))
            .map_err(se)?
            .into_iter()
            .filter_map(|(k, _)| {
                if k == STATE {
                    return None;
                }
                let id = k.strip_prefix("migrate/")?.strip_suffix(".json")?;
                check_snapshot_id(id).ok().map(|_| id.to_string())
            })
            .collect())
    }

    /// Stage manifest `m` (its objects already written through this v2 handle).
    pub fn stage_manifest(&self, m: &Manifest) -> Result<()> {
        self.flush_packs()?;
        let bytes = self.encode_manifest_file(m)?;
        self.store
            .put_replace(&staged_key(&m.id)?, &bytes)
            .map_err(se)
    }

    /// The switch: the v2 marker replaces the v1 one (one atomic write). From here on the
    /// repository is v2 and [`Repo::finish_migration`] must run (a rerun of migrate does it).
    pub fn switch_marker(&self) -> Result<()> {
        self.store
            .put_replace(super::MARKER, &encode_marker(&self.config)?)
            .map_err(se)
    }

    /// After the switch: every staged manifest replaces its v1 manifest, then the state goes.
    /// Returns the number of manifests moved.
    pub fn finish_migration(&self) -> Result<usize> {
        let staged = self.staged_manifests()?;
        for id in &staged {
            let from = staged_key(id)?;
            let bytes = self.store.get(&from, MAX_MANIFEST).map_err(se)?;
            // Checked before it replaces anything: it must open as this repository's.
            let to = Self::manifest_key(id)?;
            self.decode_manifest_file(&to, &bytes)
                .with_context(|| format!("the staged manifest of snapshot {id} is damaged"))?;
            self.store.put_replace(&to, &bytes).map_err(se)?;
            self.store.delete(&from).map_err(se)?;
        }
        match self.store.delete(STATE) {
            Ok(()) | Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(se(e)),
        }
        Ok(staged.len())
    }

    /// Whether this handle is of format v1.
    pub fn is_v1(&self) -> bool {
        self.config.version == FORMAT_V1
    }
}
