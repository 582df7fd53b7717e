//! The source layout's rules, checked on the source itself:
//! - the modules of `src/server/` import each other as a tree (no cycles), so each
//!   driver can be read, built and tested above the layers it uses;
//! - the shard context (`server::shard`) imports no driver.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn server_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/server")
}

/// The top-level module of `src/server/` a file belongs to (`config/load.rs` → `config`).
fn module_of(path: &Path) -> String {
    let rel = path.strip_prefix(server_dir()).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Strip `//` comments (doc comments name other modules freely) and `#[cfg(test)]`
/// modules at the end of a file (tests may use anything).
fn code_of(text: &str) -> String {
    let body = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    body.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `NEEDLE NAME` (e.g. `crate::server::NAME`) the code refers to, including grouped imports
/// (`use crate::server::{a, b::C}`).
fn referenced(code: &str, needle: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find(needle) {
        rest = &rest[i + needle.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(&server_dir(), &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let module = module_of(&file);
        if module == "mod" {
            continue; // the module list itself
        }
        let code = code_of(&std::fs::read_to_string(&file).unwrap());
        let edges = graph.entry(module.clone()).or_default();
        let mut refs = referenced(&code, "crate::server::");
        // In a file directly under src/server/, `super::` is `crate::server::`.
        if file.parent() == Some(server_dir().as_path()) {
            refs.extend(referenced(&code, "super::"));
        }
        for to in refs {
            if to != module {
                edges.insert(to);
            }
        }
    }
    graph
}

fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|n| n == node) {
            let mut cycle = path[i..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(c) = visit(node, graph, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

#[test]
fn server_modules_import_each_other_as_a_tree() {
    let graph = graph();
    assert!(graph.len() > 10, "found only {:?}", graph.keys());
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import cycle in src/server: {}", cycle.join(" -> "));
    }
}

#[test]
fn the_shard_context_imports_no_driver() {
    let graph = graph();
    let drivers = [
        "app", "rtmp", "http", "hls", "api", "ingest", "record", "egress",
    ];
    let shard = &graph["shard"];
    for d in drivers {
        assert!(
            !shard.contains(d),
            "server::shard imports the driver {d}: {shard:?}"
        );
    }
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    assert_eq!(find_cycle(&g), None);
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(
        find_cycle(&g),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    assert_eq!(
        referenced(
            "use crate::server::{cmd::X, media};\ncrate::server::http::f()",
            "crate::server::"
        ),
        ["cmd", "http", "media"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
}
