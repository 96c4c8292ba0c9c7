//! Open-file descriptors: raise the soft limit to the hard one at the start of the commands that
//! push (not `receive`: its sync commands would inherit the raised limit, and some tools close
//! every descriptor up to it), and bound what is held at once (triggers in flight, SSH sessions,
//! `receive`'s connections) to half of the limit, so that state files, logs, sync commands and
//! pushes always have descriptors left. A leaf of the crate.

use std::sync::OnceLock;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit.
pub fn raise() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit { current: limit.maximum, maximum: limit.maximum };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::debug!("cannot raise the open-file limit: {e}");
        }
    }
}

/// The soft open-file limit in force; `None` when unlimited.
pub fn current() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// How many to hold at once: `configured`, but at most half of the open-file limit `open_files`
/// (`None`: unlimited), and never none.
pub fn cap(configured: usize, open_files: Option<u64>) -> usize {
    let half = open_files.map_or(usize::MAX, |n| usize::try_from(n / 2).unwrap_or(usize::MAX));
    configured.min(half).max(1)
}

/// `configured` triggers in flight, capped by [`cap`]; said once per process when lowered.
pub fn concurrency(configured: usize) -> usize {
    let open_files = current();
    let capped = cap(configured, open_files);
    if capped < configured {
        static SAID: OnceLock<()> = OnceLock::new();
        SAID.get_or_init(|| {
            tracing::warn!(
                "concurrency lowered from {configured} to {capped}: at most half the open-file limit ({}); \
                 raise its hard value (LimitNOFILE= under systemd, ulimit -Hn) to hold more",
                open_files.unwrap_or_default()
            )
        });
    }
    capped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_half_the_descriptors_and_never_none() {
        assert_eq!(cap(512, Some(1024)), 512);
        assert_eq!(cap(512, Some(64)), 32);
        assert_eq!(cap(512, None), 512);
        assert_eq!(cap(100, Some(1_048_576)), 100);
        assert_eq!(cap(512, Some(1)), 1, "never none at all");
    }
}
