//! Finds where a key sits in YAML text, so that errors found after parsing still carry a line and
//! column. Handles what config files use: block mappings and one-line flow mappings
//! (`ssh: { host: x, port: 22 }`). Falls back to the deepest key it found, then to 1:1.

/// 1-based (line, column) of the last key of `path` in `text`.
pub fn locate(text: &str, path: &[&str]) -> (usize, usize) {
    let mut best = (1, 1);
    let mut parent_indent: Option<usize> = None;
    let mut start_line = 0;
    let lines: Vec<&str> = text.lines().collect();
    let mut depth = 0;
    while depth < path.len() {
        let key = path[depth];
        let mut found = None;
        for (i, line) in lines.iter().enumerate().skip(start_line) {
            let indent = line.len() - line.trim_start().len();
            let body = line.trim_start();
            if body.is_empty() || body.starts_with('#') {
                continue;
            }
            if parent_indent.is_some_and(|p| i > start_line && indent <= p) {
                break;
            }
            if key_at_line_start(body, key) {
                found = Some((i, indent));
                break;
            }
        }
        let Some((line_no, indent)) = found else {
            return best;
        };
        best = (line_no + 1, indent + 1);
        // The rest of the path may sit in a flow mapping on the same line.
        let line = lines[line_no];
        let mut col = indent + key.len() + 1;
        let mut flow_hit = false;
        for rest in &path[depth + 1..] {
            match find_flow_key(&line[col.min(line.len())..], rest) {
                Some(off) => {
                    col += off;
                    best = (line_no + 1, col + 1);
                    depth += 1;
                    flow_hit = true;
                }
                None => break,
            }
        }
        if flow_hit && depth + 1 == path.len() {
            return best;
        }
        parent_indent = Some(indent);
        start_line = line_no;
        depth += 1;
    }
    best
}

fn key_at_line_start(body: &str, key: &str) -> bool {
    let body = body.strip_prefix("- ").unwrap_or(body);
    for quoted in [key.to_string(), format!("\"{key}\""), format!("'{key}'")] {
        if body.strip_prefix(quoted.as_str()).is_some_and(|rest| rest.trim_start().starts_with(':')) {
            return true;
        }
    }
    false
}

fn find_flow_key(s: &str, key: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(pos) = s[from..].find(key) {
        let at = from + pos;
        let before = s[..at].trim_end().chars().last();
        let after = s[at + key.len()..].trim_start();
        if matches!(before, Some('{') | Some(',')) && after.starts_with(':') {
            return Some(at);
        }
        from = at + key.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::locate;

    const TEXT: &str = "\
# comment
http:
  url_file: secrets/x.url
  basic_auth: { user: u, password_file: pw }
timeout: 20s
ssh: { host: a, port: 22 }
";

    #[test]
    fn finds_top_level_nested_and_flow_keys() {
        assert_eq!(locate(TEXT, &["timeout"]), (5, 1));
        assert_eq!(locate(TEXT, &["http", "url_file"]), (3, 3));
        assert_eq!(locate(TEXT, &["http", "basic_auth", "password_file"]), (4, 26));
        assert_eq!(locate(TEXT, &["ssh", "port"]), (6, 17));
    }

    #[test]
    fn falls_back_to_the_deepest_key_found() {
        assert_eq!(locate(TEXT, &["http", "missing"]), (2, 1));
        assert_eq!(locate(TEXT, &["nope"]), (1, 1));
    }
}
