use std::fmt;
use std::io::{self, Read};

use anyhow::{anyhow, bail, Result};
use serde::Serialize;

/// CRC-32 (IEEE 802.3, the one `java.util.zip.CRC32` computes), via `crc32fast`.
#[derive(Clone, Default)]
pub struct Crc32(crc32fast::Hasher);

impl Crc32 {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    /// The CRC of everything fed so far.
    pub fn value(&self) -> u32 {
        self.0.clone().finalize()
    }
}

/// Adler-32 (`java.util.zip.Adler32`), via `adler2`.
#[derive(Clone, Default)]
pub struct Adler32(adler2::Adler32);

impl Adler32 {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn update(&mut self, data: &[u8]) {
        self.0.write_slice(data);
    }
    /// The checksum of everything fed so far.
    pub fn value(&self) -> u32 {
        self.0.checksum()
    }
}

/// SHA-1, via the `sha1` crate. Only used to check the `Digest.sha1` of old (2.0) SSTables,
/// never as a security measure.
#[derive(Clone, Default)]
pub struct Sha1(sha1::Sha1);

impl Sha1 {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn update(&mut self, data: &[u8]) {
        sha1::Digest::update(&mut self.0, data);
    }
    /// The hash of everything fed so far, lowercase hex.
    pub fn hex(&self) -> String {
        let d = sha1::Digest::finalize(self.0.clone());
        d.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Which whole-file checksum a `Digest.*` component holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DigestAlgo {
    /// `Digest.crc32`: decimal CRC32 of `Data.db` (3.0 and later: `ma` … `oa`, `da`).
    Crc32,
    /// `Digest.adler32`: decimal Adler-32 of `Data.db` (2.2, `la`). 2.1 (`ka`) wrote the same
    /// decimal Adler-32 into a file named `Digest.sha1`.
    Adler32,
    /// `Digest.sha1`: hex SHA-1 of `Data.db` in `sha1sum` format (2.0, `jb`, and older).
    Sha1,
}

impl fmt::Display for DigestAlgo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DigestAlgo::Crc32 => "CRC32",
            DigestAlgo::Adler32 => "Adler-32",
            DigestAlgo::Sha1 => "SHA-1",
        })
    }
}

/// What a `Digest.*` component says the `Data.db` beside it must hash to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpectedDigest {
    pub algo: DigestAlgo,
    /// Decimal for CRC32 / Adler-32 (as Cassandra writes it), lowercase hex for SHA-1.
    pub value: String,
    /// The digest component's file name (e.g. `md-1-big-Digest.crc32`).
    pub component: String,
}

impl ExpectedDigest {
    /// Parse a digest component. `component` is its file name (its suffix tells the algorithm,
    /// except for 2.1's `Digest.sha1` files, which hold a decimal Adler-32).
    pub fn parse(component: &str, text: &[u8]) -> Result<ExpectedDigest> {
        let text = String::from_utf8_lossy(text);
        let first = text.split_whitespace().next().unwrap_or("");
        let bad = || {
            anyhow!(
                "digest component {component} holds {:?}, which is not a checksum Cassandra \
                 writes; the SSTable may be damaged (run `nodetool scrub` on the table)",
                text.chars().take(80).collect::<String>()
            )
        };
        let decimal = |algo| -> Result<ExpectedDigest> {
            let v: u64 = first.parse().map_err(|_| bad())?;
            if v > u32::MAX as u64 {
                return Err(bad());
            }
            Ok(ExpectedDigest {
                algo,
                value: v.to_string(),
                component: component.to_string(),
            })
        };
        if component.ends_with("Digest.crc32") {
            decimal(DigestAlgo::Crc32)
        } else if component.ends_with("Digest.adler32") {
            decimal(DigestAlgo::Adler32)
        } else if component.ends_with("Digest.sha1") {
            if first.len() == 40 && first.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(ExpectedDigest {
                    algo: DigestAlgo::Sha1,
                    value: first.to_ascii_lowercase(),
                    component: component.to_string(),
                })
            } else {
                // Cassandra 2.1 (`ka`) named the file Digest.sha1 but wrote a decimal Adler-32.
                decimal(DigestAlgo::Adler32)
            }
        } else {
            bail!("{component} is not a Cassandra digest component")
        }
    }
}

/// A running whole-file checksum of one of the [`DigestAlgo`]s.
#[derive(Clone)]
pub enum Digester {
    Crc32(Crc32),
    Adler32(Adler32),
    Sha1(Box<Sha1>),
}

impl Digester {
    /// A fresh digester for `algo`.
    pub fn new(algo: DigestAlgo) -> Self {
        match algo {
            DigestAlgo::Crc32 => Digester::Crc32(Crc32::new()),
            DigestAlgo::Adler32 => Digester::Adler32(Adler32::new()),
            DigestAlgo::Sha1 => Digester::Sha1(Box::default()),
        }
    }

    /// Feed bytes.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Digester::Crc32(c) => c.update(data),
            Digester::Adler32(a) => a.update(data),
            Digester::Sha1(s) => s.update(data),
        }
    }

    /// The value in the form Cassandra writes it (decimal, or hex for SHA-1).
    pub fn value(&self) -> String {
        match self {
            Digester::Crc32(c) => c.value().to_string(),
            Digester::Adler32(a) => a.value().to_string(),
            Digester::Sha1(s) => s.hex(),
        }
    }
}

/// Passes reads through, feeding an optional [`Digester`] and counting bytes.
pub struct HashingReader<R> {
    inner: R,
    /// The digester, when the file has a digest to check.
    pub digester: Option<Digester>,
    /// Bytes read so far.
    pub bytes: u64,
}

impl<R: Read> HashingReader<R> {
    /// Wrap `inner`; `algo` None only counts bytes.
    pub fn new(inner: R, algo: Option<DigestAlgo>) -> Self {
        HashingReader {
            inner,
            digester: algo.map(Digester::new),
            bytes: 0,
        }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(d) = &mut self.digester {
            d.update(&buf[..n]);
        }
        self.bytes += n as u64;
        Ok(n)
    }
}

/// The error for a `Data.db` whose digest does not match its digest component. `what` names the
/// SSTable (its path or its table and stem).
pub fn digest_mismatch(what: &str, expected: &ExpectedDigest, actual: &str) -> anyhow::Error {
    anyhow!(
        "SSTable {what} is corrupt: Data.db {} {actual} does not match {} {}; run `nodetool \
         scrub` on the table (or `nodetool repair` to fetch the data from another replica) and \
         take the backup again",
        expected.algo,
        expected.component,
        expected.value
    )
}
