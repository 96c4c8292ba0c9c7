//! What downstream mirrors serve, read from their trace files: freshness (which version, how
//! old, their upstream chain) and propagation (how soon after a push each one serves it).

pub mod freshness;
pub mod lag;
pub mod propagation;
pub mod trace;
