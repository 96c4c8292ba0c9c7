//! From configuration and a push request to the list of triggers to send.

use std::sync::Arc;

use crate::config::{Config, Mirror, MirrorKind};
use crate::transport::Stage;

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
    /// Stages to send in order: `[All]`, or `[Stage1, Stage2]` for staged and mhop mirrors.
    pub stages: Vec<Stage>,
    /// Why it is not sent at all (disabled, not selected).
    pub skip: Option<String>,
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

/// A note on mirrors that a filter left out; the table folds these rows away.
pub const NOT_SELECTED: &str = "not selected";

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
            let skip = if !selected {
                Some(NOT_SELECTED.to_string())
            } else if !m.enabled {
                Some("disabled".to_string())
            } else {
                None
            };
            PlanEntry { mirror: Arc::clone(m), stages: stages_of(m), skip }
        })
        .collect();
    Ok(Plan { archive, serial: req.serial.clone(), entries })
}

/// runmirrors semantics: `all` mirrors sync in one go, `staged` and `mhop` in two stages.
pub fn stages_of(mirror: &Mirror) -> Vec<Stage> {
    match mirror.kind {
        MirrorKind::All => vec![Stage::All],
        MirrorKind::Staged | MirrorKind::Mhop => vec![Stage::Stage1, Stage::Stage2],
    }
}
