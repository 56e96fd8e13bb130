//! Storing one table's snapshot directory: digests checked while `Data.db` streams, incomplete
//! or damaged SSTables left out as gaps, unchanged components recorded without reading.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::model::cassandra_info::{
    CassandraItem, CassandraSourceInfo, ComponentInfo, DigestCheck,
};
use crate::model::{EntryKind, Gap};
use crate::model::{ItemSink, ItemSpec};

use super::backup::{CassandraSummary, Found};
use super::digest::{digest_mismatch, ExpectedDigest, HashingReader};
use super::sstable::SstableFile;

/// One table's snapshot directory being stored.
pub(super) struct TablePut<'a> {
    pub(super) ks: &'a str,
    pub(super) table: &'a str,
    pub(super) sink: &'a dyn ItemSink,
    /// The previous snapshot's components, by `<ks>/<table>/<name>`.
    pub(super) previous: &'a BTreeMap<String, ComponentInfo>,
    /// The table's index in `info.tables`.
    pub(super) idx: usize,
}

/// What the backup records as it goes.
pub(super) struct Tally<'a> {
    /// Item names put so far.
    pub(super) names: &'a mut BTreeSet<String>,
    pub(super) summary: &'a mut CassandraSummary,
    pub(super) info: &'a mut CassandraSourceInfo,
}

/// `("<subdir/>stem", parsed name)` of an SSTable component path.
fn key_of(rel: &str) -> Option<(String, SstableFile)> {
    let (sub, base) = match rel.rsplit_once('/') {
        Some((d, b)) => (format!("{d}/"), b),
        None => (String::new(), rel),
    };
    SstableFile::parse(base).map(|s| (format!("{sub}{}", s.stem), s))
}

/// The first `limit` bytes of a file.
fn read_head(path: &Path, limit: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut text = Vec::new();
    File::open(path)
        .with_context(|| format!("opening {}", path.display()))?
        .take(limit)
        .read_to_end(&mut text)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(text)
}

pub(super) fn put_table(tp: &TablePut<'_>, found: &[Found], tally: &mut Tally<'_>) -> Result<()> {
    // Digests first: small files, read whole, keyed by "<subdir/>stem".
    let mut expected: BTreeMap<String, ExpectedDigest> = BTreeMap::new();
    let mut stems = BTreeSet::new();
    let mut versions = BTreeSet::new();
    for f in found {
        let Some((key, sf)) = key_of(&f.rel) else {
            continue;
        };
        stems.insert(key.clone());
        versions.insert(sf.version.clone());
        if sf.is_digest() {
            let text = read_head(&f.path, 4096)?;
            let d = ExpectedDigest::parse(&sf.component, &text)
                .with_context(|| format!("SSTable {}", f.path.display()))?;
            let d = ExpectedDigest {
                component: f.rel.rsplit('/').next().unwrap_or(&f.rel).to_string(),
                ..d
            };
            expected.insert(key, d);
        }
    }
    tally.summary.digests_missing += found
        .iter()
        .filter_map(|f| key_of(&f.rel))
        .filter(|(k, s)| s.is_data() && !expected.contains_key(k))
        .map(|(k, _)| k)
        .collect::<BTreeSet<String>>()
        .len();

    let mut bad = incomplete_sstables(tp, found)?;
    // Data.db first: a damaged one is found before any other component of its SSTable is
    // stored, so a left-out SSTable leaves nothing behind.
    let mut ordered: Vec<&Found> = found.iter().collect();
    ordered.sort_by_key(|f| !key_of(&f.rel).is_some_and(|(_, s)| s.is_data()));
    for f in ordered {
        put_component(tp, f, &expected, &mut bad, tally)?;
    }
    let t = &mut tally.info.tables[tp.idx];
    let stored_stems = stems.iter().filter(|k| !bad.contains(*k)).count();
    t.sstables += stored_stems;
    tally.summary.sstables += stored_stems;
    for v in versions {
        if !t.versions.contains(&v) {
            t.versions.push(v);
        }
    }
    Ok(())
}

/// SSTables left out, each recorded as a gap: a component listed in TOC.txt is missing (found
/// now). (One whose Data.db does not match its digest is found while storing it.)
fn incomplete_sstables(tp: &TablePut<'_>, found: &[Found]) -> Result<BTreeSet<String>> {
    let mut bad: BTreeSet<String> = BTreeSet::new();
    let present: BTreeSet<&str> = found.iter().map(|f| f.rel.as_str()).collect();
    for f in found {
        let Some((key, sf)) = key_of(&f.rel) else {
            continue;
        };
        if sf.component != "TOC.txt" {
            continue;
        }
        let text = String::from_utf8(read_head(&f.path, 4096)?)
            .with_context(|| format!("reading {}", f.path.display()))?;
        let prefix = f.rel.strip_suffix("TOC.txt").unwrap_or(&f.rel);
        let missing: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|c| !c.is_empty() && !present.contains(format!("{prefix}{c}").as_str()))
            .collect();
        if !missing.is_empty() {
            bad.insert(key.clone());
            tp.sink.gap(sstable_gap(
                tp,
                &key,
                format!(
                    "SSTable {key} is incomplete: its TOC.txt lists {} but the node has no \
                     such file; the SSTable was left out",
                    missing.join(", ")
                ),
            ));
        }
    }
    Ok(bad)
}

