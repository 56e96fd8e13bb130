use std::io::{self, Read};

use super::cql::{keyspace_cql_script, never_placed, split_cql_statements};
use super::digest::{Adler32, Crc32, DigestAlgo, ExpectedDigest, Sha1};
use super::plan::check_relative_name;
use super::sstable::{release_reads, split_table_dir, SstableFile};
use super::tool::{display_argv, split_command_line};
use super::*;

#[test]
fn checksums_match_known_vectors() {
    let mut c = Crc32::new();
    c.update(b"123456789");
    assert_eq!(c.value(), 0xCBF4_3926);
    let mut c = Crc32::new();
    c.update(b"1234");
    c.update(b"56789");
    assert_eq!(c.value(), 0xCBF4_3926);
    let mut a = Adler32::new();
    a.update(b"Wikipedia");
    assert_eq!(a.value(), 0x11E6_0398);
    let big = vec![0xffu8; 100_000];
    let mut a = Adler32::new();
    a.update(&big);
    // zlib: adler32 of 100000 x 0xff
    let (mut s1, mut s2) = (1u64, 0u64);
    for &b in &big {
        s1 = (s1 + b as u64) % 65521;
        s2 = (s2 + s1) % 65521;
    }
    assert_eq!(a.value() as u64, (s2 << 16) | s1);
    let mut s = Sha1::new();
    s.update(b"abc");
    assert_eq!(s.hex(), "a9993e364706816aba3e25717850c26c9cd0d89d");
    let mut s = Sha1::new();
    s.update(b"abcdbcdecdefdefgefghfghighijhi");
    s.update(b"jkijkljklmklmnlmnomnopnopq");
    assert_eq!(s.hex(), "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
    assert_eq!(
        Sha1::new().hex(),
        "da39a3ee5e6b4b0d3255bfef95601890afd80709"
    );
}

#[test]
fn parses_sstable_names_of_every_format() {
    let s = SstableFile::parse("md-12-big-Data.db").unwrap();
    assert_eq!((s.stem.as_str(), s.version.as_str()), ("md-12-big", "md"));
    assert_eq!(s.component, "Data.db");
    let s = SstableFile::parse("zstack_billing-usage-ka-3-Digest.sha1").unwrap();
    assert_eq!(s.stem, "zstack_billing-usage-ka-3");
    assert!(s.is_digest());
    assert_eq!(s.format, None);
    let s = SstableFile::parse("da-3gdd_0jkt_4dbtc2fbd6bzb3ekwo-bti-Partitions.db").unwrap();
    assert_eq!(s.format.as_deref(), Some("bti"));
    assert_eq!(s.generation, "3gdd_0jkt_4dbtc2fbd6bzb3ekwo");
    let s = SstableFile::parse("nb-5-big-SAI+aa+metrics+idx+Meta.db").unwrap();
    assert_eq!(s.component, "SAI+aa+metrics+idx+Meta.db");
    assert!(SstableFile::parse("manifest.json").is_none());
    assert!(SstableFile::parse("schema.cql").is_none());
    assert_eq!(
        split_table_dir("data_points-6b1bd4d0a7e011e5a5d1a9e6c2a50e1b"),
        ("data_points", Some("6b1bd4d0a7e011e5a5d1a9e6c2a50e1b"))
    );
    assert_eq!(split_table_dir("old_style"), ("old_style", None));
}

#[test]
fn parses_digests() {
    let d = ExpectedDigest::parse("md-1-big-Digest.crc32", b"3421780262").unwrap();
    assert_eq!(d.algo, DigestAlgo::Crc32);
    let d = ExpectedDigest::parse("ks-t-ka-1-Digest.sha1", b"12345\n").unwrap();
    assert_eq!(d.algo, DigestAlgo::Adler32);
    let d = ExpectedDigest::parse(
        "ks-t-jb-1-Digest.sha1",
        b"A9993E364706816ABA3E25717850C26C9CD0D89D  ks-t-jb-1-Data.db\n",
    )
    .unwrap();
    assert_eq!(d.algo, DigestAlgo::Sha1);
    assert_eq!(d.value, "a9993e364706816aba3e25717850c26c9cd0d89d");
    assert!(ExpectedDigest::parse("md-1-big-Digest.crc32", b"garbage").is_err());
    assert!(ExpectedDigest::parse("md-1-big-Digest.crc32", b"99999999999").is_err());
}

#[test]
fn splits_command_lines_and_masks_passwords() {
    assert_eq!(
        split_command_line(r#"/opt/c/bin/nodetool -Dx='a b' "q\"x""#),
        vec!["/opt/c/bin/nodetool", "-Dx=a b", "q\"x"]
    );
    let argv: Vec<String> = ["nodetool", "-u", "u", "-pw", "secret", "status"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let shown = display_argv(&argv);
    assert!(!shown.contains("secret"), "{shown}");
}

#[test]
fn keyspace_cql_statements_are_split_and_made_if_not_exists() {
    let text = "\nCREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', \
                'replication_factor': '3'}  AND durable_writes = true;\n\n\
                /* a; comment */\nCREATE TABLE ks.t (\n    k int PRIMARY KEY\n) WITH \
                comment = 'it''s; here';\n-- done;\nCREATE CUSTOM INDEX i ON ks.t (k);\n\
                CREATE TABLE IF NOT EXISTS ks.u (k int PRIMARY KEY);\n\
                CREATE MATERIALIZED VIEW ks.v AS SELECT * FROM ks.t;\n";
    let stmts = split_cql_statements(text);
    assert_eq!(stmts.len(), 5, "{stmts:?}");
    assert!(stmts[1].ends_with("comment = 'it''s; here'"), "{stmts:?}");
    let script = keyspace_cql_script("ks", text).unwrap();
    assert!(
        script.contains(
            "CREATE KEYSPACE IF NOT EXISTS ks WITH replication = {'class': \
                         'SimpleStrategy', 'replication_factor': '3'}"
        ),
        "{script}"
    );
    assert!(
        script.contains("CREATE TABLE IF NOT EXISTS ks.t (\n"),
        "{script}"
    );
    assert!(
        script.contains("CREATE CUSTOM INDEX IF NOT EXISTS i ON"),
        "{script}"
    );
    assert!(
        script.contains("CREATE TABLE IF NOT EXISTS ks.u ("),
        "{script}"
    );
    assert!(!script.contains("IF NOT EXISTS IF"), "{script}");
    assert!(
        script.contains("CREATE MATERIALIZED VIEW IF NOT EXISTS ks.v"),
        "{script}"
    );
    assert!(keyspace_cql_script("ks", "CREATE TABLE ks.t (k int PRIMARY KEY);").is_err());

    let open = || -> OpenFn<'static> { Box::new(|| Ok(Box::new(io::empty()) as Box<dyn Read>)) };
    let c = RestoreComponent::from_item_name("cassandra/ks/keyspace.cql", 1, open()).unwrap();
    assert_eq!((c.keyspace.as_str(), c.table.as_str()), ("ks", ""));
    assert_eq!(c.name, KEYSPACE_CQL);
    assert!(RestoreComponent::from_item_name("cassandra/ks/other", 1, open()).is_none());
}

#[test]
fn releases_read_the_sstable_formats_cassandra_reads() {
    assert_eq!(release_reads(3, "ka"), Some(true));
    assert_eq!(release_reads(3, "md"), Some(true));
    assert_eq!(release_reads(3, "nb"), Some(false));
    assert_eq!(release_reads(4, "ka"), Some(false));
    assert_eq!(release_reads(4, "mc"), Some(true));
    assert_eq!(release_reads(4, "nb"), Some(true));
    assert_eq!(release_reads(4, "oa"), Some(false));
    assert_eq!(release_reads(5, "oa"), Some(true));
    assert_eq!(release_reads(5, "da"), Some(true));
    assert_eq!(release_reads(5, "la"), Some(false));
    assert_eq!(release_reads(9, "zz"), None);
    assert!(never_placed("system_schema") && !never_placed("kairosdb"));
    assert!(never_placed("systems"));
}

#[test]
fn refuses_unsafe_component_names() {
    assert!(check_relative_name("md-1-big-Data.db").is_ok());
    assert!(check_relative_name(".idx_host/md-1-big-Data.db").is_ok());
    assert!(check_relative_name("../x").is_err());
    assert!(check_relative_name("snapshots/x/md-1-big-Data.db").is_err());
    assert!(check_relative_name("sub/x").is_err());
    assert!(check_relative_name("/etc/passwd").is_err());
}

#[test]
fn system_keyspaces_are_excluded() {
    for ks in [
        "system",
        "system_auth",
        "system_schema",
        "system_distributed",
        "system_traces",
        "system_views",
        "system_virtual_schema",
        "dse_security",
    ] {
        assert!(is_system_keyspace(ks), "{ks}");
    }
    for ks in ["zstack_billing", "zstack_logging", "kairosdb", "systems"] {
        assert!(!is_system_keyspace(ks), "{ks}");
    }
}
