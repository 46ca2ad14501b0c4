//! Deterministic tiny random-weight models for oracle comparisons
//! (spec/model.md §9). The weights are regenerated from a seed, never stored.

use crate::config::{AttnKind, Config};
use crate::weights::MemSource;
use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;

/// Fixture A: everything shrunk (window 16, HCA ratio 16, top-k 4, low clamp).
pub fn config_a() -> Config {
    Config {
        vocab: 512,
        dim: 64,
        n_layers: 6,
        n_heads: 4,
        head_dim: 128,
        rope_dim: 64,
        q_lora: 32,
        o_groups: 2,
        o_lora: 16,
        n_experts: 8,
        n_experts_used: 2,
        ffn_dim: 32,
        routed_scale: 1.5,
        swiglu_limit: vec![0.8; 6],
        n_hash: 3,
        window: 16,
        compress_ratios: vec![0, 0, 4, 16, 4, 16],
        idx_heads: 4,
        idx_dim: 128,
        idx_topk: 4,
        ..Config::flash()
    }
}

/// Fixture B: tiny widths, real structure (window 128, ratios 4/128, top-k 512, 64 indexer heads).
pub fn config_b() -> Config {
    Config {
        vocab: 128,
        dim: 64,
        n_layers: 4,
        n_heads: 4,
        head_dim: 128,
        rope_dim: 64,
        q_lora: 32,
        o_groups: 2,
        o_lora: 16,
        n_experts: 8,
        n_experts_used: 2,
        ffn_dim: 32,
        routed_scale: 1.5,
        swiglu_limit: vec![2.0; 4],
        n_hash: 2,
        window: 128,
        compress_ratios: vec![0, 0, 4, 128],
        idx_heads: 64,
        idx_dim: 128,
        idx_topk: 512,
        ..Config::flash()
    }
}

/// Counter-based generator: splitmix64 of `seed ^ fnv(name)` and the element index.
struct Stream {
    key: u64,
    i: u64,
}

impl Stream {
    fn new(seed: u64, name: &str) -> Stream {
        Stream {
            key: seed ^ fnv1a(name.as_bytes(), 0xcbf2_9ce4_8422_2325),
            i: 0,
        }
    }
    fn next_u64(&mut self) -> u64 {
        self.i += 1;
        let mut z = self
            .key
            .wrapping_add(self.i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32) * (1.0 / (1u64 << 23) as f32) - 1.0
    }
}

/// FNV-1a 64 continuing from `h`.
pub fn fnv1a(bytes: &[u8], mut h: u64) -> u64 {
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A generated model: main tensors, MTP tensors, and a fingerprint.
pub struct TinyModel {
    pub cfg: Config,
    pub main: MemSource,
    pub mtp: MemSource,
    /// FNV-1a over every tensor's name and bytes (main then MTP, insertion order).
    pub fingerprint: u64,
}

struct Gen<'a> {
    seed: u64,
    src: &'a mut MemSource,
}

impl Gen<'_> {
    /// Uniform in `offset ± scale` with GGUF dims.
    fn t(&mut self, name: &str, dims: Vec<usize>, offset: f32, scale: f32) -> Result<()> {
        let n: usize = dims.iter().product();
        let mut s = Stream::new(self.seed, name);
        let data = (0..n).map(|_| offset + scale * s.uniform()).collect();
        self.src.insert_f32(name, dims, data)
    }
    /// A linear layer `[out, in]` with unit-variance outputs for unit inputs.
    fn lin(&mut self, name: &str, inp: usize, out: usize, gain: f32) -> Result<()> {
        self.t(name, vec![inp, out], 0.0, gain * (3.0 / inp as f32).sqrt())
    }
}

