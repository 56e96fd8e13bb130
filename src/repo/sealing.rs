//! How object bytes and manifest bytes are produced and checked, per format:
//!
//! - v1: object file = `MNBO` 1 type payload, id = BLAKE3 of the file; manifest = header line
//!   with the BLAKE3 of the JSON body, then the body.
//! - v2: id = keyed BLAKE3 (the id key) of the type byte and the plain payload. Object file =
//!   `MNBO` 2 type, then (encrypted) the payload sealed with XChaCha20-Poly1305, associated
//!   data = the 6 header bytes and the id; (unencrypted) the payload. Manifest file = `MNBM` 2
//!   `X`|`N`, then (X) zstd(JSON) sealed, associated data = the header and the manifest's key
//!   name; (N) the keyed BLAKE3 of header, key name and zstd(JSON), then zstd(JSON).
//!
//! The tag is checked before anything is decompressed; the id after decryption. The functions
//! here are the only place that turns a payload into stored bytes and back.

use std::io::Read;
use std::sync::Arc;

use anyhow::Result;

use super::crypto::{self, MasterKey};
use super::{ObjectType, Repo, RepoConfig, FORMAT_V1, KEYS, OBJECT_MAGIC};
use crate::error::{integrity, MnError};
use crate::model::MAX_MANIFEST;
use crate::store::Backend;

const MANIFEST_MAGIC: &[u8; 4] = b"MNBM";

/// How a repository handle seals (see the module documentation).
#[derive(Clone)]
pub enum Sealing {
    V1,
    /// v2 unencrypted, with the id key derived from the repository id.
    Plain([u8; 32]),
    /// v2 encrypted, not unlocked: nothing can be read or written.
    Locked,
    /// v2 encrypted and unlocked.
    Key(Arc<MasterKey>),
}

impl std::fmt::Debug for Sealing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Sealing::V1 => "V1",
            Sealing::Plain(_) => "Plain",
            Sealing::Locked => "Locked",
            Sealing::Key(_) => "Key(..)",
        })
    }
}

impl Sealing {
    pub(crate) fn for_config(c: &RepoConfig) -> Sealing {
        if c.version == FORMAT_V1 {
            Sealing::V1
        } else if c.encryption.as_deref() == Some(crypto::NONE) {
            Sealing::Plain(crypto::plain_id_key(&c.id))
        } else {
            Sealing::Locked
        }
    }
}

/// Check the marker's encryption field: v1 has none; v2 says `none` or `xchacha20poly1305`. A v2
/// marker saying `none` while key files exist is refused: someone with write access to the pool
/// changed it to make the node write in the clear.
pub(crate) fn check_marker_encryption(store: &Arc<dyn Backend>, c: &RepoConfig) -> Result<()> {
    let loc = store.location();
    match (c.version, c.encryption.as_deref()) {
        (FORMAT_V1, None) => Ok(()),
        (FORMAT_V1, Some(_)) => Err(crate::error::unsafe_content(format!(
            "the marker of {loc} is format v1 but names an encryption; refusing to use it"
        ))),
        (_, Some(crypto::XCHACHA)) if c.key_check.is_some() => Ok(()),
        (_, Some(crypto::NONE)) => {
            let keys =
                store.has_dir(KEYS) && store.list(&format!("{KEYS}/")).is_ok_and(|l| !l.is_empty());
            if keys {
                return Err(crate::error::unsafe_content(format!(
                    "the marker of {loc} says the repository is unencrypted, but it has key \
                     files: the marker was changed; refusing to use it (restore the marker from \
                     a copy)"
                )));
            }
            Ok(())
        }
        (_, e) => Err(crate::error::unsafe_content(format!(
            "the marker of {loc} names an unknown encryption `{}`; refusing to use it",
            e.unwrap_or("(none)").escape_debug()
        ))),
    }
}

fn no_key(loc: &str) -> anyhow::Error {
    MnError::Key(format!(
        "the repository at {loc} is encrypted and was not unlocked: give its passphrase \
         (MNBACKUP_PASSWORD_FILE, [repository] password_file or password_command, the systemd \
         credential `mnbackup-password`, or MNBACKUP_PASSWORD)"
    ))
    .into()
}

/// Decompress at most `max` bytes of a zstd frame.
fn unzstd(bytes: &[u8], max: u64) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    zstd::stream::read::Decoder::new(bytes)?
        .take(max + 1)
        .read_to_end(&mut out)?;
    if out.len() as u64 > max {
        anyhow::bail!("it decompresses to more than {max} bytes");
    }
    Ok(out)
}

