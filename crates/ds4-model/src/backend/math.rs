//! Scalar math shared by the CPU backend and the reference tests: RMSNorm of
//! a row, the activations, the mHC weights with Sinkhorn, top-k, SwiGLU.

pub(crate) fn rms_row(x: &mut [f32], w: Option<&[f32]>, eps: f32) {
    let ss: f64 = x.iter().map(|&v| v as f64 * v as f64).sum();
    let r = 1.0 / ((ss / x.len() as f64) as f32 + eps).sqrt();
    match w {
        Some(w) => x.iter_mut().zip(w).for_each(|(v, &g)| *v = *v * r * g),
        None => x.iter_mut().for_each(|v| *v *= r),
    }
}

#[inline]
pub(crate) fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

#[inline]
pub(crate) fn softplus(z: f32) -> f32 {
    if z > 20.0 {
        z
    } else if z < -20.0 {
        z.exp()
    } else {
        z.exp().ln_1p()
    }
}

#[inline]
pub(crate) fn silu(z: f32) -> f32 {
    z / (1.0 + (-z).exp())
}

/// `hc_pre` mixing of one token: returns `(pre, post, comb)` (spec §2.2).
pub fn hc_weights(
    mix: &[f32],
    base: &[f32],
    scale: &[f32],
    n: usize,
    iters: usize,
    eps: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let pre: Vec<f32> = (0..n)
        .map(|s| sigmoid(mix[s] * scale[0] + base[s]) + eps)
        .collect();
    let post: Vec<f32> = (0..n)
        .map(|s| 2.0 * sigmoid(mix[n + s] * scale[1] + base[n + s]))
        .collect();
    let mut c: Vec<f32> = (0..n * n)
        .map(|i| mix[2 * n + i] * scale[2] + base[2 * n + i])
        .collect();
    sinkhorn(&mut c, n, iters, eps);
    (pre, post, c)
}

/// Sinkhorn-Knopp in the spec order: row softmax, +eps, column norm, then
/// `iters-1` × (row norm, column norm). `c` is row-major `n×n`.
pub fn sinkhorn(c: &mut [f32], n: usize, iters: usize, eps: f32) {
    for j in 0..n {
        let row = &mut c[j * n..(j + 1) * n];
        let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let mut s = 0f32;
        for v in row.iter_mut() {
            *v = (*v - m).exp();
            s += *v;
        }
        for v in row.iter_mut() {
            *v = *v / s + eps;
        }
    }
    let col_norm = |c: &mut [f32]| {
        for k in 0..n {
            let s: f32 = (0..n).map(|j| c[j * n + k]).sum();
            for j in 0..n {
                c[j * n + k] /= s + eps;
            }
        }
    };
    col_norm(c);
    for _ in 1..iters {
        for j in 0..n {
            let row = &mut c[j * n..(j + 1) * n];
            let s: f32 = row.iter().sum();
            row.iter_mut().for_each(|v| *v /= s + eps);
        }
        col_norm(c);
    }
}

/// Indices of the `k` largest values, ties to the lower index, in descending order.
pub fn topk_desc(v: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| {
        v[b].partial_cmp(&v[a])
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(&b))
    });
    idx.truncate(k);
    idx
}

pub(crate) fn swiglu_inplace(g: &mut [f32], u: &[f32], limit: f32, w: f32) {
    for (gv, &uv) in g.iter_mut().zip(u) {
        let gc = gv.min(limit);
        let uc = uv.clamp(-limit, limit);
        *gv = w * (silu(gc) * uc);
    }
}
