//! Write a tiny oracle model's weights for tools/oracle/gen_fixtures.py.
//! Usage: tiny_weights (a|b) SEED OUT_DIR

use anyhow::{bail, Context, Result};
use std::path::Path;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        bail!("usage: tiny_weights (a|b) SEED OUT_DIR");
    }
    let cfg = match args[1].as_str() {
        "a" => ds4_model::tiny::config_a(),
        "b" => ds4_model::tiny::config_b(),
        other => bail!("unknown fixture {other:?} (a or b)"),
    };
    let seed: u64 = args[2].parse().context("SEED must be an integer")?;
    let m = ds4_model::tiny::generate(&cfg, seed)?;
    ds4_model::tiny::write_for_oracle(&m, Path::new(&args[3]))?;
    println!("{:016x}", m.fingerprint);
    Ok(())
}
