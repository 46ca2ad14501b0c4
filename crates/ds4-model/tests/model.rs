//! Session-state, numerics-mode and kernel-identity tests on the tiny models.

use ds4_model::backend::{hc_weights, sinkhorn, topk_desc, RopeTable};
use ds4_model::{state_values_per_token, tiny, Config, Cpu, Model, Numerics, Want};

fn tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % vocab as u64) as u32
        })
        .collect()
}

fn model(cfg: Config, seed: u64) -> Model<Cpu> {
    let m = tiny::generate(&cfg, seed).unwrap();
    Model::bind(Cpu, cfg, &m.main, Some(&m.mtp)).unwrap()
}

fn argmax(v: &[f32]) -> usize {
    let mut b = 0;
    for i in 1..v.len() {
        if v[i] > v[b] {
            b = i;
        }
    }
    b
}

/// Official vs exact on the same model: how far the quantisation simulation
/// moves the logits. Returns (max|Δ|/max|logit|, mean over positions of
/// rms(Δ)/rms(logits), argmax agreement).
fn official_vs_exact(cfg: Config, n: usize) -> (f32, f32, f32) {
    let vocab = cfg.vocab;
    let m = model(cfg, 11);
    let ids = tokens(n, vocab, 5);
    let mut se = m.session(Numerics::Exact);
    let ex = m.forward(&mut se, &ids, Want::All).unwrap();
    let mut so = m.session(Numerics::Official);
    let of = m.forward(&mut so, &ids, Want::All).unwrap();
    let max = ex.iter().fold(0f32, |a, &b| a.max(b.abs()));
    let d = ex
        .iter()
        .zip(&of)
        .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
    let mut agree = 0;
    let mut rel = 0f64;
    for t in 0..n {
        let (e, o) = (
            &ex[t * vocab..(t + 1) * vocab],
            &of[t * vocab..(t + 1) * vocab],
        );
        agree += (argmax(e) == argmax(o)) as usize;
        let rms_e: f64 = e.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
        let rms_d: f64 = e
            .iter()
            .zip(o)
            .map(|(&x, &y)| ((x - y) as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        rel += rms_d / rms_e;
    }
    (d / max, (rel / n as f64) as f32, agree as f32 / n as f32)
}

#[test]
fn official_mode_stays_close_to_exact() {
    // FP8 e4m3 keeps 3 mantissa bits: each KV value moves by at most 2^-4 = 6.25%
    // (relative), and attention outputs are convex mixes of such values, so the
    // typical (rms) relative change of the logits must stay below that; FP4 on the
    // indexer only changes which rows are picked once more than top-k exist (tiny A
    // prunes top-4 of up to 25 rows, so there the picks, and the logits, move more).
    let mut a_no_prune = tiny::config_a();
    a_no_prune.idx_topk = 1000;
    for (name, cfg, n, pruning) in [
        ("A", tiny::config_a(), 100, true),
        ("A without indexer pruning", a_no_prune, 100, false),
        ("B", tiny::config_b(), 600, false),
    ] {
        let (d, rms, agree) = official_vs_exact(cfg, n);
        eprintln!(
            "official vs exact, tiny {name} ({n} tokens): rms|Δ|/rms|logit| = {rms:.4} (mean over positions), \
             max|Δ|/max|logit| = {d:.4}, argmax agreement {:.1}%",
            agree * 100.0
        );
        assert!(
            rms > 1e-4,
            "official mode did not change the logits: the simulation is not active"
        );
        if !pruning {
            assert!(
                rms < 0.0625,
                "{name}: official mode moved the logits by {rms} (rms, relative)"
            );
        }
        assert!(
            agree >= 0.85,
            "{name}: official/exact argmax agreement {agree}"
        );
    }
}

#[test]
fn official_chunked_prefill_equals_decode_bitwise() {
    let cfg = tiny::config_a();
    let m = model(cfg.clone(), 3);
    let ids = tokens(90, cfg.vocab, 9);
    let mut s1 = m.session(Numerics::Official);
    let whole = m.forward(&mut s1, &ids, Want::All).unwrap();
    let mut s2 = m.session(Numerics::Official);
    let mut start = 0;
    for l in [3usize, 1, 12, 4, 17, 16, 5, 32] {
        let got = m
            .forward(&mut s2, &ids[start..start + l], Want::All)
            .unwrap();
        assert_eq!(
            &got[..],
            &whole[start * cfg.vocab..(start + l) * cfg.vocab],
            "chunk at {start}"
        );
        start += l;
    }
    let mut s3 = m.session(Numerics::Official);
    for (i, &t) in ids.iter().enumerate() {
        let got = m.forward(&mut s3, &[t], Want::Last).unwrap();
        assert_eq!(
            &got[..],
            &whole[i * cfg.vocab..(i + 1) * cfg.vocab],
            "decode at {i}"
        );
    }
    assert_eq!(s2.compressed_rows(), s3.compressed_rows());
    assert_eq!(s2.growing_bytes(&m.be), s3.growing_bytes(&m.be));
}

#[test]
fn state_rows_and_bytes_follow_spec_section_7() {
    // spec §7.4: 21 CSA x 160 + 20 HCA x 4 = 3440 values/token; f32 13,760 bytes/token
    let flash = Config::flash();
    assert_eq!(state_values_per_token(&flash), 3440.0);
    assert_eq!(state_values_per_token(&flash) * 4.0, 13760.0);
    assert_eq!(state_values_per_token(&flash) * 2.0, 6880.0);

    let cfg = tiny::config_a();
    let m = model(cfg.clone(), 1);
    let mut s = m.session(Numerics::Exact);
    let ids = tokens(97, cfg.vocab, 2);
    let mut n = 0;
    for l in [1usize, 2, 5, 8, 16, 1, 64] {
        m.forward(&mut s, &ids[n..n + l], Want::None).unwrap();
        n += l;
        let rows = s.compressed_rows();
        let idx = s.indexer_rows();
        let raw = s.raw_rows();
        let mut want_bytes = 0;
        for layer in 0..cfg.n_layers {
            let r = cfg.compress_ratios[layer];
            let want = n.checked_div(r).unwrap_or(0);
            assert_eq!(
                rows[layer], want,
                "layer {layer} compressed rows after {n} tokens"
            );
            let want_idx = if r == 4 { n / 4 } else { 0 };
            assert_eq!(idx[layer], want_idx, "layer {layer} indexer rows after {n}");
            assert_eq!(
                raw[layer],
                n.min(cfg.window),
                "layer {layer} raw rows after {n}"
            );
            want_bytes += 4 * (want * cfg.head_dim + want_idx * cfg.idx_dim);
        }
        assert_eq!(s.growing_bytes(&m.be), want_bytes, "after {n} tokens");
    }
    // amortised growth over whole windows (80 = lcm of the ratios 4, 16 times 5)
    // equals the §7.4 formula for this config
    let mut s2 = m.session(Numerics::Exact);
    m.forward(&mut s2, &tokens(80, cfg.vocab, 4), Want::None)
        .unwrap();
    assert_eq!(
        s2.growing_bytes(&m.be) as f64 / 80.0,
        4.0 * state_values_per_token(&cfg)
    );
}

#[test]
fn sinkhorn_is_doubly_stochastic_and_follows_spec_order() {
    let n = 4;
    let z: Vec<f32> = (0..16).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.3).collect();
    let mut c = z.clone();
    sinkhorn(&mut c, n, 20, 1e-6);
    for j in 0..n {
        let row: f32 = (0..n).map(|k| c[j * n + k]).sum();
        let col: f32 = (0..n).map(|k| c[k * n + j]).sum();
        assert!((row - 1.0).abs() < 1e-3, "row {j} sums to {row}");
        assert!((col - 1.0).abs() < 1e-5, "column {j} sums to {col}");
    }
    // one iteration = softmax rows, +eps, one column normalisation (f64 reference)
    let mut c1 = z.clone();
    sinkhorn(&mut c1, n, 1, 1e-6);
    let mut r = [0f64; 16];
    for j in 0..n {
        let m = (0..n).map(|k| z[j * n + k] as f64).fold(f64::MIN, f64::max);
        let s: f64 = (0..n).map(|k| (z[j * n + k] as f64 - m).exp()).sum();
        for k in 0..n {
            r[j * n + k] = (z[j * n + k] as f64 - m).exp() / s + 1e-6;
        }
    }
    for k in 0..n {
        let s: f64 = (0..n).map(|j| r[j * n + k]).sum();
        for j in 0..n {
            assert!((c1[j * n + k] as f64 - r[j * n + k] / (s + 1e-6)).abs() < 1e-6);
        }
    }
    // hc_weights: pre in (eps, 1+eps), post in (0, 2)
    let mix: Vec<f32> = (0..24).map(|i| (i as f32 - 12.0) / 3.0).collect();
    let (pre, post, _) = hc_weights(&mix, &[0.0; 24], &[1.0, 1.0, 1.0], 4, 20, 1e-6);
    assert!(pre.iter().all(|&p| p > 1e-6 && p < 1.0 + 1e-6));
    assert!(post.iter().all(|&p| p > 0.0 && p < 2.0));
}

#[test]
fn yarn_table_matches_spec_ranges() {
    // spec §3.3: theta 160000, factor 16, L_orig 65536 -> low 15, high 25
    let cfg = Config::flash();
    let t = RopeTable::new(&cfg, cfg.compress_rope_theta, true);
    let plain = RopeTable::new(&cfg, cfg.compress_rope_theta, false);
    for j in 0..32 {
        let phi = 160000f64.powf(-(2.0 * j as f64) / 64.0);
        assert!((plain.inv_f64[j] - phi).abs() < 1e-15 * phi.max(1.0));
        let want = if j <= 15 {
            phi
        } else if j >= 25 {
            phi / 16.0
        } else {
            let r = (j as f64 - 15.0) / 10.0;
            phi * ((1.0 - r) + r / 16.0)
        };
        assert!((t.inv_f64[j] - want).abs() <= 1e-12 * want, "pair {j}");
        assert!(
            ((t.inv_f32[j] as f64) - want).abs() <= 1e-6 * want,
            "pair {j} (f32)"
        );
    }
    // rotation at a long position: f64 angle reduced before cos/sin
    let (c, s) = t.cos_sin(1_000_000, 0, true);
    assert!(
        (c - 1_000_000f64.cos() as f32).abs() < 1e-6
            && (s - 1_000_000f64.sin() as f32).abs() < 1e-6
    );
}

#[test]
fn topk_ties_break_toward_lower_index() {
    let v = [0.5, 1.0, 0.0, 1.0, 0.0, 0.0, 2.0];
    assert_eq!(topk_desc(&v, 4), vec![6, 1, 3, 0]);
    assert_eq!(topk_desc(&v, 6), vec![6, 1, 3, 0, 2, 4]);
}

#[test]
fn bad_inputs_are_errors() {
    let cfg = tiny::config_a();
    let m = model(cfg.clone(), 1);
    let mut s = m.session(Numerics::Exact);
    let err = m
        .forward(&mut s, &[0, cfg.vocab as u32], Want::Last)
        .unwrap_err();
    assert!(err.to_string().contains("outside the vocabulary"), "{err}");
    assert_eq!(s.pos(), 0, "a rejected call must not advance the session");
    assert!(m.forward(&mut s, &[], Want::All).unwrap().is_empty());
    // a missing tensor names itself
    let g = tiny::generate(&cfg, 1).unwrap();
    let mut broken = ds4_model::MemSource::new();
    for n in g.main.names() {
        if n != "blk.3.attn_compressor_ape.weight" {
            broken.insert(n, ds4_model::TensorSource::tensor(&g.main, n).unwrap());
        }
    }
    let err = Model::bind(Cpu, cfg.clone(), &broken, None).err().unwrap();
    assert!(
        format!("{err:#}").contains("blk.3.attn_compressor_ape.weight"),
        "{err:#}"
    );
    // a hash-routing table naming an expert the model does not have
    let mut bad_hash = ds4_model::MemSource::new();
    for n in g.main.names() {
        let t = ds4_model::TensorSource::tensor(&g.main, n).unwrap();
        if n == "blk.1.ffn_gate_tid2eid.weight" {
            let mut ids = vec![0i32; t.n_elems()];
            ids[7] = cfg.n_experts as i32;
            bad_hash.insert_i32(n, t.dims.clone(), &ids).unwrap();
        } else {
            bad_hash.insert(n, t);
        }
    }
    let err = format!(
        "{:#}",
        Model::bind(Cpu, cfg.clone(), &bad_hash, None)
            .err()
            .unwrap()
    );
    assert!(
        err.contains("blk.1.ffn_gate_tid2eid.weight") && err.contains("expert 8"),
        "{err}"
    );
    // a session of another model
    let other = model(tiny::config_b(), 1);
    let mut so = other.session(Numerics::Exact);
    assert!(m.forward(&mut so, &[1], Want::Last).is_err());
    // a config that cannot run
    let mut bad = cfg;
    bad.head_dim = 100;
    assert!(Model::bind(Cpu, bad, &g.main, None).is_err());
}

#[test]
fn mtp_reset_restarts_its_window() {
    let cfg = tiny::config_a();
    let m = model(cfg.clone(), 2);
    let ids = tokens(30, cfg.vocab, 8);
    let mut s = m.session(Numerics::Exact);
    m.forward(&mut s, &ids, Want::None).unwrap();
    let h = s.last_hidden().unwrap().clone();
    let (first, _) = m.mtp_forward(&mut s, &h, ids[0]).unwrap();
    for t in &ids[1..20] {
        m.mtp_forward(&mut s, &h, *t).unwrap();
    }
    assert_eq!(s.mtp_pos(), 20);
    let (later, _) = m.mtp_forward(&mut s, &h, ids[0]).unwrap();
    assert_ne!(first, later, "the MTP window must carry earlier calls");
    s.reset_mtp(&m, 0).unwrap();
    let (again, _) = m.mtp_forward(&mut s, &h, ids[0]).unwrap();
    assert_eq!(first, again);
    // wrong-size state is an error
    assert!(m.mtp_forward(&mut s, &vec![0.0; 7], ids[0]).is_err());
}

/// `Session::clone` is a deep snapshot: after cloning mid-sequence, the copy
/// and the original (and a session that never was cloned) produce bit-identical
/// logits, and advancing one does not disturb the other.
#[test]
fn session_clone_is_an_independent_snapshot() {
    let cfg = tiny::config_a();
    let m = model(cfg.clone(), 3);
    let ids = tokens(40, cfg.vocab, 9);
    for num in [Numerics::Exact, Numerics::Official] {
        let mut a = m.session(num);
        m.forward(&mut a, &ids[..30], Want::None).unwrap();
        let snap = a.clone();
        // advance the original past the snapshot point
        let la = m.forward(&mut a, &ids[30..], Want::All).unwrap();
        // restore: the snapshot replays the same tokens identically
        let mut b = snap.clone();
        let lb = m.forward(&mut b, &ids[30..], Want::All).unwrap();
        assert_eq!(la, lb, "{num:?}: restored snapshot diverges");
        // and matches a session that was never cloned
        let mut c = m.session(num);
        let lc = m.forward(&mut c, &ids, Want::All).unwrap();
        assert_eq!(
            &lc[lc.len() - la.len()..],
            &la[..],
            "{num:?}: clone vs fresh"
        );
        // the snapshot itself was not advanced by either
        let mut d = snap;
        let ld = m.forward(&mut d, &ids[30..31], Want::Last).unwrap();
        assert_eq!(&ld[..], &la[..cfg.vocab], "{num:?}: snapshot was mutated");
    }
}