fn gen_block(
    g: &mut Gen,
    c: &Config,
    p: &dyn Fn(&str) -> String,
    kind: AttnKind,
    hash: bool,
) -> Result<()> {
    let (d, hd) = (c.dim, c.head_dim);
    for hc in ["hc_attn", "hc_ffn"] {
        g.t(
            &p(&format!("{hc}_fn.weight")),
            vec![c.hc_dim(), c.hc_mix()],
            0.0,
            0.05,
        )?;
        g.t(&p(&format!("{hc}_base.weight")), vec![c.hc_mix()], 0.0, 0.5)?;
        g.t(&p(&format!("{hc}_scale.weight")), vec![3], 1.0, 0.3)?;
    }
    g.t(&p("attn_norm.weight"), vec![d], 1.0, 0.2)?;
    g.lin(&p("attn_q_a.weight"), d, c.q_lora, 1.0)?;
    g.t(&p("attn_q_a_norm.weight"), vec![c.q_lora], 1.0, 0.2)?;
    g.lin(&p("attn_q_b.weight"), c.q_lora, c.n_heads * hd, 1.0)?;
    g.lin(&p("attn_kv.weight"), d, hd, 1.0)?;
    g.t(&p("attn_kv_a_norm.weight"), vec![hd], 1.0, 0.2)?;
    g.t(&p("attn_sinks.weight"), vec![c.n_heads], 0.0, 2.0)?;
    g.lin(
        &p("attn_output_a.weight"),
        c.n_heads * hd / c.o_groups,
        c.o_groups * c.o_lora,
        1.0,
    )?;
    g.lin(&p("attn_output_b.weight"), c.o_groups * c.o_lora, d, 1.0)?;
    let comp = |g: &mut Gen, pre: &str, width: usize, ratio: usize, overlap: bool| -> Result<()> {
        let in_w = if overlap { 2 * width } else { width };
        g.lin(&p(&format!("{pre}_kv.weight")), d, in_w, 1.0)?;
        g.lin(&p(&format!("{pre}_gate.weight")), d, in_w, 1.0)?;
        g.t(
            &p(&format!("{pre}_ape.weight")),
            vec![in_w, ratio],
            0.0,
            1.5,
        )?;
        g.t(&p(&format!("{pre}_norm.weight")), vec![width], 1.0, 0.2)
    };
    match kind {
        AttnKind::Swa => {}
        AttnKind::Hca(r) => comp(g, "attn_compressor", hd, r, false)?,
        AttnKind::Csa => {
            comp(g, "attn_compressor", hd, 4, true)?;
            g.lin(
                &p("indexer.attn_q_b.weight"),
                c.q_lora,
                c.idx_heads * c.idx_dim,
                1.0,
            )?;
            g.lin(&p("indexer.proj.weight"), d, c.idx_heads, 1.0)?;
            comp(g, "indexer_compressor", c.idx_dim, 4, true)?;
        }
    }
    g.t(&p("ffn_norm.weight"), vec![d], 1.0, 0.2)?;
    g.lin(&p("ffn_gate_inp.weight"), d, c.n_experts, 1.0)?;
    if hash {
        let name = p("ffn_gate_tid2eid.weight");
        let mut s = Stream::new(g.seed, &name);
        let mut ids = Vec::with_capacity(c.vocab * c.n_experts_used);
        for _ in 0..c.vocab {
            let mut row: Vec<i32> = Vec::new();
            while row.len() < c.n_experts_used {
                let e = (s.next_u64() % c.n_experts as u64) as i32;
                if !row.contains(&e) {
                    row.push(e);
                }
            }
            ids.extend(row);
        }
        g.src
            .insert_i32(&name, vec![c.n_experts_used, c.vocab], &ids)?;
    } else {
        g.t(&p("exp_probs_b.bias"), vec![c.n_experts], 0.0, 0.5)?;
    }
    let (sd, sf) = ((3.0 / d as f32).sqrt(), (3.0 / c.ffn_dim as f32).sqrt());
    g.t(
        &p("ffn_gate_exps.weight"),
        vec![d, c.ffn_dim, c.n_experts],
        0.0,
        sd,
    )?;
    g.t(
        &p("ffn_up_exps.weight"),
        vec![d, c.ffn_dim, c.n_experts],
        0.0,
        sd,
    )?;
    g.t(
        &p("ffn_down_exps.weight"),
        vec![c.ffn_dim, d, c.n_experts],
        0.0,
        sf,
    )?;
    g.lin(&p("ffn_gate_shexp.weight"), d, c.ffn_dim, 1.0)?;
    g.lin(&p("ffn_up_shexp.weight"), d, c.ffn_dim, 1.0)?;
    g.lin(&p("ffn_down_shexp.weight"), c.ffn_dim, d, 1.0)?;
    Ok(())
}

