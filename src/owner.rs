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

/// A user's login name, else `uid N`.
pub fn user_name(uid: u32) -> String {
    match User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(user)) => user.name,
        _ => format!("uid {uid}"),
    }
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

/// Refuses to go on unless this process runs as the owner of `state_dir` (a `state_dir` that
/// does not exist yet will be this user's). The command to run instead is this process's own
/// command line, naming `config` explicitly when the command line does not (`sudo` passes on
/// neither `$PUSHMIRROR_CONFIG` nor `$HOME`).
pub fn require_owner(state_dir: &Path, config: &Path) -> Result<(), NotOwner> {
    let argv: Vec<String> = std::env::args().collect();
    require_owner_with(state_dir, config, &argv)
}

fn require_owner_with(state_dir: &Path, config: &Path, argv: &[String]) -> Result<(), NotOwner> {
    let Ok(meta) = state_dir.metadata() else { return Ok(()) };
    let uid = current_uid();
    if meta.uid() == uid {
        return Ok(());
    }
    let owner = user_name(meta.uid());
    Err(NotOwner {
        instead: instead(&owner, argv, config),
        owner,
        running_as: user_name(uid),
        state_dir: state_dir.to_path_buf(),
    })
}

/// `sudo -u OWNER ARGV…`, shell-quoted, with `-c CONFIG` added when ARGV does not name the
/// config (as `runmirrors`, which has no `-c`: `env PUSHMIRROR_CONFIG=CONFIG runmirrors …`).
fn instead(owner: &str, argv: &[String], config: &Path) -> String {
    let names_config =
        argv.iter().any(|a| a == "-c" || a == "--config" || a.starts_with("--config=") || a.starts_with("-c"));
    let config = config.display().to_string();
    let mut words = vec!["sudo".to_string(), "-u".into(), owner.to_string()];
    let mut args = argv.iter();
    let program = args.next().cloned().unwrap_or_else(|| "pushmirror".into());
    let runmirrors = Path::new(&program).file_name().is_some_and(|n| n == "runmirrors");
    if runmirrors && !names_config {
        words.extend(["env".to_string(), format!("PUSHMIRROR_CONFIG={config}"), program]);
    } else if !names_config {
        words.extend([program, "-c".into(), config]);
    } else {
        words.push(program);
    }
    words.extend(args.cloned());
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
        ErrorKind::PermissionDenied => match path.symlink_metadata() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_to_run_instead_is_quoted_and_names_the_config() {
        let argv = |words: &[&str]| words.iter().map(|w| w.to_string()).collect::<Vec<_>>();
        let config = Path::new("/etc/pm/a b.yaml");
        assert_eq!(
            instead("pushmirror", &argv(&["pushmirror", "push", "debian", "--only", "it's"]), config),
            r"sudo -u pushmirror pushmirror -c '/etc/pm/a b.yaml' push debian --only 'it'\''s'"
        );
        assert_eq!(
            instead("pushmirror", &argv(&["pushmirror", "-c", "x.yaml", "push"]), config),
            "sudo -u pushmirror pushmirror -c x.yaml push"
        );
        assert_eq!(
            instead("mirror", &argv(&["/usr/bin/runmirrors", "-a", "debian"]), config),
            "sudo -u mirror env 'PUSHMIRROR_CONFIG=/etc/pm/a b.yaml' /usr/bin/runmirrors -a debian"
        );
    }

    #[test]
    fn the_owner_of_state_dir_may_write_and_a_missing_state_dir_will_be_ours() {
        let dir = tempfile::tempdir().unwrap();
        let config = Path::new("c.yaml");
        assert_eq!(require_owner_with(dir.path(), config, &[]), Ok(()));
        assert_eq!(require_owner_with(&dir.path().join("new"), config, &[]), Ok(()));
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
        let argv = ["pushmirror".to_string(), "push".into()];
        let refused = require_owner_with(&other, Path::new("c.yaml"), &argv).unwrap_err();
        assert_eq!(refused.running_as, current_user());
        assert_eq!(refused.instead, format!("sudo -u {} pushmirror -c c.yaml push", refused.owner));
        assert!(refused.to_string().ends_with(&format!("Run it as {}:\n  {}", refused.owner, refused.instead)));
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
