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

/// Function size limits the issue set: no product function longer than this many lines (from the
/// line of its opening brace to the line of its closing brace)...
const MAX_FN_LINES: usize = 150;
/// ... or with more parameters than this (`self` not counted).
const MAX_FN_PARAMS: usize = 7;
/// Exceptions to the two limits: (file relative to the workspace, function name, why). Empty: every
/// product function is within them.
const FN_SIZE_ALLOWLIST: &[(&str, &str, &str)] = &[];

/// A function found by the size scanner: where, how long, how many parameters.
struct FnSize {
    name: String,
    line: usize,
    lines: usize,
    params: usize,
}

/// `#[cfg(test)]` or `#[test]` on an item: test code, outside the limits.
fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("test")
            || (a.path().is_ident("cfg")
                && a.parse_args::<syn::Meta>()
                    .is_ok_and(|m| m.path().is_ident("test")))
    })
}

fn fn_size(sig: &syn::Signature, block: &syn::Block, out: &mut Vec<FnSize>) {
    let open = block.brace_token.span.open().start().line;
    let close = block.brace_token.span.close().end().line;
    let params = sig
        .inputs
        .iter()
        .filter(|a| matches!(a, syn::FnArg::Typed(_)))
        .count();
    out.push(FnSize {
        name: sig.ident.to_string(),
        line: sig.ident.span().start().line,
        lines: close + 1 - open,
        params,
    });
    // Functions declared inside a body are functions too.
    for stmt in &block.stmts {
        if let syn::Stmt::Item(item) = stmt {
            fn_sizes(std::slice::from_ref(item), out);
        }
    }
}

/// Every function, method and default trait method of `items`, outside test-only items.
fn fn_sizes(items: &[syn::Item], out: &mut Vec<FnSize>) {
    for item in items {
        match item {
            syn::Item::Fn(f) if !is_test_only(&f.attrs) => fn_size(&f.sig, &f.block, out),
            syn::Item::Impl(i) if !is_test_only(&i.attrs) => {
                for it in &i.items {
                    if let syn::ImplItem::Fn(f) = it {
                        if !is_test_only(&f.attrs) {
                            fn_size(&f.sig, &f.block, out);
                        }
                    }
                }
            }
            syn::Item::Trait(t) if !is_test_only(&t.attrs) => {
                for it in &t.items {
                    if let syn::TraitItem::Fn(f) = it {
                        if let Some(block) = &f.default {
                            if !is_test_only(&f.attrs) {
                                fn_size(&f.sig, block, out);
                            }
                        }
                    }
                }
            }
            syn::Item::Mod(m) if !is_test_only(&m.attrs) => {
                if let Some((_, items)) = &m.content {
                    fn_sizes(items, out);
                }
            }
            _ => {}
        }
    }
}

/// The functions of one source text that break a limit, as messages.
fn oversized(file: &str, text: &str) -> Vec<String> {
    let ast = syn::parse_file(text).unwrap_or_else(|e| panic!("{file}: does not parse: {e}"));
    let mut sizes = Vec::new();
    fn_sizes(&ast.items, &mut sizes);
    let mut out = Vec::new();
    for s in sizes {
        if FN_SIZE_ALLOWLIST
            .iter()
            .any(|(f, n, _)| *f == file && *n == s.name)
        {
            continue;
        }
        if s.lines > MAX_FN_LINES {
            out.push(format!(
                "{file}:{}: fn {} is {} lines (limit {MAX_FN_LINES})",
                s.line, s.name, s.lines
            ));
        }
        if s.params > MAX_FN_PARAMS {
            out.push(format!(
                "{file}:{}: fn {} takes {} parameters (limit {MAX_FN_PARAMS})",
                s.line, s.name, s.params
            ));
        }
    }
    out
}

/// Sizes the issue set: no product function over 150 lines or with more than 7 parameters, in the
/// main crate, the restore crate and the scheduler (tests, fixtures, `#[cfg(test)]` modules,
/// `tests.rs` files and `#[test]` functions aside).
#[test]
fn no_product_function_over_150_lines_or_7_parameters() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "restore/src", "scheduler/src"] {
        if root.join(dir).is_dir() {
            rs_files(&root.join(dir), &mut files);
        }
    }
    files.sort();
    assert!(files.len() > 20, "the scan found too few files: {files:?}");
    let mut big = Vec::new();
    for f in &files {
        if f.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let rel = f.strip_prefix(root).unwrap().to_string_lossy().to_string();
        big.extend(oversized(&rel, &std::fs::read_to_string(f).unwrap()));
    }
    for (file, name, why) in FN_SIZE_ALLOWLIST {
        assert!(
            !why.is_empty(),
            "{file}: {name}: an exception needs a reason"
        );
    }
    assert!(
        big.is_empty(),
        "functions over the size limits:\n{}",
        big.join("\n")
    );
}

#[test]
fn the_size_checker_counts_lines_and_parameters_and_skips_tests() {
    let long_body = "    let _ = 1;\n".repeat(150);
    let text = format!(
        "fn long() {{\n{long_body}}}\n\
         fn wide(a: u8, b: u8, c: u8, d: u8, e: u8, f: u8, g: u8, h: u8) {{}}\n\
         struct S;\n\
         impl S {{ fn seven(&self, a: u8, b: u8, c: u8, d: u8, e: u8, f: u8, g: u8) {{}} }}\n\
         #[cfg(test)]\nmod tests {{ fn long_test() {{\n{long_body}}} }}\n\
         #[test]\nfn long_test_fn() {{\n{long_body}}}\n"
    );
    let found = oversized("x.rs", &text);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].contains("fn long is 152 lines"), "{found:?}");
    assert!(found[1].contains("fn wide takes 8 parameters"), "{found:?}");
}
