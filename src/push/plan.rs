//! From configuration and a push request to the list of triggers to send.
//!
//! Which stages a mirror gets follows archvsync's `runmirrors` exactly: its mirror type
//! (`all`, `staged`, `mhop`) together with the push kind (`-k all|mhop|stage2`) and whether a
//! hub's ftpsync asked for the push (`-f`). See [`PushKind`].

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::config::{Config, Mirror, MirrorKind};
use crate::vocab::model::{SkipReason, Stage};

/// What the operator (or the daemon) asked for.
#[derive(Debug, Clone, Default)]
pub struct PushRequest {
    /// The archive; may be omitted when exactly one is configured.
    pub archive: Option<String>,
    /// Only these mirrors (by name).
    pub only: Vec<String>,
    /// Only mirrors with any of these tags.
    pub tags: Vec<String>,
    /// The archive's serial, for templates and the report.
    pub serial: Option<String>,
    /// Which push this is (runmirrors' `-k`).
    pub kind: PushKind,
    /// A hub's ftpsync asked for it after its own sync (runmirrors' `-f`); only changes `mhop`.
    pub from_ftpsync: bool,
}

/// runmirrors' `-k`: which part of a (possibly multi-hop) push this is.
///
/// | mirror type | `all` | `mhop` (default) | `mhop` with `-f` | `stage2` |
/// |---|---|---|---|---|
/// | `all` | `sync:all` | `sync:all` | nothing | `sync:all` |
/// | `staged` | stage 1, barrier, stage 2 | stage 1, barrier, stage 2 | stage 1 | stage 2 |
/// | `mhop` | stage 1, barrier, stage 2 | the same with `sync:mhop` | stage 1 with `sync:mhop` | stage 2 |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PushKind {
    /// A complete push; `mhop` mirrors are not told `sync:mhop`.
    All,
    /// A complete push that tells `mhop` mirrors `sync:mhop`; with `-f`, only its stage 1.
    #[default]
    Mhop,
    /// Only the second stage: stage 2 to staged and mhop mirrors, `sync:all` to the others.
    Stage2,
}

impl fmt::Display for PushKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PushKind::All => "all",
            PushKind::Mhop => "mhop",
            PushKind::Stage2 => "stage2",
        })
    }
}

impl FromStr for PushKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all" => Ok(PushKind::All),
            "mhop" => Ok(PushKind::Mhop),
            "stage2" => Ok(PushKind::Stage2),
            other => Err(format!("unknown push kind `{other}`, expected all, mhop or stage2")),
        }
    }
}

/// Why a push cannot be planned: the user has to change the command line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// No archive given, and not exactly one configured.
    #[error("name the archive to push: {0}")]
    ArchiveNeeded(String),
    /// The archive is not configured.
    #[error("unknown archive `{0}` (configured: {1})")]
    UnknownArchive(String, String),
    /// `--only` named a mirror that does not exist or does not carry the archive.
    #[error("--only {0}: no such mirror for archive {1}")]
    UnknownMirror(String, String),
}

/// What one mirror gets in this push.
#[derive(Debug, Clone)]
pub struct PlanEntry {
    /// The mirror.
    pub mirror: Arc<Mirror>,
    /// Stages to send in order: `[All]`, `[Stage1, Stage2]`, `[Stage1]` or `[Stage2]` (never empty).
    pub stages: Vec<Stage>,
    /// Whether the downstream is told `sync:mhop` (an mhop mirror in an `mhop` push).
    pub mhop: bool,
    /// Why it is not sent at all (disabled, not selected).
    pub skip: Option<SkipReason>,
}

/// A push to carry out.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The archive.
    pub archive: String,
    /// Its serial, when known.
    pub serial: Option<String>,
    /// One entry per mirror of the archive, in name order.
    pub entries: Vec<PlanEntry>,
}

