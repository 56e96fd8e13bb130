//! Format v2's cryptography: the master key, sealing (XChaCha20-Poly1305 with a random 24-byte
//! nonce), the keyed object ids (keyed BLAKE3) and the wrapping of the master key by a passphrase
//! (Argon2id). Pure functions; the repository decides what is sealed with which associated data
//! (`docs/repository-format.md`, "Format v2").

use anyhow::{Context, Result};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// The marker's `encryption` value of an encrypted v2 repository.
pub const XCHACHA: &str = "xchacha20poly1305";
/// The marker's `encryption` value of an unencrypted v2 repository (`init --no-encryption`).
pub const NONE: &str = "none";
/// Bytes a sealed value adds to the plain one: the nonce and the tag.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + 16;
const NONCE_LEN: usize = 24;

/// The repository's master key: the encryption key and the key of the object ids. Stored only
/// wrapped (key files) or printed as a paper key; wiped from memory when dropped.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey {
    pub enc: [u8; 32],
    pub id: [u8; 32],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// A new random master key (the operating system's random source through `rand`).
    pub fn random() -> MasterKey {
        MasterKey {
            enc: rand::random(),
            id: rand::random(),
        }
    }

    /// The 64 bytes: encryption key, then id key.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut v = Zeroizing::new(Vec::with_capacity(64));
        v.extend_from_slice(&self.enc);
        v.extend_from_slice(&self.id);
        v
    }

    pub fn from_bytes(b: &[u8]) -> Option<MasterKey> {
        if b.len() != 64 {
            return None;
        }
        let mut k = MasterKey {
            enc: [0; 32],
            id: [0; 32],
        };
        k.enc.copy_from_slice(&b[..32]);
        k.id.copy_from_slice(&b[32..]);
        Some(k)
    }

    /// A check value recorded in the marker: proves a paper key belongs to this repository
    /// without revealing anything of the key.
    pub fn check_value(&self, repo_id: &str) -> String {
        let mut h = blake3::Hasher::new_keyed(&self.enc);
        h.update(b"mnbackup key check ");
        h.update(repo_id.as_bytes());
        h.finalize().to_hex().to_string()
    }
}

/// The id key of an unencrypted v2 repository: derived from its id (not a secret; it keeps the
/// id scheme of both kinds of v2 repository the same).
pub fn plain_id_key(repo_id: &str) -> [u8; 32] {
    blake3::derive_key(
        "mnbackup v2 object id key (unencrypted repository)",
        repo_id.as_bytes(),
    )
}

/// Seal `plain`: a random nonce, then the ciphertext with its tag.
pub fn seal(key: &[u8; 32], aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let nonce: [u8; NONCE_LEN] = rand::random();
    let cipher = XChaCha20Poly1305::new(Key::from_slice(key));
    let ct = cipher
        .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad })
        .expect("XChaCha20-Poly1305 encrypts any length this program produces");
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

/// Open a sealed value; `None` when the tag does not match (another key, other associated
/// data, or changed bytes).
pub fn open(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < SEAL_OVERHEAD {
        return None;
    }
    let cipher = XChaCha20Poly1305::new(Key::from_slice(key));
    cipher
        .decrypt(
            XNonce::from_slice(&sealed[..NONCE_LEN]),
            Payload {
                msg: &sealed[NONCE_LEN..],
                aad,
            },
        )
        .ok()
}

/// A key file (`keys/<id>`): the master key wrapped by a passphrase through Argon2id.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    pub created: chrono::DateTime<chrono::Utc>,
    /// Where the key was added (host name), for `key list`.
    pub host: String,
    pub kdf: String,
    /// Argon2id memory in KiB, iterations and lanes.
    pub m_cost: u32,
    pub t_cost: u32,
    pub p_cost: u32,
    /// Hex of the 16-byte salt.
    pub salt: String,
    /// Hex of the sealed master key (nonce, ciphertext, tag).
    pub data: String,
}

/// Argon2id parameters of new key files: the argon2 crate's defaults (19 MiB, 2 passes, 1 lane,
/// the OWASP recommendation).
fn default_params() -> argon2::Params {
    argon2::Params::default()
}

fn kek(passphrase: &[u8], salt: &[u8], m: u32, t: u32, p: u32) -> Result<Zeroizing<[u8; 32]>> {
    let params = argon2::Params::new(m, t, p, Some(32))
        .map_err(|e| anyhow::anyhow!("unusable Argon2id parameters in the key file: {e}"))?;
    if m > 4 << 20 || t > 100 {
        anyhow::bail!("the key file asks for absurd Argon2id parameters (m {m} KiB, t {t})");
    }
    let mut out = Zeroizing::new([0u8; 32]);
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password_into(passphrase, salt, &mut out[..])
        .map_err(|e| anyhow::anyhow!("Argon2id failed: {e}"))?;
    Ok(out)
}

fn key_aad(repo_id: &str) -> Vec<u8> {
    format!("mnbackup key file {repo_id}").into_bytes()
}