/// The gap of an SSTable left out.
fn sstable_gap(tp: &TablePut<'_>, key: &str, what: String) -> Gap {
    let (ks, table) = (tp.ks, tp.table);
    Gap::new("cassandra", "sstable", what)
        .subject(format!("{ks}.{table}/{key}"))
        .fix(format!(
            "run `nodetool scrub {ks} {table}` (or `nodetool repair {ks} {table}` to \
             fetch the data from other replicas), then take a new snapshot"
        ))
}

/// Store one file of the table's snapshot directory: recorded without reading when unchanged
/// since the previous snapshot, else streamed, a `Data.db` checked against its digest (a
/// mismatch leaves its SSTable out, as a gap, and adds it to `bad`).
fn put_component(
    tp: &TablePut<'_>,
    f: &Found,
    expected: &BTreeMap<String, ExpectedDigest>,
    bad: &mut BTreeSet<String>,
    tally: &mut Tally<'_>,
) -> Result<()> {
    let (ks, table) = (tp.ks, tp.table);
    let parsed = key_of(&f.rel);
    if parsed.as_ref().is_some_and(|(k, _)| bad.contains(k)) {
        return Ok(());
    }
    let name = CassandraItem::TableFile {
        keyspace: ks.to_string(),
        table: table.to_string(),
        file: f.rel.clone(),
    }
    .encode();
    if !tally.names.insert(name.clone()) {
        if matches!(f.rel.as_str(), "schema.cql" | "manifest.json") {
            // A table spread over several data directories has one of these in each.
            return Ok(());
        }
        bail!(
            "two files of Cassandra table {ks}.{table} are named {} (in different data \
             directories); this should not happen, check the node's data_file_directories",
            f.rel
        );
    }
    let file = File::open(&f.path).with_context(|| format!("opening {}", f.path.display()))?;
    let md = file
        .metadata()
        .with_context(|| format!("reading the metadata of {}", f.path.display()))?;
    use std::os::unix::fs::MetadataExt;
    let (mtime_ns, ino) = (md.mtime() * 1_000_000_000 + md.mtime_nsec(), md.ino());
    let spec = ItemSpec {
        name,
        kind: EntryKind::File,
        meta: Some(crate::model::files_info::file_meta(&md)),
        target: None,
        delta: false,
    };
    let component = |size: u64| ComponentInfo {
        name: f.rel.clone(),
        size,
        mtime_ns: Some(mtime_ns),
        ino: Some(ino),
    };
    let unchanged = parsed.is_some()
        && tp
            .previous
            .get(&format!("{ks}/{table}/{}", f.rel))
            .is_some_and(|p| {
                p.size == md.len() && p.mtime_ns == Some(mtime_ns) && p.ino == Some(ino)
            });
    if unchanged && tp.sink.put_unchanged(spec.clone(), md.len())? {
        tally.summary.files += 1;
        tally.summary.files_unchanged += 1;
        tally.summary.bytes += md.len();
        let t = &mut tally.info.tables[tp.idx];
        t.bytes += md.len();
        t.components.push(component(md.len()));
        return Ok(());
    }
    let exp = parsed
        .as_ref()
        .filter(|(_, s)| s.is_data())
        .and_then(|(k, _)| expected.get(k));
    let mut reader = VerifyingReader {
        inner: HashingReader::new(file, exp.map(|e| e.algo)),
        expected: exp.map(|e| e.value.clone()),
        mismatch: None,
    };
    let stored = tp.sink.put_reader(spec, &mut reader);
    let check = |actual: String, ok: bool, exp: &ExpectedDigest| {
        let (key, _) = parsed.as_ref().expect("parsed data file");
        DigestCheck {
            sstable: format!("{ks}.{table}/{key}"),
            algorithm: format!("{:?}", exp.algo).to_lowercase(),
            expected: exp.value.clone(),
            actual,
            ok,
        }
    };
    if let (Some(exp), Some(actual)) = (exp, reader.mismatch.take()) {
        // The damaged SSTable is left out (the sink did not record the item), the rest of
        // the node is backed up.
        let (key, _) = parsed.as_ref().expect("parsed data file");
        tally
            .info
            .digest_checks
            .push(check(actual.clone(), false, exp));
        bad.insert(key.clone());
        let e = digest_mismatch(&f.path.display().to_string(), exp, &actual);
        tp.sink.gap(sstable_gap(
            tp,
            key,
            format!("{e:#}; the SSTable was left out"),
        ));
        return Ok(());
    }
    stored.with_context(|| format!("storing {}", f.path.display()))?;
    if let (Some(exp), Some(d)) = (exp, &reader.inner.digester) {
        tally.info.digest_checks.push(check(d.value(), true, exp));
        tally.summary.digests_checked += 1;
    }
    let bytes = reader.inner.bytes;
    tally.summary.files += 1;
    tally.summary.bytes += bytes;
    tally.summary.bytes_read += bytes;
    let t = &mut tally.info.tables[tp.idx];
    t.bytes += bytes;
    t.components.push(component(bytes));
    Ok(())
}

/// Streams a `Data.db` while computing its digest; at the end, a digest that differs from the
/// expected one fails the read (so the sink does not record the item) and is kept in
/// `mismatch`.
struct VerifyingReader<R> {
    inner: HashingReader<R>,
    expected: Option<String>,
    /// The actual digest, when it did not match.
    mismatch: Option<String>,
}

impl<R: std::io::Read> std::io::Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            if let (Some(want), Some(d)) = (&self.expected, &self.inner.digester) {
                let actual = d.value();
                if &actual != want {
                    self.mismatch = Some(actual);
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "Data.db does not match its digest component",
                    ));
                }
            }
        }
        Ok(n)
    }
}
