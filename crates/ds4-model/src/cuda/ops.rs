//! Norms, RoPE, the KV roundings, Hyper-Connections and routing of the
//! CUDA backend.

use super::*;

/// The RoPE kernels' position arguments `(device positions, start, step)`
/// for `rows` rows.
fn rope_pos_args(pos: RopePos<'_, '_, Cuda>, rows: usize) -> Result<(u64, usize, usize)> {
    Ok(match pos {
        RopePos::Tokens(p) => {
            ensure!(
                p.host.len() == rows,
                "RoPE: {} positions for {rows} rows",
                p.host.len()
            );
            (p.dev.m.ptr, 0, 0)
        }
        RopePos::Arith { start, step } => (0, start, step),
    })
}

impl Cuda {
    pub(super) fn rms_norm_op(
        &self,
        x: &mut CudaBuf,
        width: usize,
        w: Option<&CudaBuf>,
        eps: f32,
    ) -> Result<()> {
        let rows = x.n / width.max(1);
        let mut a = Args::new();
        a.p(x.m.ptr)
            .p(x.m.ptr)
            .i(width as i32)
            .p(w.map_or(0, |b| b.m.ptr))
            .f(eps);
        let bs = if width >= 1024 { 1024 } else { 256 };
        self.launch("rms_norm", (rows as u32, 1, 1), bs, 0, &mut a)
    }

    pub(super) fn rope_op(
        &self,
        x: &mut CudaBuf,
        heads: usize,
        head_dim: usize,
        pos: RopePos<'_, '_, Self>,
        table: &CudaRope,
        inverse: bool,
        precise: bool,
    ) -> Result<()> {
        let rows = x.n / (heads * head_dim).max(1);
        let (dpos, start, step) = rope_pos_args(pos, rows)?;
        let mut a = Args::new();
        a.p(x.m.ptr)
            .i(rows as i32)
            .i(heads as i32)
            .i(head_dim as i32)
            .i(table.npairs as i32)
            .p(dpos)
            .i(start as i32)
            .i(step as i32)
            .p(table.inv32.ptr)
            .p(table.inv64.ptr)
            .i(inverse as i32)
            .i(precise as i32);
        self.launch(
            "rope",
            (blocks(rows * heads * table.npairs, 256), 1, 1),
            256,
            0,
            &mut a,
        )
    }

    pub(super) fn norm_rope_op(
        &self,
        x: &mut CudaBuf,
        heads: usize,
        head_dim: usize,
        w: Option<&CudaBuf>,
        eps: f32,
        pos: RopePos<'_, '_, Self>,
        table: &CudaRope,
        precise: bool,
        kv_round: Option<usize>,
    ) -> Result<()> {
        let per = head_dim / 32;
        let fused = head_dim.is_multiple_of(64)
            && per <= 16
            && 64 % per == 0
            && table.npairs <= 64
            && 2 * table.npairs <= head_dim
            && kv_round.is_none_or(|n| n.is_multiple_of(64) && n <= head_dim);
        if !fused {
            let ops = crate::backend::norm_rope_ops;
            return ops(
                self, x, heads, head_dim, w, eps, pos, table, precise, kv_round,
            );
        }
        let nheads = x.n / head_dim;
        let rows = nheads / heads.max(1);
        ensure!(
            rows * heads == nheads,
            "norm_rope: {nheads} heads in rows of {heads}"
        );
        let (dpos, start, step) = rope_pos_args(pos, rows)?;
        let mut a = Args::new();
        a.p(x.m.ptr)
            .i(nheads as i32)
            .i(heads as i32)
            .i(head_dim as i32)
            .p(w.map_or(0, |b| b.m.ptr))
            .f(eps)
            .i(table.npairs as i32)
            .p(dpos)
            .i(start as i32)
            .i(step as i32)
            .p(table.inv32.ptr)
            .p(table.inv64.ptr)
            .i(precise as i32)
            .i(kv_round.unwrap_or(0) as i32);
        self.launch("norm_rope", (blocks(nheads, 4), 1, 1), 128, 0, &mut a)
    }

    pub(super) fn fp8_sim_op(&self, x: &mut CudaBuf, width: usize, nope: usize) -> Result<()> {
        let rows = x.n / width.max(1);
        let mut a = Args::new();
        a.p(x.m.ptr).i(rows as i32).i(width as i32).i(nope as i32);
        self.launch(
            "fp8_sim",
            (blocks(rows * (nope / 64) * 32, 128), 1, 1),
            128,
            0,
            &mut a,
        )
    }

    pub(super) fn f16_round_op(&self, x: &mut CudaBuf) -> Result<()> {
        let mut a = Args::new();
        a.p(x.m.ptr).l(x.n as i64);
        self.launch("f16_round", (blocks(x.n, 256), 1, 1), 256, 0, &mut a)
    }

    pub(super) fn hadamard_fp4_op(&self, x: &mut CudaBuf, width: usize) -> Result<()> {
        ensure!(
            width.is_power_of_two() && (32..=1024).contains(&width),
            "Hadamard width {width}"
        );
        let rows = x.n / width;
        let scale = (1.0 / (width as f64).sqrt()) as f32;
        let mut a = Args::new();
        a.p(x.m.ptr).i(width as i32).f(scale);
        self.launch(
            "hadamard_fp4",
            (rows as u32, 1, 1),
            width as u32,
            (width * 4) as u32,
            &mut a,
        )
    }

    pub(super) fn hc_pre_op(
        &self,
        x: &CudaBuf,
        rows: usize,
        cfg: &Config,
        fn_: &CudaMat,
        base: &CudaBuf,
        scale: &CudaBuf,
    ) -> Result<(CudaBuf, CudaBuf, CudaBuf)> {
        self.hc_pre_fused(x, rows, cfg, fn_, base, scale, None)
    }

