//! Hooks: commands an operator adds around a push (`before_push`, `after_push`) and to every
//! notification event (`on_event`). Each runs as argv (no shell unless the operator writes one),
//! in its own process group, with input on stdin, an environment of PATH, HOME, LANG and its
//! `PUSHMIRROR_*` words only (never the sender's secrets, never `NOTIFY_SOCKET`), for at most its
//! `timeout`: then its whole group is killed — so one that forks a daemon does not outlive it
//! (one that leaves the group with `setsid` does; its pipes are then given up a second after the
//! hook's end). Its output is read to the end, at most [`MAX_OUTPUT`] of it kept and logged.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};

/// The most of a hook's output that is kept (and logged).
pub const MAX_OUTPUT: usize = 64 * 1024;

/// How a hook ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookEnd {
    /// It exited with this status.
    Exited(i32),
    /// It was killed by a signal.
    Signalled,
    /// It ran past its timeout and was killed.
    TimedOut,
    /// It could not be started.
    NotStarted(String),
}

impl HookEnd {
    /// Exit 0.
    pub fn succeeded(&self) -> bool {
        *self == HookEnd::Exited(0)
    }
}

impl std::fmt::Display for HookEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HookEnd::Exited(code) => write!(f, "exit {code}"),
            HookEnd::Signalled => f.write_str("killed by a signal"),
            HookEnd::TimedOut => f.write_str("timed out, killed"),
            HookEnd::NotStarted(why) => write!(f, "not started: {why}"),
        }
    }
}

/// Runs `argv` (`what`: `before_push`, … for the log) with `stdin` as its input and `env` added
/// to PATH, HOME and LANG; at most `timeout`.
pub async fn run(what: &str, argv: &[String], stdin: Vec<u8>, env: &[(&str, String)], timeout: Duration) -> HookEnd {
    let (end, out, err) = captured(argv, stdin, env, timeout).await;
    let (out, err) = (String::from_utf8_lossy(&out), String::from_utf8_lossy(&err));
    match end.succeeded() {
        true => tracing::info!(hook = what, stdout = %out.trim(), stderr = %err.trim(), "hook ran"),
        false => tracing::warn!(hook = what, end = %end, stdout = %out.trim(), stderr = %err.trim(), "hook failed"),
    }
    end
}

/// [`run`], returning what it kept of stdout and stderr.
async fn captured(
    argv: &[String],
    stdin: Vec<u8>,
    env: &[(&str, String)],
    timeout: Duration,
) -> (HookEnd, Vec<u8>, Vec<u8>) {
    let mut command = tokio::process::Command::new(&argv[0]);
    command.args(&argv[1..]).env_clear();
    for key in ["PATH", "HOME", "LANG"] {
        if let Some(value) = std::env::var_os(key) {
            command.env(key, value);
        }
    }
    command.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0).kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return (HookEnd::NotStarted(format!("{}: {e}", argv[0])), Vec::new(), Vec::new()),
    };
    let group = child.id().and_then(|pid| i32::try_from(pid).ok()).map(nix::unistd::Pid::from_raw);
    let out = tokio::spawn(bounded(child.stdout.take()));
    let err = tokio::spawn(bounded(child.stderr.take()));
    let mut input = child.stdin.take();
    let run = async {
        // Input it does not read is its business: a closed pipe is not an error here.
        if let Some(mut input) = input.take() {
            let _ = input.write_all(&stdin).await;
        }
        child.wait().await
    };
    let end = match tokio::time::timeout(timeout, run).await {
        Ok(Ok(status)) => match status.code() {
            Some(code) => HookEnd::Exited(code),
            None => HookEnd::Signalled,
        },
        Ok(Err(e)) => HookEnd::NotStarted(e.to_string()),
        Err(_) => HookEnd::TimedOut,
    };
    // Whatever it left running in its group goes with it (a daemon it forked, holding the pipes).
    if let Some(group) = group {
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    }
    // Output still open a second after the end (a descendant that left the group): not waited for.
    let collect = |mut task: tokio::task::JoinHandle<Vec<u8>>| async move {
        match tokio::time::timeout(Duration::from_secs(1), &mut task).await {
            Ok(Ok(kept)) => kept,
            Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            _ => {
                task.abort();
                Vec::new()
            }
        }
    };
    (end, collect(out).await, collect(err).await)
}

/// Reads `pipe` to its end, keeping at most [`MAX_OUTPUT`] bytes (the rest is read and dropped,
/// so the writer never blocks on a full pipe).
async fn bounded(pipe: Option<impl AsyncRead + Unpin>) -> Vec<u8> {
    let Some(mut pipe) = pipe else { return Vec::new() };
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = pipe.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = MAX_OUTPUT.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        ["/bin/sh", "-c", script].map(String::from).to_vec()
    }

    /// A hook that prints 200 MiB is read to its end (it is not blocked on a full pipe) and
    /// kept to 64 KiB; its input arrives; its environment holds only what it is given.
    #[tokio::test]
    async fn output_is_bounded_and_the_environment_is_the_hooks() {
        let hour = Duration::from_secs(3600);
        let (end, out, err) = captured(&sh("head -c 209715200 /dev/zero; echo done >&2"), Vec::new(), &[], hour).await;
        assert_eq!(end, HookEnd::Exited(0));
        assert_eq!(out.len(), MAX_OUTPUT, "kept");
        assert_eq!(err, b"done\n", "it ran to its end");
        let env = [("PUSHMIRROR_ARCHIVE", "debian".to_string())];
        let (_, out, _) = captured(&sh("cat; env | cut -d= -f1 | sort"), b"in\n".to_vec(), &env, hour).await;
        let out = String::from_utf8(out).unwrap();
        let mut lines = out.lines();
        assert_eq!(lines.next(), Some("in"));
        let allowed = ["HOME", "LANG", "PATH", "PUSHMIRROR_ARCHIVE", "PWD", "SHLVL", "_"];
        assert!(lines.all(|v| allowed.contains(&v)), "{out}");
    }

    /// One that forks a daemon holding its pipes ends with its own end: nothing waits for the
    /// child's output (the hour-long timeout is never reached). That the child is killed is
    /// shown in `tests/it/notify.rs`.
    #[tokio::test]
    async fn a_forked_daemon_does_not_hold_the_hook_open() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let script = format!("sleep 3600 & echo $! > {}; echo started", pid_file.display());
        let (end, out, _) = captured(&sh(&script), Vec::new(), &[], Duration::from_secs(3600)).await;
        assert_eq!(end, HookEnd::Exited(0));
        assert_eq!(out, b"started\n");
        assert!(pid_file.exists(), "the child was forked");
    }

    /// A hook that cannot start says why.
    #[tokio::test]
    async fn a_missing_program_is_named() {
        let argv = vec!["/nonexistent/hook".to_string()];
        let (end, _, _) = captured(&argv, Vec::new(), &[], Duration::from_secs(1)).await;
        assert!(matches!(&end, HookEnd::NotStarted(why) if why.starts_with("/nonexistent/hook: ")), "{end:?}");
    }
}
