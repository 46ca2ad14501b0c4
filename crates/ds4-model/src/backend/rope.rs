//! RoPE frequency tables (spec/model.md §3.3).

use crate::config::Config;

/// RoPE frequency table of one layer kind (spec §3.3).
#[derive(Clone, Debug)]
pub struct RopeTable {
    /// `ω_j` computed the way transformers does (f32 pow, f32 YaRN mix).
    pub inv_f32: Vec<f32>,
    /// `ω_j` in f64 (used with f64 angles in official mode, spec R1).
    pub inv_f64: Vec<f64>,
}

impl RopeTable {
    /// Plain RoPE (`yarn = false`) or YaRN-scaled (compressed layers).
    pub fn new(cfg: &Config, theta: f32, yarn: bool) -> RopeTable {
        let dim = cfg.rope_dim;
        let half = dim / 2;
        let base = theta as f64;
        let (low, high) = if yarn {
            let corr = |rot: f64| {
                dim as f64 * (cfg.yarn_orig_ctx as f64 / (rot * 2.0 * std::f64::consts::PI)).ln()
                    / (2.0 * base.ln())
            };
            let low = corr(cfg.yarn_beta_fast as f64).floor().max(0.0);
            let mut high = corr(cfg.yarn_beta_slow as f64).ceil().min(dim as f64 - 1.0);
            if low == high {
                high += 0.001;
            }
            (low, high)
        } else {
            (0.0, 1.0)
        };
        let factor = cfg.yarn_factor;
        let mut inv_f32 = Vec::with_capacity(half);
        let mut inv_f64 = Vec::with_capacity(half);
        for j in 0..half {
            let x32 = (2 * j) as f32 / dim as f32;
            let pos_freq = base.powf(x32 as f64) as f32;
            let extrap = 1.0f32 / pos_freq;
            let pf64 = base.powf(2.0 * j as f64 / dim as f64);
            if yarn {
                let interp = 1.0f32 / (factor * pos_freq);
                let ramp = ((j as f32 - low as f32) / (high as f32 - low as f32)).clamp(0.0, 1.0);
                let ef = 1.0 - ramp;
                inv_f32.push(interp * (1.0 - ef) + extrap * ef);
                let r64 = ((j as f64 - low) / (high - low)).clamp(0.0, 1.0);
                inv_f64.push((1.0 / pf64) * ((1.0 - r64) + r64 / factor as f64));
            } else {
                inv_f32.push(extrap);
                inv_f64.push(1.0 / pf64);
            }
        }
        RopeTable { inv_f32, inv_f64 }
    }

    /// `(cos, sin)` of pair `j` at position `p`.
    #[inline]
    pub fn cos_sin(&self, p: usize, j: usize, precise: bool) -> (f32, f32) {
        let a = if precise {
            p as f64 * self.inv_f64[j]
        } else {
            (p as f32 * self.inv_f32[j]) as f64
        };
        (a.cos() as f32, a.sin() as f32)
    }
}
