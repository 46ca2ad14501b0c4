//! Throughput of the CPU forward on the tiny oracle models (prefill and decode).
//! Run: cargo bench -p ds4-model --bench forward

use ds4_model::{tiny, Backend, Cpu, Model, Numerics, Want};
use std::time::Instant;

fn main() {
    for (name, cfg, n) in [
        ("tiny A", tiny::config_a(), 512),
        ("tiny B", tiny::config_b(), 2200),
    ] {
        let g = tiny::generate(&cfg, 1).expect("generate");
        let m = Model::bind(Cpu, cfg.clone(), &g.main, None).expect("bind");
        let ids: Vec<u32> = (0..n as u32)
            .map(|i| (i * 7919) % cfg.vocab as u32)
            .collect();
        for num in [Numerics::Exact, Numerics::Official] {
            let mut s = m.session(num);
            let t = Instant::now();
            m.forward(&mut s, &ids, Want::Last).expect("prefill");
            let prefill = t.elapsed().as_secs_f64();
            let mut s = m.session(num);
            let t = Instant::now();
            for &id in &ids {
                m.forward(&mut s, &[id], Want::Last).expect("decode");
            }
            let decode = t.elapsed().as_secs_f64();
            println!(
                "{name} {num:?}: prefill {n} tokens {:.0} tok/s, decode {:.0} tok/s ({})",
                n as f64 / prefill,
                n as f64 / decode,
                m.be.name()
            );
        }
    }
}