    pub(super) fn hc_pre_norm_op(
        &self,
        x: &CudaBuf,
        rows: usize,
        cfg: &Config,
        fn_: &CudaMat,
        base: &CudaBuf,
        scale: &CudaBuf,
        w: &CudaBuf,
    ) -> Result<(CudaBuf, CudaBuf, CudaBuf)> {
        self.hc_pre_fused(x, rows, cfg, fn_, base, scale, Some(w))
    }

    pub(super) fn hc_post_op(
        &self,
        x: &mut CudaBuf,
        o: &CudaBuf,
        post: &CudaBuf,
        comb: &CudaBuf,
        cfg: &Config,
    ) -> Result<()> {
        let (n, d) = (cfg.n_hc, cfg.dim);
        let rows = x.n / (n * d);
        let mut a = Args::new();
        a.p(x.m.ptr)
            .p(o.m.ptr)
            .p(post.m.ptr)
            .p(comb.m.ptr)
            .i(n as i32)
            .i(d as i32)
            .i(rows as i32);
        self.launch("hc_post", (blocks(rows * d, 256), 1, 1), 256, 0, &mut a)
    }

    pub(super) fn hc_head_op(
        &self,
        x: &CudaBuf,
        rows: usize,
        cfg: &Config,
        fn_: &CudaMat,
        base: &CudaBuf,
        scale: &CudaBuf,
    ) -> Result<CudaBuf> {
        let (n, d) = (cfg.n_hc, cfg.dim);
        let normed = self.rms_to(x, n * d, cfg.rms_eps)?;
        let mix = self.matmul(fn_, &normed, rows)?;
        let y = self.buf(rows * d)?;
        let mut a = Args::new();
        a.p(mix.m.ptr)
            .p(base.m.ptr)
            .p(scale.m.ptr)
            .p(x.m.ptr)
            .i(n as i32)
            .i(d as i32)
            .f(cfg.hc_eps)
            .p(y.m.ptr);
        self.launch("hc_head_finish", (rows as u32, 1, 1), 256, 0, &mut a)?;
        Ok(y)
    }

    pub(super) fn route_op(
        &self,
        logits: &CudaBuf,
        rows: usize,
        n_exp: usize,
        k: usize,
        bias: Option<&CudaBuf>,
        hash: Option<HashRoute<'_, Self>>,
        scale: f32,
    ) -> Result<Routing<Self>> {
        ensure!(logits.n == rows * n_exp, "router logits size");
        ensure!(
            n_exp <= 1024 && k <= 16,
            "router of {n_exp} experts, {k} used"
        );
        let ids = self.idx(rows * k)?;
        let weights = self.buf(rows * k)?;
        let (table, tokens) = match &hash {
            Some(h) => (h.table.m.ptr, h.tokens.m.ptr),
            None => (0, 0),
        };
        let mut a = Args::new();
        a.p(logits.m.ptr)
            .i(rows as i32)
            .i(n_exp as i32)
            .i(k as i32)
            .p(bias.map_or(0, |b| b.m.ptr))
            .p(table)
            .p(tokens)
            .f(scale)
            .p(ids.m.ptr)
            .p(weights.m.ptr);
        self.launch("route", (blocks(rows, 4), 1, 1), 128, 0, &mut a)?;
        Ok(Routing { k, ids, weights })
    }

    /// `hc_pre` (and with `w` the RMSNorm of y): the mix of the raw state
    /// (decode) or of the normed one (GEMM path), then `hc_pre_finish` (norm
    /// scalar, Sinkhorn, y, y's norm).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn hc_pre_fused(
        &self,
        x: &CudaBuf,
        rows: usize,
        cfg: &Config,
        fn_: &CudaMat,
        base: &CudaBuf,
        scale: &CudaBuf,
        w: Option<&CudaBuf>,
    ) -> Result<(CudaBuf, CudaBuf, CudaBuf)> {
        let (n, d) = (cfg.n_hc, cfg.dim);
        ensure!(n <= 14 && x.n == rows * n * d, "HC state of {} values", x.n);
        // the f16-operand GEMM path takes the normed state (the raw one may
        // overflow f16); the f32 matvecs take the raw state
        let mix_raw = self.use_gemm(rows).is_none();
        let (mix, ss) = match mix_raw {
            true => match self.matmul_with_ss(fn_, x, rows)? {
                Some((m, ss)) => (m, Some(ss)),
                None => (self.matmul(fn_, x, rows)?, None),
            },
            false => (
                self.matmul(fn_, &self.rms_to(x, n * d, cfg.rms_eps)?, rows)?,
                None,
            ),
        };
        let y = self.buf(rows * d)?;
        let post = self.buf(rows * n)?;
        let comb = self.buf(rows * n * n)?;
        let mut a = Args::new();
        a.p(mix.m.ptr)
            .p(base.m.ptr)
            .p(scale.m.ptr)
            .p(x.m.ptr)
            .i(n as i32)
            .i(d as i32)
            .i(cfg.sinkhorn_iters as i32)
            .f(cfg.hc_eps)
            .f(cfg.rms_eps)
            .i(mix_raw as i32)
            .p(ss.as_ref().map_or(0, |b| b.m.ptr))
            .i(w.is_some() as i32)
            .p(w.map_or(0, |b| b.m.ptr))
            .p(y.m.ptr)
            .p(post.m.ptr)
            .p(comb.m.ptr);
        self.launch("hc_pre_finish", (rows as u32, 1, 1), 1024, 0, &mut a)?;
        Ok((y, post, comb))
    }
}
