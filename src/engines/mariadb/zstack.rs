//! ZStack discovery: database credentials from `zstack.properties` / `zstack.ui.properties`,
//! including passwords encrypted by `zstack-ctl`.
//!
//! `zstack-ctl` (zstack-utility `zstackctl/zstackctl/ctl.py`, class `AESCipher`) encrypts
//! `DB.password` (and the UI's `db_password`) as
//! `base64(AES-256-ECB(key = md5_hex("ZStack open source") as 32 ASCII bytes,
//! PKCS#7("crypt_key_for_v1::" + password)))`. ZStack and `zstack-ctl` use a value as encrypted
//! only when it decrypts (valid padding, UTF-8) to a plaintext with that prefix; any other value,
//! including one that merely looks like ciphertext (`openssl rand -base64 32` gives base64 of 32
//! bytes), is the plain password. We follow that rule exactly ([`classify`]).

use std::collections::BTreeMap;
use std::path::Path;

use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, BlockEncryptMut, KeyInit};
use anyhow::{Context, Result};
use base64::Engine;
use md5::{Digest, Md5};

/// The plaintext prefix `zstack-ctl` adds before encrypting.
pub const PREFIX: &str = "crypt_key_for_v1::";
/// The passphrase whose MD5 hex digest is the AES key.
pub const PASSPHRASE: &str = "ZStack open source";

type Enc = ecb::Encryptor<aes::Aes256>;
type Dec = ecb::Decryptor<aes::Aes256>;

fn key_for(passphrase: &str) -> [u8; 32] {
    let digest = Md5::digest(passphrase.as_bytes());
    let hex = hex::encode(digest);
    let mut key = [0u8; 32];
    key.copy_from_slice(hex.as_bytes());
    key
}

/// Encrypt like `zstack-ctl`'s `AESCipher().encrypt(raw)`.
pub fn encrypt(raw: &str) -> String {
    encrypt_with(PASSPHRASE, raw)
}

/// Encrypt with another passphrase (for tests of the wrong-key error).
pub fn encrypt_with(passphrase: &str, raw: &str) -> String {
    let plain = format!("{PREFIX}{raw}");
    let ct =
        Enc::new(&key_for(passphrase).into()).encrypt_padded_vec_mut::<Pkcs7>(plain.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(ct)
}

/// Whether a value has the shape of `zstack-ctl` ciphertext: base64 of a whole number of AES
/// blocks, at least two (the prefix alone fills more than one).
pub fn looks_encrypted(value: &str) -> bool {
    match base64::engine::general_purpose::STANDARD.decode(value.trim()) {
        Ok(b) => b.len() >= 32 && b.len() % 16 == 0,
        Err(_) => false,
    }
}

/// Decrypt a `zstack-ctl`-encrypted value; errors say why it is not one.
pub fn decrypt(enc: &str) -> Result<String> {
    let ct = base64::engine::general_purpose::STANDARD
        .decode(enc.trim())
        .map_err(|e| anyhow::anyhow!("it is not base64 ({e})"))?;
    if ct.is_empty() || ct.len() % 16 != 0 {
        anyhow::bail!(
            "its {} bytes are not a whole number of 16-byte AES blocks",
            ct.len()
        );
    }
    let plain = Dec::new(&key_for(PASSPHRASE).into())
        .decrypt_padded_vec_mut::<Pkcs7>(&ct)
        .map_err(|_| {
            anyhow::anyhow!(
                "AES-ECB decryption with zstack-ctl's key gives invalid PKCS#7 padding (wrong key \
                 or corrupted value)"
            )
        })?;
    let text = String::from_utf8(plain).map_err(|_| {
        anyhow::anyhow!("the decrypted value is not UTF-8 (wrong key or corrupted value)")
    })?;
    match text.strip_prefix(PREFIX) {
        Some(p) => Ok(p.to_string()),
        None => anyhow::bail!(
            "the decrypted value lacks zstack-ctl's {PREFIX:?} prefix (wrong key or corrupted value)"
        ),
    }
}

/// How a password value was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordKind {
    /// Decrypted with `zstack-ctl`'s key to a value with the `crypt_key_for_v1::` prefix.
    Encrypted,
    /// Anything else: used as is.
    Plain,
}

