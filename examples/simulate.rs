//! Runs simulator scenarios: prints a table per scenario (towline
//! configurations and tower's baselines side by side) and writes SVG plots.
//!
//! ```text
//! cargo run --release --features sim --example simulate -- scenarios/s1-slow-server.toml
//! cargo run --release --features sim --example simulate -- --out /tmp/plots scenarios/*.toml
//! ```
//!
//! Options:
//!
//! - `--out DIR`: where plots go (default `docs/sim/<scenario name>/`);
//! - `--no-plots`: print the table only;
//! - `--config NAME`: run only this configuration (repeatable);
//! - `--seed N`: another seed than the file's.
//!
//! Copy a scenario file, put in your own latency profile and policy
//! settings, and run it: the format is in `docs/sim/FORMAT.md`.

use std::path::PathBuf;
use std::process::ExitCode;

use towline::sim::Scenario;

struct Args {
    out: Option<PathBuf>,
    plots: bool,
    configs: Vec<String>,
    seed: Option<u64>,
    files: Vec<PathBuf>,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        out: None,
        plots: true,
        configs: Vec::new(),
        seed: None,
        files: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--out" => args.out = Some(value("--out")?.into()),
            "--no-plots" => args.plots = false,
            "--config" => args.configs.push(value("--config")?),
            "--seed" => {
                let v = value("--seed")?;
                args.seed = Some(
                    v.parse()
                        .map_err(|_| format!("--seed: `{v}` is not a number"))?,
                );
            }
            "-h" | "--help" => return Err(String::new()),
            other if other.starts_with("--") => return Err(format!("unknown option {other}")),
            file => args.files.push(file.into()),
        }
    }
    if args.files.is_empty() {
        return Err("give at least one scenario file".into());
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(args) => args,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("simulate: {e}");
            }
            eprintln!(
                "usage: simulate [--out DIR] [--no-plots] [--config NAME]... [--seed N] SCENARIO.toml..."
            );
            return ExitCode::from(2);
        }
    };
    for file in &args.files {
        if let Err(e) = simulate(&args, file) {
            eprintln!("simulate: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

fn simulate(args: &Args, file: &PathBuf) -> Result<(), Box<dyn std::error::Error>> {
    let mut scenario = Scenario::load(file)?;
    if let Some(seed) = args.seed {
        scenario = scenario.with_seed(seed);
    }
    if !args.configs.is_empty() {
        for wanted in &args.configs {
            if !scenario.configs().contains(&wanted.as_str()) {
                return Err(format!(
                    "{}: no configuration named `{wanted}` (it has: {})",
                    file.display(),
                    scenario.configs().join(", ")
                )
                .into());
            }
        }
        scenario = scenario.retain_configs(|c| args.configs.iter().any(|w| w == c));
    }
    println!("== {}", scenario.name());
    if !scenario.description().is_empty() {
        println!("{}", scenario.description());
    }
    let report = scenario.run()?;
    println!("\n{}", report.table());
    if args.plots {
        let dir = match &args.out {
            Some(dir) if args.files.len() > 1 => dir.join(scenario.name()),
            Some(dir) => dir.clone(),
            None => PathBuf::from("docs/sim").join(scenario.name()),
        };
        let written = report.write_plots(&dir)?;
        println!("{} plots in {}\n", written.len(), dir.display());
    }
    Ok(())
}