impl KeyFile {
    /// Wrap `master` by `passphrase` for repository `repo_id`.
    pub fn wrap(
        master: &MasterKey,
        passphrase: &[u8],
        repo_id: &str,
        host: &str,
    ) -> Result<KeyFile> {
        let p = default_params();
        let salt: [u8; 16] = rand::random();
        let k = kek(passphrase, &salt, p.m_cost(), p.t_cost(), p.p_cost())?;
        let data = seal(&k, &key_aad(repo_id), &master.to_bytes());
        Ok(KeyFile {
            created: chrono::Utc::now(),
            host: host.to_string(),
            kdf: "argon2id".into(),
            m_cost: p.m_cost(),
            t_cost: p.t_cost(),
            p_cost: p.p_cost(),
            salt: hex::encode(salt),
            data: hex::encode(data),
        })
    }

    /// Unwrap with `passphrase`: `Ok(None)` when the passphrase is not this key's.
    pub fn unwrap_key(&self, passphrase: &[u8], repo_id: &str) -> Result<Option<MasterKey>> {
        if self.kdf != "argon2id" {
            anyhow::bail!("unknown key derivation `{}`", self.kdf.escape_debug());
        }
        let salt = hex::decode(&self.salt).context("its salt is not hex")?;
        let data = hex::decode(&self.data).context("its data is not hex")?;
        let k = kek(passphrase, &salt, self.m_cost, self.t_cost, self.p_cost)?;
        Ok(open(&k, &key_aad(repo_id), &data)
            .map(Zeroizing::new)
            .and_then(|b| MasterKey::from_bytes(&b)))
    }
}

const PAPER_PREFIX: &str = "MNBACKUP-PAPER-KEY-1";

/// The printable paper key: a line with the prefix and the repository id, then the 64 key
/// bytes and a 4-byte checksum as 136 hex digits in groups of 8, six groups a line, so a typo is
/// found before use.
pub fn paper_key(master: &MasterKey, repo_id: &str) -> Zeroizing<String> {
    let bytes = master.to_bytes();
    let mut hexed = Zeroizing::new(hex::encode(&*bytes));
    hexed.push_str(&blake3::hash(&bytes).to_hex()[..8]);
    let mut out = Zeroizing::new(format!("{PAPER_PREFIX} {repo_id}\n"));
    for (i, c) in hexed.as_bytes().chunks(8).enumerate() {
        out.push_str(std::str::from_utf8(c).unwrap_or(""));
        out.push(if i % 6 == 5 { '\n' } else { ' ' });
    }
    while out.ends_with(' ') || out.ends_with('\n') {
        out.pop();
    }
    out.push('\n');
    out
}

/// Parse a paper key (whitespace anywhere, case-insensitive); returns the repository id and the
/// master key.
pub fn parse_paper_key(text: &str) -> Result<(String, MasterKey)> {
    let mut words = text.split_whitespace();
    if words.next() != Some(PAPER_PREFIX) {
        anyhow::bail!("it does not start with `{PAPER_PREFIX}`");
    }
    let repo_id = words
        .next()
        .context("no repository id after the prefix")?
        .to_string();
    let digits: Zeroizing<String> = Zeroizing::new(words.collect::<String>().to_ascii_lowercase());
    if digits.len() != 136 {
        anyhow::bail!("it has {} hex digits of key, expected 136", digits.len());
    }
    let bytes = Zeroizing::new(hex::decode(&digits[..128]).context("its key is not hex")?);
    if blake3::hash(&bytes).to_hex()[..8] != digits[128..] {
        anyhow::bail!("its checksum does not match (a typo?)");
    }
    let key = MasterKey::from_bytes(&bytes).context("wrong key length")?;
    Ok((repo_id, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_refusals() {
        let k = MasterKey::random();
        let s = seal(&k.enc, b"a", b"secret");
        assert_eq!(open(&k.enc, b"a", &s).unwrap(), b"secret");
        assert!(open(&k.enc, b"b", &s).is_none());
        assert!(open(&MasterKey::random().enc, b"a", &s).is_none());
        let mut bad = s.clone();
        bad[30] ^= 1;
        assert!(open(&k.enc, b"a", &bad).is_none());
        assert_ne!(seal(&k.enc, b"a", b"secret"), s, "random nonce");
    }

    #[test]
    fn key_file_and_paper_key_round_trip() {
        let k = MasterKey::random();
        let f = KeyFile::wrap(&k, b"pw", "r1", "h").unwrap();
        assert_eq!(
            f.unwrap_key(b"pw", "r1").unwrap().unwrap().to_bytes(),
            k.to_bytes()
        );
        assert!(f.unwrap_key(b"other", "r1").unwrap().is_none());
        assert!(f.unwrap_key(b"pw", "r2").unwrap().is_none());
        let p = paper_key(&k, "r1");
        let (id, back) = parse_paper_key(&p).unwrap();
        assert_eq!((id.as_str(), back.to_bytes()), ("r1", k.to_bytes()));
        let first = p.find('\n').unwrap() + 1;
        let mut typo = p.as_bytes().to_vec();
        typo[first] = if typo[first] == b'0' { b'1' } else { b'0' };
        let e = parse_paper_key(std::str::from_utf8(&typo).unwrap())
            .err()
            .unwrap();
        assert!(e.to_string().contains("checksum"), "{e}");
    }
}
