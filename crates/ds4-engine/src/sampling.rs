//! Token sampling, bit-for-bit the algorithm of ds4.c (`sample_top_p_min_p`,
//! `sample_full_vocab`, `sample_rng_next`): temperature, top-k, min-p, top-p and
//! an xorshift64* generator.

/// Sampling parameters of one request (already resolved: thinking-mode
/// overrides are applied by the caller).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: i32,
    pub min_p: f32,
    /// `None` = random seed.
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    /// ds4.h defaults: temperature 1, top_p 1, top_k 0 (no cap), min_p 0.05.
    fn default() -> Self {
        SamplingParams {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.05,
            seed: None,
        }
    }
}

/// xorshift64* generator of ds4.c.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        if x == 0 {
            x = 0x9e37_79b9_7f4a_7c15;
        }
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0,1): top 24 bits / 2^24.
    pub fn next_f32(&mut self) -> f32 {
        let x = self.next_u64();
        ((x >> 40) & 0xff_ffff) as f32 / 16_777_216.0
    }
}

/// Index of the largest logit (first one on ties; NaN never wins).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v {
            best_v = v;
            best = i;
        }
    }
    best as u32
}

/// Sample one token id from `logits` with the ds4 sampler.
pub fn sample(logits: &[f32], p: &SamplingParams, rng: &mut Rng) -> u32 {
    let temperature = p.temperature;
    if temperature <= 0.0 || temperature.is_nan() {
        return argmax(logits);
    }
    let top_p = if p.top_p <= 0.0 || p.top_p > 1.0 || p.top_p.is_nan() {
        1.0
    } else {
        p.top_p
    };
    let min_p = if p.min_p < 0.0 || p.min_p.is_nan() {
        0.0
    } else {
        p.min_p
    };
    if p.top_k <= 0 {
        return sample_full_vocab(logits, temperature, top_p, min_p, rng);
    }
    let top_k = (p.top_k.min(1024) as usize).min(logits.len());
    // Insertion into a descending list of the k best finite logits.
    let mut ids: Vec<u32> = Vec::with_capacity(top_k);
    let mut vals: Vec<f32> = Vec::with_capacity(top_k);
    for (i, &v) in logits.iter().enumerate() {
        if !v.is_finite() {
            continue;
        }
        if vals.len() == top_k && v <= vals[top_k - 1] {
            continue;
        }
        let mut j = if vals.len() < top_k {
            vals.push(v);
            ids.push(i as u32);
            vals.len() - 1
        } else {
            top_k - 1
        };
        while j > 0 && vals[j - 1] < v {
            vals[j] = vals[j - 1];
            ids[j] = ids[j - 1];
            j -= 1;
        }
        vals[j] = v;
        ids[j] = i as u32;
    }
    if ids.is_empty() {
        return argmax(logits);
    }
    let max_logit = vals[0];
    let probs: Vec<f32> = vals
        .iter()
        .map(|&v| ((v - max_logit) / temperature).exp())
        .collect();
    let sum: f32 = probs.iter().sum();
    if sum <= 0.0 || !sum.is_finite() {
        return ids[0];
    }
    let min_prob = (probs[0] / sum) * min_p;
    let mut filtered_sum = 0.0f32;
    let mut filtered = 0usize;
    for &pr in &probs {
        let pn = pr / sum;
        if filtered > 0 && pn < min_prob {
            break;
        }
        filtered_sum += pr;
        filtered += 1;
        if filtered_sum / sum >= top_p {
            break;
        }
    }
    let mut r = rng.next_f32() * filtered_sum;
    for i in 0..filtered {
        r -= probs[i];
        if r <= 0.0 {
            return ids[i];
        }
    }
    ids[filtered - 1]
}

