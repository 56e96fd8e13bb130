//! Key files (`keys/<id>`, format v2 encrypted): unlocking with a passphrase or a paper key,
//! adding, listing and removing keys (restic's `key` model: one master key, any number of key
//! files wrapping it, never fewer than one).

use std::sync::Arc;

use anyhow::{Context, Result};

use super::crypto::{self, KeyFile, MasterKey};
use super::sealing::Sealing;
use super::{se, Repo, KEYS};
use crate::error::MnError;
use crate::store::StoreError;

/// The largest key file read.
const MAX_KEY_FILE: u64 = 64 << 10;

fn key_key(id: &str) -> Result<String> {
    if id.len() != 16
        || !id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return Err(crate::error::usage(format!(
            "`{}` is not a key id (16 hex digits; `mnbackup key list` shows them)",
            id.escape_debug()
        )));
    }
    Ok(format!("{KEYS}/{id}"))
}

impl Repo {
    fn master(&self) -> Result<&Arc<MasterKey>> {
        match &self.sealing {
            Sealing::Key(k) => Ok(k),
            _ => Err(crate::error::usage(format!(
                "the repository at {} is not encrypted (or not unlocked): it has no keys",
                self.location()
            ))),
        }
    }

    /// The key files: id and content (or why it does not load), by id.
    pub fn list_keys(&self) -> Result<Vec<(String, Result<KeyFile>)>> {
        if !self.store.has_dir(KEYS) {
            return Ok(Vec::new());
        }
        self.store.check_dir(KEYS).map_err(se)?;
        let mut out = Vec::new();
        for (k, _) in self.store.list(&format!("{KEYS}/")).map_err(se)? {
            let id = k[KEYS.len() + 1..].to_string();
            if key_key(&id).is_err() {
                continue;
            }
            let f = self
                .store
                .get(&k, MAX_KEY_FILE)
                .map_err(se)
                .and_then(|b| serde_json::from_slice::<KeyFile>(&b).context("not a key file"));
            out.push((id, f));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Unlock an encrypted repository with a passphrase: every key file is tried. A passphrase
    /// that opens none is refused (exit 11). Returns the id of the key that opened.
    pub fn unlock(&mut self, passphrase: &[u8]) -> Result<String> {
        if !matches!(self.sealing, Sealing::Locked | Sealing::Key(_)) {
            return Ok(String::new());
        }
        let keys = self.list_keys()?;
        if keys.is_empty() {
            return Err(crate::error::integrity(format!(
                "the encrypted repository at {} has no key files ({KEYS}/ is empty or missing): \
                 without a key nothing can be read. Restore {KEYS}/ from a copy, or add a key \
                 from a paper key (`mnbackup key add --from-paper-key`)",
                self.location()
            )));
        }
        for (id, f) in keys {
            let Ok(f) = f else { continue };
            match f.unwrap_key(passphrase, &self.config.id) {
                Ok(Some(k)) => {
                    self.use_master(k)?;
                    self.key_id = Some(id.clone());
                    return Ok(id);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("key file {KEYS}/{id} is not usable: {e:#}"),
            }
        }
        Err(MnError::Key(format!(
            "wrong passphrase: no key of the repository at {} opens with it. Check the \
             passphrase source (MNBACKUP_PASSWORD_FILE, [repository] password_file or \
             password_command, the systemd credential, MNBACKUP_PASSWORD); if every passphrase \
             is lost, add one from the paper key (`mnbackup key add --from-paper-key`)",
            self.location()
        ))
        .into())
    }

    /// Unlock with the master key itself (a paper key), checked against the marker.
    pub fn use_master(&mut self, k: MasterKey) -> Result<()> {
        if self.config.key_check.as_deref() != Some(k.check_value(&self.config.id).as_str()) {
            return Err(MnError::Key(format!(
                "the key is not the master key of the repository at {}",
                self.location()
            ))
            .into());
        }
        self.sealing = Sealing::Key(Arc::new(k));
        Ok(())
    }

    /// Add a key file wrapping the master key with `passphrase`; returns its id.
    pub fn add_key(&self, passphrase: &[u8]) -> Result<String> {
        if passphrase.is_empty() {
            return Err(crate::error::usage("an empty passphrase is refused"));
        }
        let master = self.master()?;
        let f = KeyFile::wrap(master, passphrase, &self.config.id, &self.host)?;
        let id = hex::encode(rand::random::<[u8; 8]>());
        self.store.ensure_dir(KEYS).map_err(se)?;
        let ok = self
            .store
            .put_if_absent(&key_key(&id)?, &serde_json::to_vec_pretty(&f)?)
            .map_err(se)?;
        if !ok {
            anyhow::bail!("key id {id} exists already (try again)");
        }
        Ok(id)
    }

    /// Remove a key file; the last one is never removed (losing every key loses every backup).
    pub fn remove_key(&self, id: &str) -> Result<()> {
        let key = key_key(id)?;
        let keys = self.list_keys()?;
        if !keys.iter().any(|(k, _)| k == id) {
            return Err(crate::error::usage(format!(
                "no key {id} in {} (`mnbackup key list`)",
                self.location()
            )));
        }
        let usable = keys.iter().filter(|(k, f)| k != id && f.is_ok()).count();
        if usable == 0 {
            return Err(crate::error::usage(format!(
                "key {id} is the last key of {}: removing it would make every backup \
                 unreadable; add another key first (`mnbackup key add`)",
                self.location()
            )));
        }
        match self.store.delete(&key) {
            Ok(()) | Err(StoreError::NotFound(_)) => Ok(()),
            Err(e) => Err(se(e)),
        }
    }

    /// The printable paper key of the master key (`key export`).
    pub fn paper_key(&self) -> Result<zeroize::Zeroizing<String>> {
        Ok(crypto::paper_key(self.master()?, &self.config.id))
    }
}
