//! The cross-backend conformance suite: cases written once against gantry-core's backend
//! trait, run on every backend compiled in.