/// Generate the tiny model `cfg` from `seed`.
pub fn generate(cfg: &Config, seed: u64) -> Result<TinyModel> {
    cfg.check()?;
    let c = cfg;
    let mut main = MemSource::new();
    {
        let mut g = Gen {
            seed,
            src: &mut main,
        };
        g.t("token_embd.weight", vec![c.dim, c.vocab], 0.0, 1.0)?;
        for l in 0..c.n_layers {
            let p = |s: &str| format!("blk.{l}.{s}");
            gen_block(&mut g, c, &p, c.kind(l), l < c.n_hash)?;
        }
        g.t("output_hc_fn.weight", vec![c.hc_dim(), c.n_hc], 0.0, 0.05)?;
        g.t("output_hc_base.weight", vec![c.n_hc], 0.0, 0.5)?;
        g.t("output_hc_scale.weight", vec![1], 1.0, 0.3)?;
        g.t("output_norm.weight", vec![c.dim], 1.0, 0.2)?;
        g.lin("output.weight", c.dim, c.vocab, 1.0)?;
    }
    let mut mtp = MemSource::new();
    {
        let mut g = Gen {
            seed,
            src: &mut mtp,
        };
        let p = |s: &str| format!("mtp.0.{s}");
        g.lin(&p("e_proj.weight"), c.dim, c.dim, 1.0)?;
        g.lin(&p("h_proj.weight"), c.dim, c.dim, 1.0)?;
        g.t(&p("enorm.weight"), vec![c.dim], 1.0, 0.2)?;
        g.t(&p("hnorm.weight"), vec![c.dim], 1.0, 0.2)?;
        g.t(&p("norm.weight"), vec![c.dim], 1.0, 0.2)?;
        g.t(&p("hc_head_fn.weight"), vec![c.hc_dim(), c.n_hc], 0.0, 0.05)?;
        g.t(&p("hc_head_base.weight"), vec![c.n_hc], 0.0, 0.5)?;
        g.t(&p("hc_head_scale.weight"), vec![1], 1.0, 0.3)?;
        gen_block(&mut g, c, &p, AttnKind::Swa, false)?;
    }
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for src in [&main, &mtp] {
        for n in src.names() {
            let t =
                crate::weights::TensorSource::tensor(src, n).context("tensor listed but absent")?;
            h = fnv1a(n.as_bytes(), h);
            h = fnv1a(t.bytes(), h);
        }
    }
    Ok(TinyModel {
        cfg: cfg.clone(),
        main,
        mtp,
        fingerprint: h,
    })
}

