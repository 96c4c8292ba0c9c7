//! The crate is a one-way house: its top-level folders are rooms in the order a push flows
//! through them, and no room imports one above it. Read from the source itself: every
//! `crate::…` and `super::…` path outside comments, including grouped `use crate::{a, b::{c, d}}`
//! trees and inline paths.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The rooms, lowest first: each may use the ones before it, never one after it. `lib.rs`'s
/// `# Layout` names each in one line, in this order.
const FLOW: &[&str] = &[
    "vocab",
    "sys",
    "wire",
    "config",
    "archive",
    "transport",
    "push",
    "observe",
    "notify",
    "demo",
    "daemon",
    "receive",
    "compat",
    "operator",
];

type Graph = BTreeMap<String, BTreeSet<String>>;

#[test]
fn no_room_imports_one_above_it_in_the_flow() {
    let files = sources();
    let rooms: BTreeSet<&str> = files.iter().map(|(m, _)| m[0].as_str()).collect();
    for room in &rooms {
        assert!(FLOW.contains(room), "`src/{room}` is not placed in FLOW: say where it sits in the flow");
    }
    assert!(rooms.len() >= 10, "found only {} rooms: {rooms:?}", rooms.len());
    let upward = upward_imports(&files);
    assert!(upward.is_empty(), "imports against the flow (room → room above it):\n{}", upward.join("\n"));
}

#[test]
fn sibling_files_do_not_import_each_other_back() {
    let (_, siblings) = graphs(&sources());
    if let Some(cycle) = find_cycle(&siblings) {
        panic!("import cycle between sibling modules: {}", cycle.join(" → "));
    }
}

#[test]
fn the_vocabulary_is_a_leaf() {
    let files = sources();
    for (module, text) in files.iter().filter(|(m, _)| m[0] == "vocab") {
        let uses: Vec<String> = references(module, text)
            .into_iter()
            .filter(|t| {
                // Another file of the crate: outside vocab, or another vocab file (a `super::` in
                // a file's own test module resolves to `vocab::…` and is not one).
                let other_room = t[0] != "vocab" && files.iter().any(|(m, _)| m[0] == t[0]);
                let other_word =
                    t.len() > 1 && t[0] == "vocab" && t[1] != module[1] && files.iter().any(|(m, _)| m[..] == t[..2]);
                other_room || other_word
            })
            .map(|t| t.join("::"))
            .collect();
        assert!(uses.is_empty(), "`{}` must use nothing of the crate, but uses {uses:?}", module.join("::"));
    }
}

#[test]
fn lib_rs_names_every_room_in_flow_order() {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let layout = &lib[lib.find("# Layout").expect("lib.rs has a # Layout section")..];
    let named: Vec<&str> = layout
        .lines()
        .filter_map(|l| l.strip_prefix("//! - [`"))
        .filter_map(|l| l.split('`').next())
        .filter(|room| !room.contains("::"))
        .collect();
    assert_eq!(named, FLOW, "lib.rs's # Layout must list every room, one line each, in FLOW's order");
}

/// The checker itself: a planted upward import (config → push) and an upward one hidden in a
/// grouped `use` are both found; downward ones are not.
#[test]
fn the_checker_catches_a_planted_upward_import() {
    let planted = vec![
        (vec!["config".to_string(), "mirror".to_string()], "use crate::push::plan::Plan;\n".to_string()),
        (vec!["vocab".to_string(), "model".to_string()], "use crate::{vocab::units, wire::keys::x};\n".to_string()),
        (
            vec!["push".to_string()],
            "use crate::config::Config;\nlet _ = crate::vocab::model::Stage::All;\n".to_string(),
        ),
        (vec!["wire".to_string(), "keys".to_string()], "// crate::operator::cli in a comment\n".to_string()),
    ];
    let found = upward_imports(&planted);
    assert_eq!(found, ["config::mirror → push::plan::Plan", "vocab::model → wire::keys::x"], "{found:?}");
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

/// Every reference from a room to one later in [`FLOW`], as `from → to`.
fn upward_imports(files: &[(Vec<String>, String)]) -> Vec<String> {
    let rank = |room: &str| FLOW.iter().position(|r| *r == room);
    let mut out = Vec::new();
    for (module, text) in files {
        for target in references(module, text) {
            let (Some(from), Some(to)) = (rank(&module[0]), target.first().and_then(|t| rank(t))) else { continue };
            if to > from {
                out.push(format!("{} → {}", module.join("::"), target.join("::")));
            }
        }
    }
    out
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
