//! gantry's shared GPU types: descriptors, usage flags, limits, the backend trait, the one
//! error type and the argument validation every backend shares.
#![deny(missing_docs)]
