//! Synthesize the GGUF of oracle fixture C (ds4_gguf::synth tiny preset,
//! placeholder vocabulary of 300) for tools/oracle/gen_fixtures.py.
//! Usage: synth_oracle SEED OUT.gguf — prints {"fingerprint", "config"} as JSON.

use anyhow::{bail, Context, Result};
use std::path::Path;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        bail!("usage: synth_oracle SEED OUT.gguf");
    }
    let seed: u64 = args[1].parse().context("SEED must be an integer")?;
    let out = Path::new(&args[2]);
    let cfg = ds4_model::tiny::synth_config_c(seed);
    ds4_gguf::synth::synth_main(&cfg, out)?;
    let (f, c) = ds4_model::gguf::open_validated(out)?;
    println!(
        "{{\"fingerprint\": \"{:016x}\", \"config\": {}}}",
        ds4_model::tiny::gguf_fingerprint(&f),
        ds4_model::tiny::config_json(&c)
    );
    Ok(())
}