impl PasswordKind {
    pub fn describe(self) -> &'static str {
        match self {
            PasswordKind::Encrypted => "encrypted by zstack-ctl (decrypted)",
            PasswordKind::Plain => "plain text (it does not decrypt with zstack-ctl's key)",
        }
    }
}

/// ZStack's rule: the value is encrypted only when it decrypts to a plaintext with the
/// `crypt_key_for_v1::` prefix; otherwise it is the plain password.
pub fn classify(value: &str) -> (String, PasswordKind) {
    match decrypt(value) {
        Ok(p) => (p, PasswordKind::Encrypted),
        Err(_) => (value.to_string(), PasswordKind::Plain),
    }
}

/// Read a password value as `zstack-ctl` does (see [`classify`]).
pub fn password_value(value: &str) -> String {
    classify(value).0
}

/// Which keys of which file.
#[derive(Debug, Clone, Copy)]
pub struct PropertyKeys {
    pub url: &'static [&'static str],
    pub user: &'static [&'static str],
    pub password: &'static [&'static str],
}

impl PropertyKeys {
    /// `zstack.properties`.
    pub const SERVER: PropertyKeys = PropertyKeys {
        url: &["DB.url", "DbFacadeDataSource.jdbcUrl"],
        user: &["DB.user", "DbFacadeDataSource.user"],
        password: &["DB.password", "DbFacadeDataSource.password"],
    };
    /// `zstack.ui.properties`.
    pub const UI: PropertyKeys = PropertyKeys {
        url: &["db_url"],
        user: &["db_username"],
        password: &["db_password"],
    };
}

/// Database access as a ZStack properties file gives it.
#[derive(Clone)]
pub struct DbProperties {
    pub host: String,
    pub port: u16,
    /// The database named in the URL path, if any.
    pub database: Option<String>,
    pub user: String,
    pub password: String,
    /// Whether `password` was stored encrypted.
    pub password_kind: PasswordKind,
}

impl std::fmt::Debug for DbProperties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbProperties")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &"********")
            .finish()
    }
}

/// Parse Java-properties-style `key = value` lines (`#`/`!` comments; the first `=` or `:`
/// separates). Good enough for zstack.properties, which `zstack-ctl` writes with ConfigObj.
pub fn parse_properties(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with('!') {
            continue;
        }
        let idx = l.find(['=', ':']);
        if let Some(i) = idx {
            let k = l[..i].trim();
            let v = l[i + 1..].trim();
            out.insert(k.to_string(), v.to_string());
        }
    }
    out
}

/// Parse a `jdbc:mysql://host[:port][,host2...]/db?params` URL: the first host, its port
/// (default 3306) and the database.
pub fn parse_jdbc_url(url: &str) -> Result<(String, u16, Option<String>)> {
    let rest = url
        .strip_prefix("jdbc:mysql:loadbalance://")
        .or_else(|| url.strip_prefix("jdbc:mysql://"))
        .or_else(|| url.strip_prefix("jdbc:mariadb://"))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{url:?} is not a jdbc:mysql:// URL (expected jdbc:mysql://host:port/database)"
            )
        })?;
    let (hosts, path) = match rest.find('/') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let first = hosts.split(',').next().unwrap_or("").trim();
    if first.is_empty() {
        anyhow::bail!("{url:?} names no host");
    }
    let (host, port) = match first.rsplit_once(':') {
        Some((h, p)) => (
            h.to_string(),
            p.parse::<u16>()
                .map_err(|_| anyhow::anyhow!("{url:?}: port {p:?} is not a number"))?,
        ),
        None => (first.to_string(), 3306),
    };
    let db = path
        .map(|p| p.split('?').next().unwrap_or("").to_string())
        .filter(|d| !d.is_empty());
    Ok((host, port, db))
}