/// Selects the mirrors of the archive and picks each one's stages.
pub fn plan(config: &Config, req: &PushRequest) -> Result<Plan, PlanError> {
    let names = || config.archives.keys().cloned().collect::<Vec<_>>().join(", ");
    let archive = match &req.archive {
        Some(a) if config.archives.contains_key(a) => a.clone(),
        Some(a) => return Err(PlanError::UnknownArchive(a.clone(), names())),
        None if config.archives.len() == 1 => config.archives.keys().next().cloned().unwrap_or_default(),
        None => return Err(PlanError::ArchiveNeeded(format!("configured archives: {}", names()))),
    };
    for name in &req.only {
        if !config.mirrors_of(&archive).any(|m| &m.name == name) {
            return Err(PlanError::UnknownMirror(name.clone(), archive));
        }
    }
    let entries = config
        .mirrors_of(&archive)
        .map(|m| {
            let selected = (req.only.is_empty() || req.only.contains(&m.name))
                && (req.tags.is_empty() || m.tags.iter().any(|t| req.tags.contains(t)));
            let part = part_of(m, req.kind, req.from_ftpsync);
            let skip = if !selected {
                Some(SkipReason::NotSelected)
            } else if !m.enabled {
                Some(SkipReason::Disabled)
            } else if part.stages.is_empty() {
                Some(SkipReason::NotInMhopStage1)
            } else {
                None
            };
            // A skipped row still names the stage the mirror would get in a full push.
            let stages = if part.stages.is_empty() { stages_of(m) } else { part.stages };
            PlanEntry { mirror: Arc::clone(m), stages, mhop: part.mhop, skip }
        })
        .collect();
    Ok(Plan { archive, serial: req.serial.clone(), entries })
}

/// A complete push: `all` mirrors sync in one go, `staged` and `mhop` in two stages.
pub fn stages_of(mirror: &Mirror) -> Vec<Stage> {
    match mirror.kind {
        MirrorKind::All => vec![Stage::All],
        MirrorKind::Staged | MirrorKind::Mhop => vec![Stage::Stage1, Stage::Stage2],
    }
}

/// What one mirror gets in one push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Stages in order; empty when the mirror gets nothing.
    pub stages: Vec<Stage>,
    /// Whether its strings carry `sync:mhop`.
    pub mhop: bool,
}

/// runmirrors' `signal()`: `sync:mhop` only for an mhop mirror in an `mhop` push; no stage 1
/// in a `stage2` push; no stage 2 (and no `all` mirrors) in an `mhop` push from ftpsync, because
/// the hub's upstream sends stage 2 once this whole subtree finished stage 1.
pub fn part_of(mirror: &Mirror, kind: PushKind, from_ftpsync: bool) -> Part {
    let mhop = kind == PushKind::Mhop && mirror.kind == MirrorKind::Mhop;
    let stages = match (mirror.kind, kind) {
        (MirrorKind::All, PushKind::Mhop) if from_ftpsync => vec![],
        (MirrorKind::All, _) => vec![Stage::All],
        (_, PushKind::Stage2) => vec![Stage::Stage2],
        (_, PushKind::Mhop) if from_ftpsync => vec![Stage::Stage1],
        _ => vec![Stage::Stage1, Stage::Stage2],
    };
    Part { stages, mhop }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MirrorKind::{All, Mhop, Staged};
    use crate::vocab::model::Stage::{All as SyncAll, Stage1, Stage2};

    fn part(kind: MirrorKind, push: PushKind, from_ftpsync: bool) -> (Vec<Stage>, bool) {
        let mut mirror = Mirror::example("m");
        mirror.kind = kind;
        let p = part_of(&mirror, push, from_ftpsync);
        (p.stages, p.mhop)
    }

    #[test]
    fn every_mirror_type_and_push_kind_gets_what_runmirrors_signal_sends() {
        let both = || vec![Stage1, Stage2];
        for f in [false, true] {
            assert_eq!(part(All, PushKind::All, f), (vec![SyncAll], false));
            assert_eq!(part(Staged, PushKind::All, f), (both(), false));
            assert_eq!(part(Mhop, PushKind::All, f), (both(), false), "-k all never says sync:mhop");
            assert_eq!(part(All, PushKind::Stage2, f), (vec![SyncAll], false));
            assert_eq!(part(Staged, PushKind::Stage2, f), (vec![Stage2], false));
            assert_eq!(part(Mhop, PushKind::Stage2, f), (vec![Stage2], false));
        }
        assert_eq!(part(All, PushKind::Mhop, false), (vec![SyncAll], false));
        assert_eq!(part(Staged, PushKind::Mhop, false), (both(), false));
        assert_eq!(part(Mhop, PushKind::Mhop, false), (both(), true));
        assert_eq!(part(All, PushKind::Mhop, true), (vec![], false), "ftpsync's mhop stage 1 skips all mirrors");
        assert_eq!(part(Staged, PushKind::Mhop, true), (vec![Stage1], false));
        assert_eq!(part(Mhop, PushKind::Mhop, true), (vec![Stage1], true));
    }

    #[test]
    fn push_kinds_read_and_print_as_runmirrors_spells_them() {
        for kind in [PushKind::All, PushKind::Mhop, PushKind::Stage2] {
            assert_eq!(kind.to_string().parse::<PushKind>(), Ok(kind));
        }
        assert!("staged".parse::<PushKind>().is_err());
    }
}