impl Repo {
    /// Whether the repository is encrypted (format v2 with a key).
    pub fn encrypted(&self) -> bool {
        self.config.encryption.as_deref() == Some(crypto::XCHACHA)
    }

    /// A line for `status` and `check` saying how the repository is protected.
    pub fn encryption_summary(&self) -> String {
        match (self.config.version, self.encrypted()) {
            (FORMAT_V1, _) => "format v1: NOT encrypted (anyone who can read the pool reads \
                               the backups; see docs/security.md)"
                .into(),
            (_, false) => "format v2: NOT encrypted (created with --no-encryption; anyone who \
                           can read the pool reads the backups)"
                .into(),
            (_, true) => {
                "format v2: encrypted (XChaCha20-Poly1305, keys wrapped by Argon2id)".into()
            }
        }
    }

    /// The id of an object of type `ty` and plain payload `payload`.
    pub fn object_id(&self, ty: ObjectType, payload: &[u8]) -> Result<String> {
        let key = match &self.sealing {
            Sealing::V1 => {
                let mut h = blake3::Hasher::new();
                h.update(OBJECT_MAGIC);
                h.update(&[1, ty.byte()]);
                h.update(payload);
                return Ok(h.finalize().to_hex().to_string());
            }
            Sealing::Plain(k) => k,
            Sealing::Key(k) => &k.id,
            Sealing::Locked => return Err(no_key(&self.location())),
        };
        let mut h = blake3::Hasher::new_keyed(key);
        h.update(&[ty.byte()]);
        h.update(payload);
        Ok(h.finalize().to_hex().to_string())
    }

    /// The stored size of an object with a payload of `len` bytes.
    pub fn object_stored_size(&self, len: usize) -> u64 {
        let extra = match self.sealing {
            Sealing::Key(_) | Sealing::Locked => crypto::SEAL_OVERHEAD,
            _ => 0,
        };
        (len + 6 + extra) as u64
    }

    /// The id and stored bytes of an object.
    pub fn encode_object(&self, ty: ObjectType, payload: &[u8]) -> Result<(String, Vec<u8>)> {
        let id = self.object_id(ty, payload)?;
        let version = if matches!(self.sealing, Sealing::V1) {
            1
        } else {
            2
        };
        let header = [
            OBJECT_MAGIC[0],
            OBJECT_MAGIC[1],
            OBJECT_MAGIC[2],
            OBJECT_MAGIC[3],
            version,
            ty.byte(),
        ];
        let mut bytes = Vec::with_capacity(self.object_stored_size(payload.len()) as usize);
        bytes.extend_from_slice(&header);
        match &self.sealing {
            Sealing::Key(k) => {
                let mut aad = header.to_vec();
                aad.extend_from_slice(id.as_bytes());
                bytes.extend_from_slice(&crypto::seal(&k.enc, &aad, payload));
            }
            _ => bytes.extend_from_slice(payload),
        }
        Ok((id, bytes))
    }

    /// Check stored object bytes against the id: the header, the tag (before anything else is
    /// done with the content), the id of the plain content. Returns the type and the payload;
    /// every failure is an integrity error.
    pub fn decode_object(&self, id: &str, bytes: &[u8]) -> Result<(Option<ObjectType>, Vec<u8>)> {
        let version = if matches!(self.sealing, Sealing::V1) {
            1
        } else {
            2
        };
        if let Sealing::V1 = self.sealing {
            let actual = blake3::hash(bytes).to_hex().to_string();
            if actual != id {
                return Err(integrity(format!(
                    "object {id} is damaged (its content hashes to {actual})"
                )));
            }
        }
        if bytes.len() < 6 || &bytes[..4] != OBJECT_MAGIC || bytes[4] != version {
            return Err(integrity(format!("object {id} has no valid header")));
        }
        let ty = ObjectType::from_byte(bytes[5]);
        let payload = match &self.sealing {
            Sealing::V1 => return Ok((ty, bytes[6..].to_vec())),
            Sealing::Locked => return Err(no_key(&self.location())),
            Sealing::Plain(_) => bytes[6..].to_vec(),
            Sealing::Key(k) => {
                let mut aad = bytes[..6].to_vec();
                aad.extend_from_slice(id.as_bytes());
                crypto::open(&k.enc, &aad, &bytes[6..]).ok_or_else(|| {
                    integrity(format!(
                        "object {id} is damaged or not this repository's (its authentication \
                         tag does not match: changed bytes, or an object of another \
                         repository or name)"
                    ))
                })?
            }
        };
        let Some(t) = ty else {
            return Err(integrity(format!("object {id} has no valid header")));
        };
        let actual = self.object_id(t, &payload)?;
        if actual != id {
            return Err(integrity(format!(
                "object {id} is damaged (its content hashes to {actual})"
            )));
        }
        Ok((ty, payload))
    }