/// Write the tensors (main and MTP) of a tiny model for the Python oracle: `weights.bin`
/// (raw little-endian data, tensor after tensor) and `manifest.json`
/// (name → GGUF dims, type, byte offset) plus the config and fingerprint.
pub fn write_for_oracle(m: &TinyModel, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut bin = std::fs::File::create(dir.join("weights.bin"))?;
    let mut entries = Vec::new();
    let mut off = 0usize;
    let all = m
        .main
        .names()
        .iter()
        .map(|n| (&m.main, n))
        .chain(m.mtp.names().iter().map(|n| (&m.mtp, n)));
    for (src, n) in all {
        let t = crate::weights::TensorSource::tensor(src, n).context("tensor listed but absent")?;
        bin.write_all(t.bytes())?;
        let dims: Vec<String> = t.dims.iter().map(|d| d.to_string()).collect();
        entries.push(format!(
            "    \"{n}\": {{\"dims\": [{}], \"type\": \"{}\", \"offset\": {off}, \"bytes\": {}}}",
            dims.join(", "),
            t.ty,
            t.bytes().len()
        ));
        off += t.bytes().len();
    }
    let cfg = config_json(&m.cfg);
    let manifest = format!(
        "{{\n  \"fingerprint\": \"{:016x}\",\n  \"config\": {cfg},\n  \"tensors\": {{\n{}\n  }}\n}}\n",
        m.fingerprint,
        entries.join(",\n")
    );
    std::fs::write(dir.join("manifest.json"), manifest)?;
    Ok(())
}

/// The config as the JSON object tools/oracle/gen_fixtures.py reads.
pub fn config_json(c: &Config) -> String {
    let list = |v: &[usize]| {
        v.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let lim = c
        .swiglu_limit
        .iter()
        .map(|x| format!("{x:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "{{\"vocab\": {}, \"dim\": {}, \"n_layers\": {}, \"n_heads\": {}, \"head_dim\": {}, \"rope_dim\": {}, \"q_lora\": {}, \"o_groups\": {}, \"o_lora\": {}, \"n_experts\": {}, \"n_experts_used\": {}, \"ffn_dim\": {}, \"routed_scale\": {:?}, \"swiglu_limit\": [{lim}], \"n_hash\": {}, \"window\": {}, \"compress_ratios\": [{}], \"idx_heads\": {}, \"idx_dim\": {}, \"idx_topk\": {}, \"n_hc\": {}, \"sinkhorn_iters\": {}, \"hc_eps\": {:?}, \"rms_eps\": {:?}, \"rope_theta\": {:?}, \"compress_rope_theta\": {:?}, \"yarn_factor\": {:?}, \"yarn_orig_ctx\": {}, \"yarn_beta_fast\": {:?}, \"yarn_beta_slow\": {:?}}}",
        c.vocab, c.dim, c.n_layers, c.n_heads, c.head_dim, c.rope_dim, c.q_lora, c.o_groups, c.o_lora, c.n_experts,
        c.n_experts_used, c.ffn_dim, c.routed_scale, c.n_hash, c.window, list(&c.compress_ratios), c.idx_heads,
        c.idx_dim, c.idx_topk, c.n_hc, c.sinkhorn_iters, c.hc_eps, c.rms_eps, c.rope_theta, c.compress_rope_theta,
        c.yarn_factor, c.yarn_orig_ctx, c.yarn_beta_fast, c.yarn_beta_slow
    )
}

/// FNV-1a over every tensor's name and bytes of a GGUF file, in directory order.
pub fn gguf_fingerprint(f: &ds4_gguf::GgufFile) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for t in f.tensors() {
        h = fnv1a(t.name.as_bytes(), h);
        h = fnv1a(f.tensor_data(t), h);
    }
    h
}

/// Fixture C: the ds4_gguf::synth tiny preset (5 layers, ratios `[0,0,4,128,4]`, 3 hash
/// layers, window 16, top-k 8) with a 300-token placeholder vocabulary, F32,
/// hot SwiGLU rows.
pub fn synth_config_c(seed: u64) -> ds4_gguf::synth::SynthConfig {
    let mut c = ds4_gguf::synth::SynthConfig::tiny();
    c.vocab = ds4_gguf::synth::VocabSource::Placeholder(300);
    c.seed = seed;
    // pinned here (not left to the preset) so the fixture's bytes do not follow
    // preset changes; hot rows make the SwiGLU clamp (10) run
    c.recipe = ds4_gguf::layout::Recipe::F32;
    c.hot_rows = Some(ds4_gguf::synth::HotRows {
        one_in: 256,
        scale: 20.0,
    });
    c
}
