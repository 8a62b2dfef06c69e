//! `cargo test` runs the whole suite on gantry-core's reference backend (no GPU, a second or
//! two). The real backends run in the `conformance` binary (`cargo xtask conformance`), which
//! prints the table; running them here too would double the suite's time.

#![cfg(feature = "reference")]

use gantry_conformance::{Outcome, RunOptions, entry};

#[test]
fn every_case_passes_on_the_reference_backend() {
    let reference = entry(gantry_conformance::backends::reference_hooks());
    let report = reference.run(
        0,
        &RunOptions {
            filters: Vec::new(),
            // The 256 MiB case is the conformance binary's job.
            full: false,
            validation: false,
        },
    );
    assert!(report.open_error.is_none(), "{:?}", report.open_error);
    assert!(
        report.cases.len() >= 17,
        "only {} cases ran",
        report.cases.len()
    );
    let failed: Vec<String> = report
        .cases
        .iter()
        .filter_map(|c| match &c.outcome {
            Outcome::Fail(why) => Some(format!("{}: {why}", c.name)),
            _ => None,
        })
        .collect();
    assert!(failed.is_empty(), "failed cases:\n{}", failed.join("\n"));
}
