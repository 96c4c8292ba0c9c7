//! The crate is a one-way house: no module imports one that (transitively) imports it back, and
//! the vocabulary modules are leaves. Read from the source itself: every `crate::…` and `super::…`
//! path outside comments, including grouped `use crate::{a, b::{c, d}}` trees and inline paths.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules that everything may use and that use nothing of the crate.
const LEAVES: &[&str] = &["model", "output", "units", "secret", "clock", "signature"];

type Graph = BTreeMap<String, BTreeSet<String>>;

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let files = sources();
    let (top, siblings) = graphs(&files);
    assert!(top.len() > 15, "found only {} top-level modules: {:?}", top.len(), top.keys());
    if let Some(cycle) = find_cycle(&top) {
        panic!("import cycle between top-level modules: {}", cycle.join(" → "));
    }
    if let Some(cycle) = find_cycle(&siblings) {
        panic!("import cycle between sibling modules: {}", cycle.join(" → "));
    }
}

#[test]
fn the_vocabulary_modules_are_leaves() {
    let (top, _) = graphs(&sources());
    for leaf in LEAVES {
        let uses = top.get(*leaf).unwrap_or_else(|| panic!("no module `{leaf}`"));
        assert!(uses.is_empty(), "`{leaf}` must use nothing of the crate, but uses {uses:?}");
    }
}

#[test]
fn the_checker_sees_grouped_inline_and_relative_paths() {
    let refs = references(
        &["config".into(), "mirror".into()],
        "use crate::{plan, report::{self, Report}};\n// crate::commented::out\nlet x = crate::push::once(1);\nuse super::fields::Fields;\n/// [`crate::doc::link`]\n",
    );
    let expected: Vec<Vec<String>> =
        [["plan"].as_slice(), &["report"], &["report", "Report"], &["push", "once"], &["config", "fields", "Fields"]]
            .iter()
            .map(|p| p.iter().map(|s| s.to_string()).collect())
            .collect();
    assert_eq!(refs, expected);
    let mut g = Graph::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    assert_eq!(find_cycle(&g), None);
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(find_cycle(&g), Some(vec!["a".into(), "b".into(), "c".into(), "a".into()]));
}

/// Every library source file with its module path (`src/config/mirror.rs` → `config::mirror`).
fn sources() -> Vec<(Vec<String>, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let module = module_path(&root, &path);
                // The binary is outside the library; lib.rs only declares modules.
                if !module.is_empty() && module != ["main"] {
                    out.push((module, std::fs::read_to_string(&path).unwrap()));
                }
            }
        }
    }
    out
}

fn module_path(root: &Path, file: &Path) -> Vec<String> {
    let rel: PathBuf = file.strip_prefix(root).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|l| l == "mod" || l == "lib") {
        parts.pop();
    }
    parts
}

/// The top-level module graph, and the graph between sibling files of one directory module
/// (a directory module's own `mod.rs` and its files form one room and may refer to each other).
fn graphs(files: &[(Vec<String>, String)]) -> (Graph, Graph) {
    let mut top = Graph::new();
    let mut siblings = Graph::new();
    for (module, text) in files {
        top.entry(module[0].clone()).or_default();
        for target in references(module, text) {
            if target.is_empty() || !files.iter().any(|(m, _)| m[0] == target[0]) {
                continue;
            }
            if target[0] != module[0] {
                top.entry(module[0].clone()).or_default().insert(target[0].clone());
            } else if module.len() >= 2 && target.len() >= 2 && target[1] != module[1] {
                let is_file = |name: &str| files.iter().any(|(m, _)| m.len() >= 2 && m[0] == module[0] && m[1] == name);
                if is_file(&target[1]) {
                    let from = format!("{}::{}", module[0], module[1]);
                    siblings.entry(from).or_default().insert(format!("{}::{}", target[0], target[1]));
                }
            }
        }
    }
    (top, siblings)
}

/// Absolute module paths (from the crate root) that `text`, the source of `module`, refers to.
fn references(module: &[String], text: &str) -> Vec<Vec<String>> {
    let code: String = text.lines().map(strip_comment).collect::<Vec<_>>().join("\n");
    let mut out = Vec::new();
    for (keyword, base) in [("crate::", Vec::new()), ("super::", module[..module.len() - 1].to_vec())] {
        let mut rest = code.as_str();
        while let Some(at) = rest.find(keyword) {
            let preceded_by_ident =
                rest[..at].chars().last().is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
            rest = &rest[at + keyword.len()..];
            if preceded_by_ident {
                continue;
            }
            let mut chars = rest.chars().peekable();
            for path in use_tree(&mut chars) {
                let mut full = base.clone();
                full.extend(path.into_iter().filter(|s| s != "self"));
                out.push(full);
            }
        }
    }
    out
}

fn strip_comment(line: &str) -> &str {
    match line.find("//") {
        Some(i) => &line[..i],
        None => line,
    }
}

/// The paths of a `use` tree: `a::b`, `{a, b::{c, d}}`, `a::*`.
fn use_tree(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Vec<Vec<String>> {
    skip_space(chars);
    if chars.peek() == Some(&'{') {
        chars.next();
        let mut all = Vec::new();
        loop {
            skip_space(chars);
            match chars.peek() {
                Some('}') => {
                    chars.next();
                    return all;
                }
                Some(',') => {
                    chars.next();
                }
                None => return all,
                _ => all.extend(use_tree(chars)),
            }
        }
    }
    let ident: String = std::iter::from_fn(|| chars.next_if(|c| c.is_alphanumeric() || *c == '_')).collect();
    if ident.is_empty() {
        // `*` or something that is not a path.
        chars.next_if_eq(&'*');
        return vec![Vec::new()];
    }
    let mut lookahead = chars.clone();
    if lookahead.next() == Some(':') && lookahead.next() == Some(':') {
        chars.next();
        chars.next();
        return use_tree(chars).into_iter().map(|rest| std::iter::once(ident.clone()).chain(rest).collect()).collect();
    }
    vec![vec![ident]]
}

fn skip_space(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while chars.next_if(|c| c.is_whitespace()).is_some() {}
}

/// A cycle in `graph` as the list of its nodes (first repeated at the end), if there is one.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(node: &str, graph: &Graph, path: &mut Vec<String>, done: &mut BTreeSet<String>) -> Option<Vec<String>> {
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
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|start| visit(start, graph, &mut Vec::new(), &mut done))
}
