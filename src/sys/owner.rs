//! The ownership rule: everything pushmirror writes — `state_dir`, the identity keys, its
//! `known_hosts` — belongs to the user that owns `state_dir`, the service user (`pushmirror` in
//! the package). Configuration (`/etc/pushmirror`) is root's and readable by that user.
//!
//! A command that writes, run by any other user (root included), refuses before it touches a file
//! and prints the exact command to run instead, `sudo -u OWNER …`: root would otherwise leave files
//! the daemon cannot read (a root-owned `ratelimit/` fails every rate-limited mirror from then on).
//! pushmirror does not drop privileges itself: doing that safely in a multi-threaded process
//! (every thread, supplementary groups) is more machinery than one clear sentence.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use nix::unistd::{Uid, User};

/// The user this process runs as (effective uid).
pub fn current_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// A user's login name, if the user database has one.
fn login(uid: u32) -> Option<String> {
    User::from_uid(Uid::from_raw(uid)).ok().flatten().map(|user| user.name)
}

/// The service user of the package, who pushes.
pub const SERVICE_USER: &str = "pushmirror";

/// The home directory of user `name`, if the user database has the user.
pub fn home_of(name: &str) -> Option<PathBuf> {
    User::from_name(name).ok().flatten().map(|user| user.dir)
}

/// A user's login name, else `uid N`: for messages.
pub fn user_name(uid: u32) -> String {
    login(uid).unwrap_or_else(|| format!("uid {uid}"))
}

/// A user as `chown` takes it: the login name, else the number.
pub fn chown_user(uid: u32) -> String {
    login(uid).unwrap_or_else(|| uid.to_string())
}

/// A group's name, else its number.
pub fn group_name(gid: u32) -> String {
    match nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid)) {
        Ok(Some(group)) => group.name,
        _ => gid.to_string(),
    }
}

/// The name of the user this process runs as.
pub fn current_user() -> String {
    user_name(current_uid())
}

/// Why a command that writes must not run as this user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotOwner {
    /// The owner of `state_dir`.
    pub owner: String,
    /// The user this process runs as.
    pub running_as: String,
    /// `state_dir`.
    pub state_dir: PathBuf,
    /// What to run instead.
    pub instead: String,
}

impl std::fmt::Display for NotOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} belongs to user {}, and so must every file pushmirror writes (state, keys, known_hosts); \
             this runs as {}, whose files {} could not read. Run it as {}:\n  {}",
            self.state_dir.display(),
            self.owner,
            self.running_as,
            self.owner,
            self.owner,
            self.instead
        )
    }
}

/// Refuses to go on unless this process runs as the owner of `state_dir` — or, while it does not
/// exist yet, of its nearest existing ancestor (which is whose it will have to be). The command to
/// run instead is this process's own command line with `-c` and the configuration's absolute path
/// (`sudo` passes on neither `$PUSHMIRROR_CONFIG` nor `$HOME`, and the service user may not be able
/// to enter this directory).
pub fn require_owner(state_dir: &Path, config: &Path) -> Result<(), NotOwner> {
    require_owner_with(state_dir, config, || std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect())
}

fn require_owner_with(state_dir: &Path, config: &Path, argv: impl FnOnce() -> Vec<String>) -> Result<(), NotOwner> {
    let Some(meta) = state_dir.ancestors().find_map(|dir| dir.metadata().ok()) else { return Ok(()) };
    let uid = current_uid();
    if meta.uid() == uid {
        return Ok(());
    }
    let sudo_user = login(meta.uid()).unwrap_or_else(|| format!("#{}", meta.uid()));
    Err(NotOwner {
        instead: instead(&sudo_user, &argv(), config),
        owner: user_name(meta.uid()),
        running_as: user_name(uid),
        state_dir: state_dir.to_path_buf(),
    })
}

/// `sudo -u OWNER PROGRAM -c CONFIG ARGS…`, shell-quoted: ARGV with whatever named the config
/// (`-c X`, `-cX`, `--config X`, `--config=X`, `-vc X`) replaced by CONFIG's absolute path. As
/// `runmirrors`, which has no `-c`: `sudo -u OWNER env PUSHMIRROR_CONFIG=CONFIG runmirrors ARGS…`.
fn instead(owner: &str, argv: &[String], config: &Path) -> String {
    let config = std::path::absolute(config).unwrap_or_else(|_| config.to_path_buf()).display().to_string();
    let mut args = argv.iter();
    let program = args.next().cloned().unwrap_or_else(|| "pushmirror".into());
    let mut rest = Vec::new();
    while let Some(arg) = args.next() {
        let short = arg.starts_with('-') && !arg.starts_with("--");
        if arg == "-c" || arg == "--config" {
            args.next();
        } else if arg.starts_with("--config=") || (short && arg.starts_with("-c")) {
        } else if short && arg.len() > 2 && arg.ends_with('c') {
            rest.push(arg[..arg.len() - 1].to_string());
            args.next();
        } else {
            rest.push(arg.clone());
        }
    }
    let mut words = vec!["sudo".to_string(), "-u".into(), owner.to_string()];
    if Path::new(&program).file_name().is_some_and(|n| n == "runmirrors") {
        words.extend(["env".to_string(), format!("PUSHMIRROR_CONFIG={config}"), program]);
    } else {
        words.extend([program, "-c".into(), config]);
    }
    words.extend(rest);
    words.iter().map(|w| shell_quote(w)).collect::<Vec<_>>().join(" ")
}

