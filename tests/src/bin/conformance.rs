//! Runs the conformance suite on every backend and adapter compiled in and prints a table
//! (case x backend/adapter). Exits non-zero on any failure, and when no adapter is found.
//!
//! Usage: `conformance [--quick] [--no-validation] [--list] [FILTER...]`

use std::process::ExitCode;

use gantry_conformance::{AdapterReport, Outcome, RunOptions, backends};

/// Turns on the Khronos layer's synchronization validation (STYLE item 15) unless the
/// caller configured the layer's features already.
fn enable_sync_validation() {
    const VAR: &str = "VK_LAYER_ENABLES";
    if std::env::var_os(VAR).is_none() {
        // SAFETY: called first thing in `main`, before any other thread exists, so nothing
        // reads the environment concurrently.
        unsafe {
            std::env::set_var(
                VAR,
                "VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT",
            );
        }
    }
}

fn main() -> ExitCode {
    enable_sync_validation();
    let mut options = RunOptions {
        validation: true,
        full: true,
        ..RunOptions::default()
    };
    let mut list_only = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--quick" => options.full = false,
            "--no-validation" => options.validation = false,
            "--list" => list_only = true,
            "--" => {}
            "-h" | "--help" => {
                println!("conformance [--quick] [--no-validation] [--list] [FILTER...]");
                return ExitCode::SUCCESS;
            }
            other => options.filters.push(other.to_owned()),
        }
    }
    gantry_conformance::validation::install(std::env::var_os("GANTRY_LOG").is_some());
    let entries = backends::entries();
    if entries.is_empty() {
        eprintln!(
            "conformance: FAILURE: no backend compiled in (enable the `wgpu` or `vulkan` feature)"
        );
        return ExitCode::FAILURE;
    }
    println!(
        "gantry conformance: validation {}, {}",
        if options.validation {
            format!(
                "ON (Khronos layer; VK_LAYER_ENABLES={})",
                std::env::var("VK_LAYER_ENABLES").unwrap_or_default()
            )
        } else {
            "OFF".to_owned()
        },
        if options.full {
            "all cases"
        } else {
            "quick (no 256 MiB case)"
        }
    );
    let mut reports: Vec<AdapterReport> = Vec::new();
    let mut no_device = Vec::new();
    for entry in &entries {
        let adapters = entry.adapters();
        println!("\nbackend {}: {} adapter(s)", entry.name(), adapters.len());
        for (i, a) in adapters.iter().enumerate() {
            println!("  [{i}] {a}");
        }
        if adapters.is_empty() {
            no_device.push(entry.name());
            continue;
        }
        if list_only {
            continue;
        }
        for i in 0..adapters.len() {
            let report = entry.run(i, &options);
            print_report(&report);
            reports.push(report);
        }
    }
    if list_only {
        return if no_device.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let (mut pass, mut skip, mut fail) = (0, 0, 0);
    for r in &reports {
        if r.open_error.is_some() {
            fail += 1;
        }
        for c in &r.cases {
            match c.outcome {
                Outcome::Pass(_) => pass += 1,
                Outcome::Skip(_) => skip += 1,
                Outcome::Fail(_) => fail += 1,
            }
        }
    }
    print_table(&reports);
    for name in &no_device {
        println!(
            "NO DEVICE: backend `{name}` found no adapter: this is a FAILURE, not a pass. Install a Vulkan driver (`cargo xtask check-system`)."
        );
    }
    println!("\n{pass} passed, {skip} skipped, {fail} failed");
    if pass + skip + fail == 0 {
        println!(
            "FAILURE: no case ran (filters {:?} matched nothing?)",
            options.filters
        );
        return ExitCode::FAILURE;
    }
    if fail == 0 && no_device.is_empty() && !reports.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn print_report(r: &AdapterReport) {
    println!("\n== {} on {}", r.backend, r.adapter);
    if let Some(e) = &r.open_error {
        println!("   FAIL  could not open the device: {e}");
    }
    for c in &r.cases {
        let (tag, text) = match &c.outcome {
            Outcome::Pass(t) => ("pass", t),
            Outcome::Skip(t) => ("SKIP", t),
            Outcome::Fail(t) => ("FAIL", t),
        };
        println!("   {tag}  {:<36} {:>7.2} s  {text}", c.name, c.seconds);
    }
}

fn print_table(reports: &[AdapterReport]) {
    if reports.is_empty() {
        return;
    }
    let mut names: Vec<String> = Vec::new();
    for r in reports {
        for c in &r.cases {
            if !names.contains(&c.name) {
                names.push(c.name.clone());
            }
        }
    }
    let width = names.iter().map(String::len).max().unwrap_or(4).max(4);
    println!("\nConformance table");
    for (i, r) in reports.iter().enumerate() {
        println!(
            "  column {}: {} on {} (driver {})",
            i + 1,
            r.backend,
            r.adapter.name,
            r.adapter.driver
        );
    }
    let header: Vec<String> = (1..=reports.len()).map(|i| format!("{:^6}", i)).collect();
    println!("  {:<width$} | {}", "case", header.join(" | "));
    println!(
        "  {}-+-{}",
        "-".repeat(width),
        vec!["------"; reports.len()].join("-+-")
    );
    for name in &names {
        let cells: Vec<String> = reports
            .iter()
            .map(|r| {
                let cell = match r.cases.iter().find(|c| &c.name == name).map(|c| &c.outcome) {
                    Some(Outcome::Pass(_)) => "pass",
                    Some(Outcome::Skip(_)) => "SKIP",
                    Some(Outcome::Fail(_)) => "FAIL",
                    None => "-",
                };
                format!("{cell:^6}")
            })
            .collect();
        println!("  {name:<width$} | {}", cells.join(" | "));
    }
}