fn sample_full_vocab(
    logits: &[f32],
    temperature: f32,
    top_p: f32,
    min_p: f32,
    rng: &mut Rng,
) -> u32 {
    let mut max_logit = f32::NEG_INFINITY;
    let mut best = 0u32;
    let mut finite = 0usize;
    for (i, &v) in logits.iter().enumerate() {
        if !v.is_finite() {
            continue;
        }
        finite += 1;
        if v > max_logit {
            max_logit = v;
            best = i as u32;
        }
    }
    if finite == 0 {
        return argmax(logits);
    }
    if top_p >= 1.0 {
        let prob = |v: f32| ((v - max_logit) / temperature).exp();
        let mut sum = 0.0f32;
        for &v in logits {
            if !v.is_finite() {
                continue;
            }
            let pr = prob(v);
            if pr < min_p {
                continue;
            }
            sum += pr;
        }
        if sum <= 0.0 || !sum.is_finite() {
            return best;
        }
        let mut r = rng.next_f32() * sum;
        for (i, &v) in logits.iter().enumerate() {
            if !v.is_finite() {
                continue;
            }
            let pr = prob(v);
            if pr < min_p {
                continue;
            }
            r -= pr;
            if r <= 0.0 {
                return i as u32;
            }
        }
        return best;
    }
    let mut cand: Vec<(u32, f32, f32)> = Vec::with_capacity(finite);
    let mut sum = 0.0f32;
    for (i, &v) in logits.iter().enumerate() {
        if !v.is_finite() {
            continue;
        }
        let pr = ((v - max_logit) / temperature).exp();
        cand.push((i as u32, v, pr));
        sum += pr;
    }
    if sum <= 0.0 || !sum.is_finite() {
        return best;
    }
    // Stable descending sort by logit (ties keep vocabulary order).
    cand.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal));
    let min_prob = (cand[0].2 / sum) * min_p;
    let mut filtered_sum = 0.0f32;
    let mut filtered = 0usize;
    for c in &cand {
        let pn = c.2 / sum;
        if filtered > 0 && pn < min_prob {
            break;
        }
        filtered_sum += c.2;
        filtered += 1;
        if filtered_sum / sum >= top_p {
            break;
        }
    }
    let mut r = rng.next_f32() * filtered_sum;
    for c in &cand[..filtered] {
        r -= c.2;
        if r <= 0.0 {
            return c.0;
        }
    }
    cand[filtered - 1].0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xorshift_matches_reference_formula() {
        // Independent computation with the published xorshift64* constants.
        let mut r = Rng::new(1);
        let mut x: u64 = 1;
        for _ in 0..5 {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            assert_eq!(r.next_u64(), x.wrapping_mul(2685821657736338717));
        }
        // Zero state is replaced by the golden-ratio constant.
        let mut z = Rng::new(0);
        let mut g = Rng::new(0x9E3779B97F4A7C15);
        assert_eq!(z.next_u64(), g.next_u64());
    }

    #[test]
    fn greedy_when_temperature_zero() {
        let logits = [0.1, 3.0, f32::NAN, 2.9];
        let p = SamplingParams {
            temperature: 0.0,
            ..Default::default()
        };
        assert_eq!(sample(&logits, &p, &mut Rng::new(7)), 1);
    }

    #[test]
    fn top_k_one_is_argmax() {
        let logits = [0.0, 1.0, 5.0, 4.0];
        let p = SamplingParams {
            temperature: 1.0,
            top_k: 1,
            min_p: 0.0,
            ..Default::default()
        };
        for s in 1..50 {
            assert_eq!(sample(&logits, &p, &mut Rng::new(s)), 2);
        }
    }

    #[test]
    fn min_p_excludes_unlikely_tokens() {
        // p(1)/p(0) = e^-10 < 0.05, so token 1 can never be drawn.
        let logits = [10.0, 0.0];
        let p = SamplingParams {
            temperature: 1.0,
            min_p: 0.05,
            ..Default::default()
        };
        for s in 1..2000 {
            assert_eq!(sample(&logits, &p, &mut Rng::new(s)), 0);
        }
    }

    #[test]
    fn distribution_follows_softmax() {
        // Two tokens with probabilities 0.75 / 0.25 (logit diff ln 3), min_p off.
        let logits = [3f32.ln(), 0.0];
        for top_k in [0, 2] {
            let p = SamplingParams {
                temperature: 1.0,
                top_p: 1.0,
                top_k,
                min_p: 0.0,
                seed: None,
            };
            let mut rng = Rng::new(12345);
            let n = 40_000;
            let zeros = (0..n)
                .filter(|_| sample(&logits, &p, &mut rng) == 0)
                .count();
            let frac = zeros as f64 / n as f64;
            // 4.5 sigma of a binomial(40000, 0.75) is 0.0098.
            assert!((frac - 0.75).abs() < 0.0098, "top_k={top_k} frac={frac}");
        }
    }

    #[test]
    fn top_p_truncates_tail() {
        // probs 0.5, 0.3, 0.2: top_p 0.6 keeps the first two only.
        let logits = [0.5f32.ln(), 0.3f32.ln(), 0.2f32.ln()];
        for top_k in [0, 3] {
            let p = SamplingParams {
                temperature: 1.0,
                top_p: 0.6,
                top_k,
                min_p: 0.0,
                seed: None,
            };
            let mut rng = Rng::new(99);
            let mut counts = [0usize; 3];
            for _ in 0..20_000 {
                counts[sample(&logits, &p, &mut rng) as usize] += 1;
            }
            assert_eq!(counts[2], 0);
            let frac0 = counts[0] as f64 / 20_000.0; // expected 0.5/0.8 = 0.625
            assert!((frac0 - 0.625).abs() < 0.016, "{counts:?}");
        }
    }

    #[test]
    fn seeded_sampling_is_reproducible() {
        let logits: Vec<f32> = (0..100).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let p = SamplingParams::default();
        let a: Vec<u32> = {
            let mut r = Rng::new(42);
            (0..20).map(|_| sample(&logits, &p, &mut r)).collect()
        };
        let b: Vec<u32> = {
            let mut r = Rng::new(42);
            (0..20).map(|_| sample(&logits, &p, &mut r)).collect()
        };
        assert_eq!(a, b);
    }
}
