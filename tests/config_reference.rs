//! docs/configuration.md lists every configuration key, and only keys that exist.
//!
//! The keys are read from the code itself: every `Deserialize` struct under src/ is parsed (with
//! `syn`) and the tree is walked from `config::Config`, honouring `#[serde(rename)]`, `skip`
//! and `flatten`. The reference's tables (`## \`[section]\`` headings, rows starting with
//! `` | `key` | ``) must name exactly these keys, and its complete example (the ```toml block
//! after "Every key") must parse as a `Config` and set exactly these keys.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// (key, type) of a struct's fields as serde reads them; `flatten`ed fields are marked.
#[derive(Clone)]
struct Field {
    key: String,
    ty: syn::Type,
    flatten: bool,
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn serde_metas(attrs: &[syn::Attribute]) -> Vec<syn::Meta> {
    let mut out = Vec::new();
    for a in attrs.iter().filter(|a| a.path().is_ident("serde")) {
        let list = a
            .parse_args_with(
                syn::punctuated::Punctuated::<syn::Meta, syn::Token![,]>::parse_terminated,
            )
            .unwrap();
        out.extend(list);
    }
    out
}

fn derives_deserialize(attrs: &[syn::Attribute]) -> bool {
    attrs
        .iter()
        .filter(|a| a.path().is_ident("derive"))
        .any(|a| {
            a.parse_args_with(
                syn::punctuated::Punctuated::<syn::Path, syn::Token![,]>::parse_terminated,
            )
            .unwrap()
            .iter()
            .any(|p| p.segments.last().is_some_and(|s| s.ident == "Deserialize"))
        })
}

/// Every `Deserialize` struct with named fields under src/: name -> candidates (file, fields).
fn structs() -> BTreeMap<String, Vec<(PathBuf, Vec<Field>)>> {
    let mut files = Vec::new();
    rs_files(&Path::new(ROOT).join("src"), &mut files);
    let mut out: BTreeMap<String, Vec<(PathBuf, Vec<Field>)>> = BTreeMap::new();
    for f in files {
        let ast = syn::parse_file(&std::fs::read_to_string(&f).unwrap())
            .unwrap_or_else(|e| panic!("parsing {}: {e}", f.display()));
        let mut items: Vec<syn::Item> = ast.items;
        while let Some(item) = items.pop() {
            match item {
                syn::Item::Mod(m) => items.extend(m.content.map(|c| c.1).unwrap_or_default()),
                syn::Item::Struct(s) if derives_deserialize(&s.attrs) => {
                    let syn::Fields::Named(named) = &s.fields else {
                        continue;
                    };
                    for m in serde_metas(&s.attrs) {
                        assert!(
                            !m.path().is_ident("rename_all"),
                            "{}: rename_all on {} is not handled by this test",
                            f.display(),
                            s.ident
                        );
                    }
                    let mut fields = Vec::new();
                    for fld in &named.named {
                        let mut key = fld.ident.as_ref().unwrap().to_string();
                        let (mut skip, mut flatten) = (false, false);
                        for m in serde_metas(&fld.attrs) {
                            if m.path().is_ident("skip") || m.path().is_ident("skip_deserializing")
                            {
                                skip = true;
                            } else if m.path().is_ident("flatten") {
                                flatten = true;
                            } else if m.path().is_ident("rename") {
                                if let syn::Meta::NameValue(nv) = &m {
                                    if let syn::Expr::Lit(syn::ExprLit {
                                        lit: syn::Lit::Str(s),
                                        ..
                                    }) = &nv.value
                                    {
                                        key = s.value();
                                    }
                                }
                            }
                        }
                        if !skip {
                            fields.push(Field {
                                key,
                                ty: fld.ty.clone(),
                                flatten,
                            });
                        }
                    }
                    out.entry(s.ident.to_string())
                        .or_default()
                        .push((f.clone(), fields));
                }
                _ => {}
            }
        }
    }
    out
}

/// The struct a field type leads to (through Option, Vec, Box), if it is one of `known`.
fn inner_struct(
    ty: &syn::Type,
    known: &BTreeMap<String, Vec<(PathBuf, Vec<Field>)>>,
) -> Option<String> {
    let syn::Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    let name = last.ident.to_string();
    if ["Option", "Vec", "Box"].contains(&name.as_str()) {
        if let syn::PathArguments::AngleBracketed(a) = &last.arguments {
            if let Some(syn::GenericArgument::Type(t)) = a.args.first() {
                return inner_struct(t, known);
            }
        }
        return None;
    }
    known.contains_key(&name).then_some(name)
}

fn walk(
    name: &str,
    prefix: &str,
    known: &BTreeMap<String, Vec<(PathBuf, Vec<Field>)>>,
    out: &mut BTreeSet<String>,
) {
    let cands = &known[name];
    let files: Vec<_> = cands.iter().map(|(f, _)| f.display().to_string()).collect();
    assert_eq!(
        cands.len(),
        1,
        "Deserialize structs named {name} in {files:?}; the test cannot tell which the config uses"
    );
    for f in &cands[0].1 {
        match inner_struct(&f.ty, known) {
            Some(s) if f.flatten => walk(&s, prefix, known, out),
            Some(s) => walk(&s, &format!("{prefix}{}.", f.key), known, out),
            None => {
                out.insert(format!("{prefix}{}", f.key));
            }
        }
    }
}

fn code_keys() -> BTreeSet<String> {
    let known = structs();
    let mut keys = BTreeSet::new();
    walk("Config", "", &known, &mut keys);
    keys
}

fn reference() -> String {
    std::fs::read_to_string(Path::new(ROOT).join("docs/configuration.md")).unwrap()
}

/// Keys in the reference's tables: `section.key` for each `| \`key\` |` row under a
/// `## \`[section]\`` or `## \`[[section]]\`` heading.
fn documented_keys(md: &str) -> BTreeSet<String> {
    let mut section: Option<String> = None;
    let mut keys = BTreeSet::new();
    for line in md.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            section = h
                .trim()
                .strip_prefix('`')
                .and_then(|h| h.strip_suffix('`'))
                .map(|h| h.trim_matches(|c| c == '[' || c == ']').to_string());
        } else if let (Some(sec), Some(row)) = (&section, line.strip_prefix("| `")) {
            if let Some(end) = row.find("` |") {
                keys.insert(format!("{sec}.{}", &row[..end]));
            }
        }
    }
    keys
}

