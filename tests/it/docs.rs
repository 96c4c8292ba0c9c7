//! The documentation says what the code does: every configuration default in
//! `config::defaults::TABLE` is what the README's configuration tables and the man page say.

use std::collections::BTreeMap;

use pushmirror::config::defaults::{File, TABLE};

/// The README's tables of configuration fields, by the first cell of their header, and which
/// file's fields they list with what prefix.
const TABLES: &[(&str, File, &str)] = &[
    ("main file field", File::Main, ""),
    ("main file field `mqtt.`", File::Main, "mqtt."),
    ("mirror file field", File::Mirror, ""),
    ("receive file field", File::Receive, ""),
];

/// `(file, field)` → the README's default cell, for every row of the tables above.
fn readme_defaults() -> BTreeMap<(String, String), String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut rows = BTreeMap::new();
    let mut table: Option<(File, &str)> = None;
    for line in readme.lines() {
        let cells: Vec<&str> = line.trim().trim_matches('|').split(" | ").map(str::trim).collect();
        if !line.starts_with('|') {
            table = None;
        } else if let Some((_, file, prefix)) = TABLES.iter().find(|(header, ..)| cells[0] == *header) {
            table = Some((*file, prefix));
        } else if let Some((file, prefix)) = table
            && cells.len() >= 3
            && !cells[0].starts_with("---")
        {
            // `a`, `b` rows name several fields at once.
            for field in cells[0].split(", ").map(|f| f.trim_matches('`')) {
                rows.insert((format!("{file:?}"), format!("{prefix}{field}")), cells[1].to_string());
            }
        }
    }
    rows
}

#[test]
fn every_default_is_what_the_readme_says() {
    let readme = readme_defaults();
    assert!(readme.len() > 50, "found only {} rows: are the tables' headers still {TABLES:?}?", readme.len());
    let mut wrong = Vec::new();
    for d in TABLE {
        let key = (format!("{:?}", d.file), d.field.to_string());
        let expected = format!("`{}`", d.value);
        match readme.get(&key) {
            Some(said) if *said == expected => {}
            Some(said) => wrong.push(format!("{:?} {}: README says {said}, the code {expected}", d.file, d.field)),
            None => wrong.push(format!("{:?} {}: no README row (default {expected})", d.file, d.field)),
        }
    }
    // A README row that shows a value as a default must have it in the table.
    for ((file, field), said) in &readme {
        let one_value = said.starts_with('`') && said.ends_with('`') && said.matches('`').count() == 2;
        if one_value && !TABLE.iter().any(|d| format!("{:?}", d.file) == *file && d.field == field) {
            wrong.push(format!("{file} {field}: README gives the default {said}, the code's table has none"));
        }
    }
    assert!(wrong.is_empty(), "README and config::defaults disagree:\n{}", wrong.join("\n"));
}

#[test]
fn every_default_is_what_the_man_page_says() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pushmirror")).arg("manpage").output().unwrap();
    assert!(out.status.success());
    let page = String::from_utf8(out.stdout).unwrap().replace("\\-", "-");
    // `.TP` entries: the field in bold on one line, its text on the next.
    let mut entries: BTreeMap<String, String> = BTreeMap::new();
    let mut section = String::new();
    let lines: Vec<&str> = page.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if let Some(title) = line.strip_prefix(".SS ") {
            section = title.trim_matches('"').to_string();
        } else if let Some(field) = line.strip_prefix("\\fB").and_then(|l| l.strip_suffix("\\fR"))
            && lines.get(i.wrapping_sub(1)) == Some(&".TP")
        {
            entries.insert(format!("{section}/{field}"), lines.get(i + 1).unwrap_or(&"").to_string());
        }
    }
    let mut wrong = Vec::new();
    for d in TABLE.iter().filter(|d| d.file != File::Receive) {
        // `archives.NAME.settle` is `settle` under archives.NAME; `status.listen` is `listen` in
        // the text of `status`.
        let (section, field, shown) = match (d.file, d.field.strip_prefix("archives.NAME.")) {
            (File::Main, Some(field)) => ("archives.NAME", field, format!("Default: {}.", d.value)),
            (File::Main, None) => match d.field.split_once('.') {
                Some((top, sub)) => ("Main file", top, format!("{sub} {}", d.value)),
                None => ("Main file", d.field, format!("Default: {}.", d.value)),
            },
            (_, _) => match d.field.split_once('.') {
                Some((top, sub)) => ("Mirror file (mirrors_dir/NAME.yaml)", top, format!("{sub} {}", d.value)),
                None => ("Mirror file (mirrors_dir/NAME.yaml)", d.field, format!("Default: {}.", d.value)),
            },
        };
        match entries.get(&format!("{section}/{field}")) {
            Some(text) if text.contains(&shown) => {}
            Some(text) => wrong.push(format!("{}: man page says {text:?}, expected {shown:?}", d.field)),
            None => wrong.push(format!("{}: no entry {section}/{field} in the man page", d.field)),
        }
    }
    assert!(wrong.is_empty(), "man page and config::defaults disagree:\n{}", wrong.join("\n"));
}

/// `docs/status.schema.json` is the schema generated from the types `/status` serializes (their
/// doc comments its descriptions): a change to them that is not in the file fails here.
/// `PUSHMIRROR_WRITE_SCHEMA=1 cargo test status_schema` rewrites it.
#[test]
fn the_status_schema_in_docs_is_the_one_the_types_generate() {
    let generated = serde_json::to_string_pretty(&pushmirror::daemon::status::json_schema()).unwrap() + "\n";
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/status.schema.json");
    if std::env::var_os("PUSHMIRROR_WRITE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/status.schema.json is not what the types generate: PUSHMIRROR_WRITE_SCHEMA=1 cargo test status_schema"
    );
}
