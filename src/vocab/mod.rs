//! The vocabulary every part of pushmirror speaks. Leaves: nothing here uses the rest of the
//! crate, so everything may use it.

pub mod clock;
pub mod model;
pub mod output;
pub mod secret;
pub mod units;
