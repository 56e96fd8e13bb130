use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::Path;

use anyhow::{Context, Result};

/// One SSTable component file name, split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SstableFile {
    /// Everything before the component (`md-1-big`, `ks-table-ka-3`): the SSTable's identity.
    pub stem: String,
    /// Format version (`ka`, `la`, `md`, `nb`, `oa`, `da`, …).
    pub version: String,
    /// Generation: a number, or 5.0's time-based id (`3gdd_0jkt_…`).
    pub generation: String,
    /// `big` or `bti`; None for 2.x names, which have no format part.
    pub format: Option<String>,
    /// The component (`Data.db`, `Digest.crc32`, `TOC.txt`, `SAI+…db`, …).
    pub component: String,
}

impl SstableFile {
    /// Parse a component file name; None for names that are not SSTable components
    /// (`manifest.json`, `schema.cql`, temporary files, …).
    pub fn parse(name: &str) -> Option<SstableFile> {
        let is_version = |v: &str| v.len() == 2 && v.bytes().all(|b| b.is_ascii_lowercase());
        let is_generation =
            |g: &str| !g.is_empty() && g.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        let parts: Vec<&str> = name.splitn(4, '-').collect();
        // 3.0+: <version>-<generation>-<format>-<component>
        if parts.len() == 4
            && is_version(parts[0])
            && is_generation(parts[1])
            && matches!(parts[2], "big" | "bti")
            && !parts[3].is_empty()
        {
            return Some(SstableFile {
                stem: format!("{}-{}-{}", parts[0], parts[1], parts[2]),
                version: parts[0].to_string(),
                generation: parts[1].to_string(),
                format: Some(parts[2].to_string()),
                component: parts[3].to_string(),
            });
        }
        // 2.x: <keyspace>-<table>-<version>-<generation>-<component>
        // (keyspace and table names are [A-Za-z0-9_], so '-' separates reliably; `tmp`/`tmplink`
        // files of an unfinished write are not components).
        let parts: Vec<&str> = name.splitn(5, '-').collect();
        if parts.len() == 5
            && is_version(parts[2])
            && parts[3].bytes().all(|b| b.is_ascii_digit())
            && !parts[3].is_empty()
            && !parts[4].is_empty()
        {
            return Some(SstableFile {
                stem: format!("{}-{}-{}-{}", parts[0], parts[1], parts[2], parts[3]),
                version: parts[2].to_string(),
                generation: parts[3].to_string(),
                format: None,
                component: parts[4].to_string(),
            });
        }
        None
    }

    /// True for `Digest.crc32`, `Digest.adler32`, `Digest.sha1`.
    pub fn is_digest(&self) -> bool {
        self.component.starts_with("Digest.")
    }

    /// True for `Data.db`.
    pub fn is_data(&self) -> bool {
        self.component == "Data.db"
    }
}

/// Split a table directory name `<table>-<32 hex id>` into (table, Some(id)); a 2.0-style
/// directory without an id gives (name, None).
pub fn split_table_dir(name: &str) -> (&str, Option<&str>) {
    if let Some((t, id)) = name.rsplit_once('-') {
        if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && !t.is_empty() {
            return (t, Some(id));
        }
    }
    (name, None)
}

/// True for a valid keyspace or table name (`[A-Za-z0-9_]+`, at most 222 characters).
pub fn is_valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 222 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Whether a Cassandra release of major version `major` reads SSTable format `version`
/// (BigFormat/BtiFormat `isCompatible`: 3.x reads 2.1's `ka` onwards, 4.x and 5.0 read 3.0's
/// `ma` onwards); None for a release this table does not know.
pub fn release_reads(major: u32, version: &str) -> Option<bool> {
    if version.len() != 2 {
        return None;
    }
    let at_least = |min: &str| version >= min;
    match major {
        2 => Some(matches!(version, "jb" | "ka" | "la")),
        3 => Some(at_least("ka") && !at_least("n")),
        4 => Some(at_least("ma") && !at_least("o")),
        5 => Some(at_least("ma") && !at_least("p") || version == "da"),
        _ => None,
    }
}

/// `<sub/>stem` of an SSTable component name (`.idx/md-1-big` for `.idx/md-1-big-Data.db`).
pub(crate) fn stem_key(name: &str) -> Option<String> {
    let (sub, base) = match name.rsplit_once('/') {
        Some((d, b)) => (format!("{d}/"), b),
        None => (String::new(), name),
    };
    SstableFile::parse(base).map(|s| format!("{sub}{}", s.stem))
}

/// The name of component `sf` under generation `gen`.
fn with_generation(sf: &SstableFile, gen: u64) -> String {
    match &sf.format {
        Some(fmt) => format!("{}-{gen}-{fmt}-{}", sf.version, sf.component),
        // 2.x: <ks>-<table>-<version>-<generation>: keep what precedes the generation.
        None => {
            let prefix = sf.stem.rsplit_once('-').map(|(p, _)| p).unwrap_or(&sf.stem);
            format!("{prefix}-{gen}-{}", sf.component)
        }
    }
}

/// The highest numeric SSTable generation in `dir` (0 when none or no such directory).
fn max_generation(dir: &Path) -> Result<u64> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    let mut max = 0;
    for e in rd {
        let e = e.with_context(|| format!("listing {}", dir.display()))?;
        if let Some(sf) = e.file_name().to_str().and_then(SstableFile::parse) {
            if let Ok(g) = sf.generation.parse::<u64>() {
                max = max.max(g);
            }
        }
    }
    Ok(max)
}

/// New names for the components `names` (relative to `dest_dir`): every SSTable with a numeric
/// generation gets one above the highest in its destination directory, in the backed-up order,
/// so no name collides with the node's own SSTables. 5.0's time-based ids are unique already
/// and keep their names.
pub(crate) fn fresh_names(dest_dir: &Path, names: &[String]) -> Result<BTreeMap<String, String>> {
    // per directory ("" or ".idx"): backed-up numeric generations, ascending
    let mut gens: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for n in names {
        let (sub, base) = n.rsplit_once('/').unwrap_or(("", n));
        if let Some(g) = SstableFile::parse(base).and_then(|s| s.generation.parse::<u64>().ok()) {
            gens.entry(sub.to_string()).or_default().insert(g);
        }
    }
    let mut map_gen: BTreeMap<(String, u64), u64> = BTreeMap::new();
    for (sub, set) in &gens {
        let base = max_generation(&dest_dir.join(sub))?;
        for (i, g) in set.iter().enumerate() {
            map_gen.insert((sub.clone(), *g), base + 1 + i as u64);
        }
    }
    let mut out = BTreeMap::new();
    for n in names {
        let (sub, base) = n.rsplit_once('/').unwrap_or(("", n));
        let Some(sf) = SstableFile::parse(base) else {
            continue;
        };
        let Ok(g) = sf.generation.parse::<u64>() else {
            continue;
        };
        let new_base = with_generation(&sf, map_gen[&(sub.to_string(), g)]);
        let new = if sub.is_empty() {
            new_base
        } else {
            format!("{sub}/{new_base}")
        };
        out.insert(n.clone(), new);
    }
    Ok(out)
}
