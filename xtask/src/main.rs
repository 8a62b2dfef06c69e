//! gantry's developer commands. Run `cargo xtask help`.
//!
//! The xtask holds no logic the tests need: it checks the machine, then runs cargo.

mod system;

use std::process::{Command, ExitCode};
use std::time::Instant;

const HELP: &str = "\
cargo xtask <command>

Commands:
  test         the whole test suite: fmt, clippy, unit/property/doc tests, conformance,
               gantry's feature combinations (check + example each), docs with warnings
               denied
  conformance [ARGS]
               the cross-backend conformance suite with the Khronos validation layer on:
               every case on every backend and adapter, a table of results (ARGS go to
               the suite: --quick, --no-validation, --list, case-name filters)
  demo [ARGS]  gantry's main job: a streaming workload through gantry on every backend and
               adapter found, checksummed on the GPU, with a report and an SVG chart in
               target/gantry-demo/ (ARGS go to the demo: --backend wgpu|vulkan,
               --adapter NAME, --frames N, --seconds S, --json PATH, --svg PATH,
               --validation, --inject-fault)
  features     gantry with each backend feature alone, both and none, gantry-host alone:
               cargo check each and run its example (part of `test`)
  docs         cargo doc --workspace --no-deps with warnings denied (part of `test`)
  miri         gantry-host's tests under Miri (nightly toolchain with miri)
  loom         gantry-host's loom models of its concurrent types (part of `test`)
  check-system check for a Vulkan loader, a driver and the validation layer, install them if root
  help         this text

Both `test` and `demo` check the system first. As root on Debian or Ubuntu they install
the missing packages with apt; otherwise they stop and name the command to run.
";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_else(|| "help".to_owned());
    let rest: Vec<String> = args.collect();
    let result = match command.as_str() {
        "test" => system::ensure().and_then(|()| test()),
        "demo" => system::ensure().and_then(|()| demo(&rest)),
        "conformance" => system::ensure().and_then(|()| conformance(&rest)),
        "features" => system::ensure().and_then(|()| features()),
        "docs" => docs(),
        "miri" => miri(),
        "loom" => loom(),
        "check-system" => system::ensure(),
        "help" | "--help" | "-h" => {
            print!("{HELP}");
            Ok(())
        }
        other => Err(format!("unknown command `{other}`\n\n{HELP}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `cargo` with `args`, printing the command line first; an unsuccessful exit is an error.
fn cargo(args: &[&str]) -> Result<(), String> {
    cargo_env(args, &[])
}

fn cargo_env(args: &[&str], env: &[(&str, &str)]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let shown: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("\n==> {} cargo {}", shown.join(" "), args.join(" "));
    let started = Instant::now();
    let mut command = Command::new(&cargo);
    command.args(args).envs(env.iter().copied());
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // Mesa's Vulkan drivers print an error line on every start without it; give them
        // a private runtime directory so real errors stand out.
        let dir = std::env::temp_dir().join("gantry-xdg-runtime");
        if std::fs::create_dir_all(&dir).is_ok() {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
            }
            command.env("XDG_RUNTIME_DIR", &dir);
        }
    }
    let status = command
        .status()
        .map_err(|e| format!("could not start `{cargo}`: {e}"))?;
    println!(
        "<== cargo {} ({:.1} s)",
        args.first().copied().unwrap_or_default(),
        started.elapsed().as_secs_f64()
    );
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` failed with {status}", args.join(" ")))
    }
}

fn has_nextest() -> bool {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
        .args(["nextest", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn test() -> Result<(), String> {
    let started = Instant::now();
    cargo(&["fmt", "--all", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    if has_nextest() {
        cargo(&[
            "nextest",
            "run",
            "--workspace",
            "--no-fail-fast",
            "--failure-output",
            "final",
        ])?;
        cargo(&["test", "--workspace", "--doc"])?;
    } else {
        println!("(cargo-nextest not installed: using cargo test)");
        cargo(&["test", "--workspace"])?;
    }
    loom()?;
    conformance(&[])?;
    features()?;
    docs()?;
    println!(
        "\nxtask test: all steps passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `gantry` with each feature set alone, both and none, and `gantry-host` alone: `cargo
/// check` of each, then the example of each combination runs (the GPU ones on lavapipe).
fn features() -> Result<(), String> {
    for features in ["", "wgpu", "vulkan", "wgpu,vulkan"] {
        let mut args = vec!["check", "--package", "gantry", "--no-default-features"];
        if !features.is_empty() {
            args.extend(["--features", features]);
        }
        cargo(&args)?;
    }
    cargo(&["check", "--package", "gantry-host"])?;
    cargo(&["run", "--package", "gantry-host", "--example", "host_only"])?;
    cargo(&["run", "--package", "gantry", "--example", "no_backend"])?;
    for (features, example) in [
        ("wgpu", "wgpu_only"),
        ("vulkan", "vulkan_only"),
        ("wgpu,vulkan", "both_backends"),
    ] {
        cargo(&[
            "run",
            "--package",
            "gantry",
            "--no-default-features",
            "--features",
            features,
            "--example",
            example,
            "--",
            "llvmpipe",
        ])?;
    }
    // The README's quick start, on the default adapter.
    cargo(&[
        "run",
        "--package",
        "gantry",
        "--features",
        "vulkan",
        "--example",
        "quick_start",
    ])?;
    Ok(())
}

/// Every crate's documentation, with rustdoc's warnings as errors.
fn docs() -> Result<(), String> {
    cargo_env(
        &["doc", "--workspace", "--no-deps"],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )
}

/// The conformance suite's table binary (debug build: the tests above compiled it already).
fn conformance(rest: &[String]) -> Result<(), String> {
    let mut args = vec![
        "run",
        "--package",
        "gantry-conformance",
        "--bin",
        "conformance",
        "--",
    ];
    args.extend(rest.iter().map(String::as_str));
    cargo(&args)
}

fn demo(rest: &[String]) -> Result<(), String> {
    let mut args = vec![
        "run",
        "--release",
        "--package",
        "gantry",
        "--features",
        "wgpu,vulkan",
        "--example",
        "demo",
        "--",
    ];
    args.extend(rest.iter().map(String::as_str));
    cargo(&args)
}

/// gantry-host's loom models (pool, SPSC ring, double and triple buffer). They build with
/// `--cfg loom` into their own target directory so the normal build stays cached.
fn loom() -> Result<(), String> {
    let target = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/loom");
    cargo_env(
        &[
            "test",
            "--package",
            "gantry-host",
            "--release",
            "--test",
            "loom",
        ],
        &[("RUSTFLAGS", "--cfg loom"), ("CARGO_TARGET_DIR", target)],
    )
}

/// gantry-host under Miri. `cargo +nightly` needs rustup's proxy, and `$CARGO` (set by
/// `cargo xtask`) is the stable toolchain's real binary, so go through `rustup run`.
fn miri() -> Result<(), String> {
    let args = [
        "run",
        "nightly",
        "cargo",
        "miri",
        "test",
        "--package",
        "gantry-host",
    ];
    println!(
        "\n==> MIRIFLAGS=-Zmiri-strict-provenance rustup {}",
        args.join(" ")
    );
    let status = Command::new("rustup")
        .args(args)
        .env("MIRIFLAGS", "-Zmiri-strict-provenance")
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .status()
        .map_err(|e| {
            format!(
                "could not start rustup ({e}); install the nightly toolchain with \
                 `rustup toolchain install nightly --component miri rust-src`"
            )
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo +nightly miri test` failed with {status}"))
    }
}
