//! Benchmarks of gantry against the peers it replaces; see `benches/benches/`.