/// Dotted keys set by a TOML document (arrays of tables are walked into).
fn toml_keys(v: &toml::Value, prefix: &str, out: &mut BTreeSet<String>) {
    if let toml::Value::Table(t) = v {
        for (k, val) in t {
            match val {
                toml::Value::Table(_) => toml_keys(val, &format!("{prefix}{k}."), out),
                toml::Value::Array(a) if a.iter().all(|x| x.is_table()) && !a.is_empty() => {
                    for x in a {
                        toml_keys(x, &format!("{prefix}{k}."), out);
                    }
                }
                _ => {
                    out.insert(format!("{prefix}{k}"));
                }
            }
        }
    }
}

fn example(md: &str) -> String {
    let start = md
        .find("Every key")
        .expect("the reference has no \"Every key\" example");
    let rest = &md[start..];
    let open = rest
        .find("```toml\n")
        .expect("no ```toml block after \"Every key\"")
        + 8;
    let close = rest[open..].find("```").unwrap();
    rest[open..open + close].to_string()
}

#[test]
fn the_walk_finds_the_known_keys() {
    // The walk itself works: a sample of keys from every part of the tree.
    let keys = code_keys();
    for k in [
        "repository.path",
        "compression.level",
        "delta.max_chain",
        "retention.keep_daily",
        "schedule.cron",
        "daemon.state_dir",
        "mariadb.zstack_properties",
        "cassandra.nodetool",
        "files.paths",
        "restore.post_hooks",
    ] {
        assert!(
            keys.contains(k),
            "{k} not found in the code's keys {keys:?}"
        );
    }
    assert!(!keys.contains("mariadb"), "a section is not a key");
}

#[test]
fn every_config_key_is_documented_and_no_other() {
    let code = code_keys();
    let doc = documented_keys(&reference());
    let missing: Vec<_> = code.difference(&doc).collect();
    let stale: Vec<_> = doc.difference(&code).collect();
    assert!(missing.is_empty() && stale.is_empty(),
        "docs/configuration.md is out of step with the config types.\n\
         Keys in the code but not in the reference (add a row `| `key` | type | default | meaning |` \
         under its `## `[section]`` heading): {missing:?}\n\
         Keys in the reference that the code does not know: {stale:?}");
}

#[test]
fn the_complete_example_parses_and_sets_every_key() {
    let md = reference();
    let text = example(&md);
    mnbackup::config::Config::parse(&text, "the example in docs/configuration.md")
        .unwrap_or_else(|e| panic!("{e:#}"));
    let mut set = BTreeSet::new();
    let table: toml::Table = toml::from_str(&text).unwrap();
    toml_keys(&toml::Value::Table(table), "", &mut set);
    let code = code_keys();
    let unset: Vec<_> = code.difference(&set).collect();
    assert!(
        unset.is_empty(),
        "the complete example does not set {unset:?}"
    );
}