/// Read URL, user and (decrypted) password from a ZStack properties file.
pub fn read_db_properties(path: &Path, keys: PropertyKeys) -> Result<DbProperties> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read ZStack properties {}; check [mariadb] zstack_properties / \
             zstack_ui_properties and that this user may read the file",
            path.display()
        )
    })?;
    let props = parse_properties(&text);
    let get = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| props.get(*n).cloned())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{} has no {}; is it a ZStack properties file?",
                    path.display(),
                    names.join(" or ")
                )
            })
    };
    let url = get(keys.url)?;
    let (host, port, database) =
        parse_jdbc_url(&url).with_context(|| format!("{} {}", path.display(), keys.url[0]))?;
    let user = get(keys.user)?;
    let raw_pw = get(keys.password)?;
    let (password, password_kind) = classify(&raw_pw);
    Ok(DbProperties {
        host,
        port,
        database,
        user,
        password,
        password_kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypt_decrypt_roundtrip() {
        for pw in ["zstack.password", "", "p@ss w0rd/with+chars=", "密码🔑"] {
            let enc = encrypt(pw);
            assert!(looks_encrypted(&enc), "{enc}");
            assert_eq!(decrypt(&enc).unwrap(), pw);
            assert_eq!(classify(&enc), (pw.to_string(), PasswordKind::Encrypted));
        }
    }

    #[test]
    fn known_vector() {
        // Independent of our encrypt(): the key is the 32 ASCII bytes of the md5 hex digest.
        assert_eq!(
            std::str::from_utf8(&key_for(PASSPHRASE)).unwrap(),
            format!("{:x}", Md5::digest(PASSPHRASE.as_bytes()))
        );
        // The plaintext "crypt_key_for_v1::x" is 19 bytes -> 2 blocks -> 44 base64 chars.
        assert_eq!(encrypt("x").len(), 44);
    }

    #[test]
    fn plain_and_bad_values() {
        assert_eq!(password_value("password"), "password");
        assert_eq!(
            classify("zstack.mysql.password"),
            ("zstack.mysql.password".into(), PasswordKind::Plain)
        );
        // Ciphertext under another key does not decrypt to the prefix: ZStack uses it as the
        // plain password, and so do we.
        let wrong = encrypt_with("another key", "secret");
        assert_eq!(classify(&wrong), (wrong.clone(), PasswordKind::Plain));
        // Corrupt one block: padding or prefix fails.
        let mut b = base64::engine::general_purpose::STANDARD
            .decode(encrypt("secret"))
            .unwrap();
        b[0] ^= 0xff;
        let bad = base64::engine::general_purpose::STANDARD.encode(&b);
        assert!(decrypt(&bad).is_err());
        assert_eq!(classify(&bad).1, PasswordKind::Plain);
        assert!(decrypt("not base64!")
            .unwrap_err()
            .to_string()
            .contains("base64"));
    }

    /// `openssl rand -base64 32` / `-base64 48`: base64 of whole AES blocks, yet plain passwords
    /// (they were refused before).
    #[test]
    fn random_base64_passwords_are_plain() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for len in [32usize, 48] {
            for _ in 0..50 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        rng as u8
                    })
                    .collect();
                let pw = base64::engine::general_purpose::STANDARD.encode(&bytes);
                assert!(looks_encrypted(&pw));
                assert_eq!(classify(&pw), (pw.clone(), PasswordKind::Plain), "{pw}");
            }
        }
        // And an encrypted one of that shape is decrypted.
        let enc = encrypt("0123456789abcdef0123456789abcde");
        assert_eq!(
            classify(&enc),
            (
                "0123456789abcdef0123456789abcde".into(),
                PasswordKind::Encrypted
            )
        );
    }

    #[test]
    fn properties_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("zstack.properties");
        let enc = encrypt("zs pw");
        std::fs::write(
            &p,
            format!(
                "# comment\nDB.url = jdbc:mysql://10.0.0.5:3307/zstack?useUnicode=true\n\
                 DB.user = zstack\nDB.password = {enc}\nCloudBus.serverIp.0 = 10.0.0.5\n"
            ),
        )
        .unwrap();
        let z = read_db_properties(&p, PropertyKeys::SERVER).unwrap();
        assert_eq!(
            (z.host.as_str(), z.port, z.database.as_deref()),
            ("10.0.0.5", 3307, Some("zstack"))
        );
        assert_eq!(z.user, "zstack");
        assert_eq!(z.password, "zs pw");
        assert_eq!(z.password_kind, PasswordKind::Encrypted);
        assert!(!format!("{z:?}").contains("zs pw"));
        assert_eq!(
            parse_jdbc_url("jdbc:mysql://a,b:3308/").unwrap(),
            ("a".into(), 3306, None)
        );
        assert!(parse_jdbc_url("http://x").is_err());
    }
}