    /// Whether stored bytes of the given length hold the object `id` (v1: hash of the bytes;
    /// v2: the full check).
    pub(crate) fn object_bytes_good(&self, id: &str, bytes: &[u8]) -> bool {
        self.decode_object(id, bytes).is_ok()
    }

    /// The stored bytes of manifest `key` (its key name) with JSON body `body` (format v2).
    pub fn seal_manifest_body(&self, key: &str, body: &[u8]) -> Result<Vec<u8>> {
        let z = zstd::bulk::compress(body, 6)?;
        let (flag, k) = match &self.sealing {
            Sealing::Key(k) => (b'X', Some(k)),
            Sealing::Plain(_) => (b'N', None),
            Sealing::Locked => return Err(no_key(&self.location())),
            Sealing::V1 => anyhow::bail!("format v1 manifests are not sealed"),
        };
        let mut out = MANIFEST_MAGIC.to_vec();
        out.extend_from_slice(&[2, flag]);
        let mut aad = out.clone();
        aad.extend_from_slice(key.as_bytes());
        match k {
            Some(k) => out.extend_from_slice(&crypto::seal(&k.enc, &aad, &z)),
            None => {
                let Sealing::Plain(idk) = &self.sealing else {
                    unreachable!()
                };
                let mut h = blake3::Hasher::new_keyed(idk);
                h.update(&aad);
                h.update(&z);
                out.extend_from_slice(h.finalize().as_bytes());
                out.extend_from_slice(&z);
            }
        }
        Ok(out)
    }

    /// The JSON body of stored manifest bytes (format v2), checked: tag or keyed checksum first,
    /// then a bounded decompression. Errors name what is wrong (the caller adds the snapshot).
    pub fn open_manifest_body(&self, key: &str, bytes: &[u8]) -> Result<Vec<u8>> {
        if let Sealing::Locked = self.sealing {
            return Err(no_key(&self.location()));
        }
        if bytes.len() < 6 || &bytes[..4] != MANIFEST_MAGIC || bytes[4] != 2 {
            anyhow::bail!("not a format v2 manifest (no valid header)");
        }
        let mut aad = bytes[..6].to_vec();
        aad.extend_from_slice(key.as_bytes());
        let z = match (&self.sealing, bytes[5]) {
            (Sealing::Key(k), b'X') => {
                crypto::open(&k.enc, &aad, &bytes[6..]).ok_or_else(|| {
                    anyhow::anyhow!(
                        "its authentication tag does not match (changed bytes, or a manifest \
                     moved from another snapshot or repository)"
                    )
                })?
            }
            (Sealing::Plain(idk), b'N') if bytes.len() >= 38 => {
                let mut h = blake3::Hasher::new_keyed(idk);
                h.update(&aad);
                h.update(&bytes[38..]);
                if h.finalize().as_bytes() != &bytes[6..38] {
                    anyhow::bail!(
                        "checksum mismatch (the file was changed or truncated, or moved from \
                         another snapshot or repository)"
                    );
                }
                bytes[38..].to_vec()
            }
            _ => anyhow::bail!(
                "its header does not match the repository's encryption (a manifest of another \
                 repository?)"
            ),
        };
        unzstd(&z, MAX_MANIFEST)
    }
}

impl Repo {
    /// Whether `other` names and seals objects as this repository does (both v1, or one
    /// master key), so stored bytes can be copied as they are.
    pub fn same_object_ids(&self, other: &Repo) -> bool {
        match (&self.sealing, &other.sealing) {
            (Sealing::V1, Sealing::V1) => true,
            (Sealing::Plain(a), Sealing::Plain(b)) => a == b,
            (Sealing::Key(a), Sealing::Key(b)) => a.id == b.id && a.enc == b.enc,
            _ => false,
        }
    }
}
