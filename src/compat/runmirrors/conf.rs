//! Reading a `runmirrors.conf`: shell variable assignments, read (never run) one line at a time.

use std::path::Path;

use super::findings::Findings;

/// runmirrors' default `KEYFILE`, relative to its user's home directory.
pub const DEFAULT_KEYFILE: &str = ".ssh/pushmirror";
/// runmirrors' default `PUSHDELAY` in seconds.
pub const DEFAULT_PUSHDELAY: u64 = 600;

/// What a runmirrors.conf says that pushmirror can use.
#[derive(Debug, Clone, Default)]
pub struct Conf {
    /// `KEYFILE` and its line.
    pub keyfile: Option<(usize, String)>,
    /// `PUSHDELAY` in seconds.
    pub pushdelay: Option<u64>,
    /// `SSH_OPTS` and its line.
    pub ssh_opts: Option<(usize, String)>,
    /// `PUSHARCHIVE`: the archive name sent downstream.
    pub pusharchive: Option<String>,
    /// `MAILTO`'s addresses and its line.
    pub mailto: Option<(usize, Vec<String>)>,
    /// `HOOK1` (before the first trigger: a failure stopped runmirrors) as argv, and its line.
    pub hook1: Option<(usize, Vec<String>)>,
    /// `HOOK3` (when everything is done) as argv, and its line.
    pub hook3: Option<(usize, Vec<String>)>,
}

/// Reads `text` (the contents of `path`); everything it cannot use goes to `findings`.
pub fn read(path: &Path, text: &str, findings: &mut Findings) -> Conf {
    let mut conf = Conf::default();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let body = raw.trim();
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        match assignment(body) {
            Ok((_, value)) if value.is_empty() => {}
            Ok((name, value)) => apply(&mut conf, path, line, name, value, findings),
            Err(why) => findings.lost(path, line, format!("`{body}`: {why}")),
        }
    }
    conf
}

/// Uses one `NAME=value`, or says why it cannot be used.
fn apply(conf: &mut Conf, path: &Path, line: usize, name: &str, value: String, findings: &mut Findings) {
    if name != "KEYFILE" && value.contains(['$', '`']) {
        findings.lost(path, line, format!("{name}={value}: shell expansion is not evaluated; set it by hand"));
        return;
    }
    match name {
        "KEYFILE" => conf.keyfile = Some((line, value)),
        "SSH_OPTS" => conf.ssh_opts = Some((line, value)),
        "PUSHARCHIVE" => conf.pusharchive = Some(value),
        "PUSHDELAY" => match value.parse::<u64>() {
            Ok(secs) if secs > 0 => conf.pushdelay = Some(secs),
            _ => findings.lost(path, line, format!("PUSHDELAY={value}: not a number of seconds")),
        },
        "MAILTO" => {
            // runmirrors passed `${MAILTO}` unquoted to sendmail: a list split at blanks.
            let (full, local): (Vec<&str>, Vec<&str>) = value.split_whitespace().partition(|a| a.contains('@'));
            for user in &local {
                findings.lost(
                    path,
                    line,
                    format!(
                        "MAILTO: `{user}` is a local user name; notify.mail.to takes full addresses \
                         (`{user}@HOST`)"
                    ),
                );
            }
            if !full.is_empty() {
                conf.mailto = Some((line, full.into_iter().map(str::to_string).collect()));
            }
        }
        "HOOK1" | "HOOK3" => match hook_argv(&value) {
            Ok(argv) if name == "HOOK1" => conf.hook1 = Some((line, argv)),
            Ok(argv) => conf.hook3 = Some((line, argv)),
            Err(why) => findings.lost(path, line, format!("{name}={value}: {why}")),
        },
        "MIRRORS" => findings.note(
            path,
            line,
            format!("MIRRORS={value}: runmirrors read its mirrors from there; only the FILE given was imported"),
        ),
        other => findings.lost(path, line, format!("{other}={value}: {}", unused_variable(other))),
    }
}

/// Why a runmirrors.conf variable has no pushmirror counterpart.
fn unused_variable(name: &str) -> &'static str {
    match name {
        "HOOK2" => {
            "pushmirror has no hook between two mirrors: it triggers them concurrently; \
             hooks.before_push or hooks.after_push may do the work"
        }
        "LOGDIR" | "LOG" | "LOGROTATE" | "PROGRAM" => {
            "pushmirror keeps no log files of its own: the report goes to stdout (ftpsync's log) and to \
             state_dir's history (status.history reports)"
        }
        "LOCKDIR" => "pushmirror keeps no lock files: its stage-1 barrier lives in the process",
        "BASEDIR" => "runmirrors only changed into this directory; pushmirror does not need it",
        _ => "not a runmirrors.conf variable pushmirror knows",
    }
}

/// A hook's command as runmirrors ran it (`${HOOKSCR}` unquoted: split at blanks, no shell), or
/// why it cannot be carried over.
fn hook_argv(value: &str) -> Result<Vec<String>, &'static str> {
    if value.contains(['*', '?', '[']) {
        return Err("the shell expanded its wildcards; pushmirror runs hooks without a shell: set it by hand");
    }
    Ok(value.split_whitespace().map(str::to_string).collect())
}

/// Splits `NAME=value` (optionally after `export`), unquoting the value like the shell would for
/// the simple forms: `'…'`, `"…"`, or a bare word, each optionally followed by a `#` comment.
fn assignment(body: &str) -> Result<(&str, String), &'static str> {
    const NOT_ASSIGNMENT: &str = "not a variable assignment; pushmirror does not run shell code";
    let body = body.strip_prefix("export ").map_or(body, str::trim_start);
    let (name, rest) = body.split_once('=').ok_or(NOT_ASSIGNMENT)?;
    let valid_name = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid_name {
        return Err(NOT_ASSIGNMENT);
    }
    let (value, after) = match rest.chars().next() {
        Some(q @ ('"' | '\'')) => {
            let end = rest[1..].find(q).ok_or("unterminated quote")?;
            (&rest[1..=end], &rest[end + 2..])
        }
        _ => rest.split_at(rest.find(char::is_whitespace).unwrap_or(rest.len())),
    };
    let after = after.trim_start();
    if !(after.is_empty() || after.starts_with('#')) {
        return Err(NOT_ASSIGNMENT);
    }
    Ok((name, value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::assignment;

    #[test]
    fn simple_shell_assignments_are_unquoted() {
        assert_eq!(assignment("KEYFILE=~/.ssh/pushmirror"), Ok(("KEYFILE", "~/.ssh/pushmirror".into())));
        assert_eq!(assignment("SSH_OPTS=\"-p 2222 -4\"  # hostwide"), Ok(("SSH_OPTS", "-p 2222 -4".into())));
        assert_eq!(assignment("export MAILTO='root'"), Ok(("MAILTO", "root".into())));
        assert_eq!(assignment("PUSHDELAY=900 # seconds"), Ok(("PUSHDELAY", "900".into())));
        assert!(assignment("if [ -x foo ]; then").is_err());
        assert!(assignment("A=b c").is_err());
        assert!(assignment("A=\"open").is_err());
    }
}
