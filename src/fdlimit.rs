//! Open-file descriptors: raise the soft limit to the hard one at start, and bound what is held
//! at once (triggers in flight, `receive`'s connections) to half of it, so that state files,
//! logs, sync commands and pushes always have descriptors left. A leaf of the crate.

use std::sync::OnceLock;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (once per process) and returns the soft
/// limit now in force; `None` when unlimited or unknown.
pub fn raise() -> Option<u64> {
    static RAISED: OnceLock<Option<u64>> = OnceLock::new();
    *RAISED.get_or_init(|| {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let limit = getrlimit(Resource::Nofile);
        if limit.current != limit.maximum {
            let raised = Rlimit { current: limit.maximum, maximum: limit.maximum };
            if let Err(e) = setrlimit(Resource::Nofile, raised) {
                tracing::debug!("cannot raise the open-file limit: {e}");
            }
        }
        getrlimit(Resource::Nofile).current
    })
}

/// How many to hold at once: `configured`, but at most half of the open-file limit `open_files`
/// (`None`: unlimited), and never none.
pub fn cap(configured: usize, open_files: Option<u64>) -> usize {
    let half = open_files.map_or(usize::MAX, |n| usize::try_from(n / 2).unwrap_or(usize::MAX));
    configured.min(half).max(1)
}

/// `configured` triggers in flight, capped by [`cap`] after [`raise`]; said once per process when
/// lowered.
pub fn concurrency(configured: usize) -> usize {
    let open_files = raise();
    let capped = cap(configured, open_files);
    if capped < configured {
        static SAID: OnceLock<()> = OnceLock::new();
        SAID.get_or_init(|| {
            tracing::warn!(
                "concurrency lowered from {configured} to {capped}: at most half the open-file limit ({}), \
                 which could not be raised further; raise it (LimitNOFILE= under systemd, ulimit -n) to hold more",
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