/// `word` as one shell word: as it is when it holds only safe characters, else single-quoted.
pub fn shell_quote(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_-./:=@%+,".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Why `path` could not be opened with `error`, in the words an operator acts on ("exists but is
/// not readable by user pushmirror (owner root, mode 0600)" rather than a bare "Permission
/// denied"); callers put it after the path: `cannot read PATH: REASON`.
pub fn unreadable_reason(path: &Path, error: &std::io::Error) -> String {
    use std::io::ErrorKind;
    let user = current_user();
    match error.kind() {
        ErrorKind::PermissionDenied => match path.metadata().or_else(|_| path.symlink_metadata()) {
            Ok(meta) => format!(
                "exists but is not readable by user {user} (owner {}, mode {:04o})",
                user_name(meta.uid()),
                meta.mode() & 0o7777
            ),
            Err(_) => format!("a directory above it is not searchable by user {user}"),
        },
        ErrorKind::NotFound => "does not exist".to_string(),
        _ => error.to_string(),
    }
}

/// `cannot read PATH: REASON`, for a file of `state_dir` the daemon cannot do without, with the
/// commands that fix it: everything in `state_dir` belongs to its owner (the service user) and is
/// readable by that user. Other errors than a permission are said as they are.
pub fn unreadable_state(path: &Path, state_dir: &Path, error: &std::io::Error) -> String {
    let reason = unreadable_reason(path, error);
    let (Some(dir), Some(file)) = (state_dir.metadata().ok(), path.symlink_metadata().ok()) else {
        return format!("cannot read {}: {reason}", path.display());
    };
    let mut fix = Vec::new();
    if file.uid() != dir.uid() || file.gid() != dir.gid() {
        fix.push(format!("chown {}:{} {}", chown_user(dir.uid()), group_name(dir.gid()), path.display()));
    }
    if file.mode() & 0o600 != 0o600 {
        fix.push(format!("chmod u+rw {}", path.display()));
    }
    if fix.is_empty() || error.kind() != std::io::ErrorKind::PermissionDenied {
        return format!("cannot read {}: {reason}", path.display());
    }
    format!(
        "cannot read {}: {reason}; everything in {} belongs to its owner {}, who runs the daemon: {}",
        path.display(),
        state_dir.display(),
        user_name(dir.uid()),
        fix.join(" && ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_to_run_instead_is_quoted_and_names_the_config_by_its_absolute_path() {
        let argv = |words: &[&str]| words.iter().map(|w| w.to_string()).collect::<Vec<_>>();
        let config = Path::new("/etc/pm/a b.yaml");
        assert_eq!(
            instead("pushmirror", &argv(&["pushmirror", "push", "debian", "--only", "it's"]), config),
            r"sudo -u pushmirror pushmirror -c '/etc/pm/a b.yaml' push debian --only 'it'\''s'"
        );
        for named in
            [&["-c", "x.yaml"][..], &["--config", "x.yaml"], &["--config=x.yaml"], &["-cx.yaml"], &["-vc", "x.yaml"]]
        {
            let mut words = vec!["pushmirror"];
            words.extend(named);
            words.push("push");
            let verbose = if named[0] == "-vc" { " -v" } else { "" };
            assert_eq!(
                instead("pushmirror", &argv(&words), config),
                format!("sudo -u pushmirror pushmirror -c '/etc/pm/a b.yaml'{verbose} push"),
                "{named:?}"
            );
        }
        let relative = instead("pushmirror", &argv(&["pushmirror", "push"]), Path::new("c.yaml"));
        let absolute = std::env::current_dir().unwrap().join("c.yaml");
        assert_eq!(
            relative,
            format!("sudo -u pushmirror pushmirror -c {} push", shell_quote(&absolute.display().to_string()))
        );
        assert_eq!(
            instead("mirror", &argv(&["/usr/bin/runmirrors", "-a", "debian"]), config),
            "sudo -u mirror env 'PUSHMIRROR_CONFIG=/etc/pm/a b.yaml' /usr/bin/runmirrors -a debian"
        );
    }

    #[test]
    fn the_owner_of_state_dir_may_write_and_a_missing_state_dir_is_its_parents() {
        let dir = tempfile::tempdir().unwrap();
        let config = Path::new("/c.yaml");
        assert_eq!(require_owner_with(dir.path(), config, Vec::new), Ok(()));
        assert_eq!(require_owner_with(&dir.path().join("new/deeper"), config, Vec::new), Ok(()));
    }

    #[test]
    fn anyone_else_is_refused_with_the_command_to_run() {
        // A directory some other user owns: `/` is root's, so as root use a directory chowned away.
        let dir = tempfile::tempdir().unwrap();
        let other = if current_uid() == 0 {
            std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).unwrap();
            dir.path().to_path_buf()
        } else {
            PathBuf::from("/")
        };
        let argv = || vec!["pushmirror".to_string(), "push".into()];
        for state_dir in [other.clone(), other.join("not-yet")] {
            let refused = require_owner_with(&state_dir, Path::new("/c.yaml"), argv).unwrap_err();
            assert_eq!(refused.running_as, current_user());
            assert_eq!(refused.instead, format!("sudo -u {} pushmirror -c /c.yaml push", refused.owner));
            assert!(refused.to_string().ends_with(&format!("Run it as {}:\n  {}", refused.owner, refused.instead)));
        }
    }

    #[test]
    fn an_unreadable_file_is_said_to_exist_and_whose_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("id");
        std::fs::write(&key, "k").unwrap();
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let said = unreadable_reason(&key, &denied);
        let owner = user_name(current_uid());
        assert!(
            said.starts_with(&format!("exists but is not readable by user {} (owner {owner}, mode 0", current_user()))
        );
        let hidden = unreadable_reason(&dir.path().join("no/such"), &denied);
        assert_eq!(hidden, format!("a directory above it is not searchable by user {}", current_user()));
        let missing = unreadable_reason(&key, &std::io::Error::from(std::io::ErrorKind::NotFound));
        assert_eq!(missing, "does not exist");
    }
}
