//! The architecture, checked: each layer of the main crate imports only layers below it, no two
//! engines import each other, and no module imports form a cycle. The layers and their rules are
//! described in docs/architecture.md; this test is what keeps that page true.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layer of a top-level module of the main crate, bottom (0) up. `None`: not a module of ours.
fn layer(top: &str) -> Option<u32> {
    Some(match top {
        // `error` is the crate's vocabulary (exit codes, error kinds): it imports nothing of ours.
        "model" | "error" => 0,
        "store" => 2,
        "repo" => 3,
        "engines" => 4,
        // The configuration file holds the engines' sections; engines get only their section.
        "config" => 5,
        "ops" => 6,
        "cli" | "commands" | "ui" | "main" => 7,
        _ => return None,
    })
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

/// Module path of a source file: src/repo/codec.rs -> ["repo", "codec"]; src/lib.rs -> [].
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|l| l == "mod" || l == "lib") {
        parts.pop();
    }
    parts
}

/// The node a module counts as in the cycle check: two levels deep (`repo::codec`,
/// `engines::mariadb`, `ops::restore`), one for flat modules.
fn node(path: &[String]) -> String {
    path.iter().take(2).cloned().collect::<Vec<_>>().join("::")
}

/// Every `crate::a::b` (or `mnbackup::a::b` in the binary) a file names, outside its tests.
fn references(text: &str, in_bin: bool) -> BTreeSet<Vec<String>> {
    let body = match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    };
    let prefix = if in_bin { "mnbackup::" } else { "crate::" };
    let mut out = BTreeSet::new();
    for line in body.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find(prefix) {
            let before = rest[..i].chars().last();
            rest = &rest[i + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let mut path = Vec::new();
            let mut s = rest;
            loop {
                let end = s
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .unwrap_or(s.len());
                if end == 0 {
                    break;
                }
                path.push(s[..end].to_string());
                s = &s[end..];
                if !s.starts_with("::") || path.len() == 2 {
                    break;
                }
                s = &s[2..];
            }
            if !path.is_empty() {
                out.insert(path);
            }
        }
    }
    out
}

#[test]
fn layers_import_only_downward_and_modules_form_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rs_files(&src, &mut files);
    files.sort();
    let mut violations = Vec::new();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        // `tests.rs` files are a module's unit tests (`#[cfg(test)] mod tests;`), not its code.
        if f.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let me = module_of(&src, f);
        let in_bin = me.first().is_some_and(|m| m == "main");
        let Some(my_top) = me.first() else { continue };
        let Some(my_layer) = layer(my_top) else {
            violations.push(format!("{}: module `{my_top}` has no layer", f.display()));
            continue;
        };
        let text = std::fs::read_to_string(f).unwrap();
        for r in references(&text, in_bin) {
            let Some(their_layer) = layer(&r[0]) else {
                continue;
            };
            if their_layer > my_layer {
                violations.push(format!(
                    "{}: layer `{my_top}` imports `{}` from a layer above",
                    f.display(),
                    r.join("::")
                ));
            }
            if my_top == "engines"
                && r[0] == "engines"
                && me.len() > 1
                && r.len() > 1
                && me[1] != r[1]
                && !is_module_item(&r[1])
            {
                violations.push(format!(
                    "{}: engine `{}` imports engine `{}`",
                    f.display(),
                    me[1],
                    r[1]
                ));
            }
            let (a, b) = (node(&me), node(&r));
            if a != b && !b.is_empty() {
                graph.entry(a).or_default().insert(b);
            }
        }
    }
    if let Some(cycle) = find_cycle(&graph) {
        violations.push(format!("import cycle: {}", cycle.join(" -> ")));
    }
    assert!(
        violations.is_empty(),
        "architecture violations:\n{}",
        violations.join("\n")
    );
}

/// `engines::Component`, `engines::Registry`, ...: items of engines/mod.rs, not engine modules.
fn is_module_item(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_uppercase()) || name == "default_registry"
}

fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            // A parent module naming its own child (`repo` -> `repo::codec`) is not a cycle.
            if m.starts_with(&format!("{n}::")) || n.starts_with(&format!("{m}::")) {
                continue;
            }
            match state.get(m.as_str()) {
                Some(1) => {
                    let i = stack.iter().position(|s| s == m).unwrap();
                    let mut c = stack[i..].to_vec();
                    c.push(m.clone());
                    return Some(c);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(m, g, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in graph.keys() {
        if !state.contains_key(n.as_str()) {
            let mut stack = Vec::new();
            if let Some(c) = visit(n, graph, &mut state, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}

#[test]
fn the_checker_finds_an_upward_import_and_a_cycle() {
    let refs = references(
        "use crate::ops::restore::Session;\nfn f() { crate::repo::x(); }",
        false,
    );
    assert!(refs.contains(&vec!["ops".to_string(), "restore".to_string()]));
    assert!(refs.contains(&vec!["repo".to_string(), "x".to_string()]));
    let mut g = BTreeMap::new();
    g.insert(
        "repo::codec".to_string(),
        BTreeSet::from(["repo::lock".to_string()]),
    );
    g.insert(
        "repo::lock".to_string(),
        BTreeSet::from(["repo::codec".to_string()]),
    );
    assert!(find_cycle(&g).is_some());
    g.remove("repo::lock");
    assert!(find_cycle(&g).is_none());
}

/// Sizes the issue set: no file over 800 lines outside tests, fixtures and the test-only parts.
#[test]
fn no_source_file_over_800_lines() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let restore = Path::new(env!("CARGO_MANIFEST_DIR")).join("restore/src");
    let mut files = Vec::new();
    rs_files(&src, &mut files);
    rs_files(&restore, &mut files);
    let mut big = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let code = match text.find("#[cfg(test)]") {
            Some(i) => &text[..i],
            None => &text,
        };
        let n = code.lines().count();
        if n > 800 {
            big.push(format!("{}: {n} lines before its tests", f.display()));
        }
    }
    assert!(big.is_empty(), "files over 800 lines:\n{}", big.join("\n"));
}
