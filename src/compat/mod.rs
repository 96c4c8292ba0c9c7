//! Compatibility with the tools pushmirror replaces.

pub mod runmirrors;
