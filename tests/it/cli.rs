use crate::common::Fixture;
