//! The backend trait the forward pass is written against.
//!
//! Design (one API for the CPU, CUDA, continuous batching and MTP verify):
//!
//! * Buffers (`Buf`: f32 values, `Idx`: i32 values, `Kv`: rows of KV state)
//!   and bound weights (`Mat`) are opaque device handles. Nothing returns to
//!   the host inside a forward pass except what the caller downloads: routing
//!   (`Routing` holds device buffers), the indexer's top-k selection (an `Idx`)
//!   and attention visibility (computed inside the attention op from the
//!   positions) all stay on the device.
//! * Every op is fallible (`Result`): a device error is an error, never a panic.
//! * A forward call runs a batch of tokens that may belong to several
//!   independent sequences. Whole-batch ops (projections, norms, HC, MoE) see
//!   all rows; per-sequence ops (compressors, indexer, attention, KV writes)
//!   take a [`Seq`]: the sequence's row range in the batch and its first
//!   position. Positions within one sequence's chunk are consecutive.
//! * KV state is preallocated per session at its context size (`kv_alloc`):
//!   the raw window is a ring of `window` rows indexed by position, the
//!   compressed and indexer rows are fixed-capacity arrays, the compressor
//!   frontier is a ring of the last `ratio` (HCA) or `2·ratio` (CSA) token rows
//!   indexed by position. Ops write into these stores in place.
//! * The host passes only scalars, and positions once per forward call (as a
//!   device `Idx` plus the host copy that the CPU uses).

pub mod cpu;
pub mod math;
pub mod rope;
pub mod simd;

use crate::weights::TensorData;
use anyhow::Result;

pub use cpu::{Cpu, CpuMat};
pub use math::{hc_weights, sinkhorn, topk_desc};
pub use rope::RopeTable;

/// Token positions of a forward call: the host copy and the device copy.
pub struct Pos<'a, B: Backend> {
    pub host: &'a [usize],
    pub dev: &'a B::Idx,
}

/// Positions for a RoPE call: per token of the batch, or an arithmetic run
/// (compressed rows: `start, start+step, …`, one per row).
pub enum RopePos<'a, 'b, B: Backend> {
    Tokens(&'b Pos<'a, B>),
    Arith { start: usize, step: usize },
}

/// One sequence's part of a batch: rows `row0 .. row0+n` of the batch
/// buffers, at positions `p0 .. p0+n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seq {
    pub row0: usize,
    pub n: usize,
    pub p0: usize,
}

/// Compressor geometry (spec §3.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompGeom {
    pub ratio: usize,
    /// Output row width (512 main / 128 indexer in the full model).
    pub width: usize,
    /// CSA overlapping windows (input rows are `2*width` wide, A and B lanes).
    pub overlap: bool,
}

impl CompGeom {
    /// Width of one token's kv / score input row.
    pub fn in_width(&self) -> usize {
        if self.overlap {
            2 * self.width
        } else {
            self.width
        }
    }
    /// Rows of the frontier ring (token rows indexed by position mod this).
    pub fn ring_rows(&self) -> usize {
        if self.overlap {
            2 * self.ratio
        } else {
            self.ratio
        }
    }
    /// `(first window, count)` of the windows that end inside `seq`.
    pub fn emitted(&self, seq: Seq) -> (usize, usize) {
        let r = self.ratio;
        (seq.p0 / r, (seq.p0 + seq.n) / r - seq.p0 / r)
    }
}

/// Which compressed rows a query may read (spec §3.8).
pub enum CompVis<'a, B: Backend> {
    /// SWA layer: raw rows only.
    None,
    /// Rows `0 .. (p+1)/ratio` (HCA; CSA while the indexer selects all).
    All { ratio: usize },
    /// CSA with the indexer: `k` row ids per token of the sequence (ascending,
    /// `-1` for none).
    Selected { sel: &'a B::Idx, k: usize },
}

/// Routing decision of a batch, on the device: `k` expert ids and weights per token.
pub struct Routing<B: Backend> {
    pub k: usize,
    pub ids: B::Idx,
    pub weights: B::Buf,
}

/// Hash routing: the `tid2eid` table (`k` ids per vocabulary entry) and the
/// batch's token ids.
pub struct HashRoute<'a, B: Backend> {
    pub table: &'a B::Idx,
    pub tokens: &'a B::Idx,
}

/// [`Backend::norm_rope`] as its separate ops (the default, and a fusing
/// backend's fallback for shapes its kernel does not take).
#[allow(clippy::too_many_arguments)]
pub fn norm_rope_ops<B: Backend>(
    be: &B,
    x: &mut B::Buf,
    heads: usize,
    head_dim: usize,
    w: Option<&B::Buf>,
    eps: f32,
    pos: RopePos<'_, '_, B>,
    table: &B::Rope,
    precise: bool,
    kv_round: Option<usize>,
) -> Result<()> {
    be.rms_norm(x, head_dim, w, eps)?;
    be.rope(x, heads, head_dim, pos, table, false, precise)?;
    if let Some(nope) = kv_round {
        be.fp8_sim(x, head_dim, nope)?;
        be.f16_round(x)?;
    }
    Ok(())
}

/// Whole-op device interface.
pub trait Backend: Send + Sync + Sized {
    /// f32 values.
    type Buf: Send + Sync;
    /// i32 values.
    type Idx: Send + Sync;
    /// Rows of KV state of a fixed width (f32 on the CPU; f16 or f32 on a device).
    type Kv: Send + Sync;
    /// A bound weight matrix (or a stack of expert matrices).
    type Mat: Send + Sync;
    /// A RoPE frequency table on the device.
    type Rope: Send + Sync;

    fn name(&self) -> String;
    /// Device memory free for weights and state, where the backend has its
    /// own memory (`None`: host memory, checked by the caller).
    fn mem_free(&self) -> Option<usize> {
        None
    }
    /// Device time per kernel since the last call, `(name, launches, ms)`,
    /// when the backend profiles (CUDA with `DS4_CUDA_PROFILE` set).
    fn profile_report(&self) -> Vec<(String, usize, f64)> {
        Vec::new()
    }

    // --- binding and transfers -------------------------------------------
    /// Bind a weight tensor (CPU: zero copy; a GPU uploads it).
    fn bind(&self, t: &TensorData) -> Result<Self::Mat>;
    /// Bind a small vector (norm weights, biases), decoded to f32.
    fn bind_vec(&self, t: &TensorData) -> Result<Self::Buf>;
    /// Bind an I32 tensor (the hash-routing table).
    fn bind_idx(&self, t: &TensorData) -> Result<Self::Idx>;
    fn bind_rope(&self, t: &RopeTable) -> Result<Self::Rope>;
    fn upload(&self, x: &[f32]) -> Result<Self::Buf>;
    fn upload_idx(&self, x: &[i32]) -> Result<Self::Idx>;
    fn download(&self, b: &Self::Buf) -> Result<Vec<f32>>;
    fn download_idx(&self, b: &Self::Idx) -> Result<Vec<i32>>;
    fn zeros(&self, n: usize) -> Result<Self::Buf>;
    /// A buffer of `n` values that the caller overwrites entirely before
    /// reading (contents unspecified; the default zeroes them).
    fn scratch(&self, n: usize) -> Result<Self::Buf> {
        self.zeros(n)
    }
    fn len(&self, b: &Self::Buf) -> usize;
    fn buf_bytes(&self, b: &Self::Buf) -> usize;
    /// Rows `start..start+n` of a `width`-row buffer, copied.
    fn slice_rows(&self, b: &Self::Buf, width: usize, start: usize, n: usize) -> Result<Self::Buf>;
    /// The listed rows of a `width`-row buffer, copied, in order.
    fn gather_rows(&self, b: &Self::Buf, width: usize, rows: &[usize]) -> Result<Self::Buf>;
    /// Wait for all queued work (a no-op on the CPU).
    fn sync(&self) -> Result<()>;

    // --- KV stores ----------------------------------------------------------
    /// A zeroed store of `rows` rows of `width` values; `half` asks for f16
    /// storage where the backend supports it (values are f16-rounded first).
    fn kv_alloc(&self, rows: usize, width: usize, half: bool) -> Result<Self::Kv>;
    fn kv_bytes(&self, k: &Self::Kv) -> usize;
    /// Deep copy of a store.
    fn kv_clone(&self, k: &Self::Kv) -> Result<Self::Kv>;
    fn buf_clone(&self, b: &Self::Buf) -> Result<Self::Buf>;
    /// Write `n` rows of `src` (from row `src_row`) into `dst` at rows
    /// `dst_row..`; with `ring` the row index wraps modulo the store's rows.
    fn kv_write(
        &self,
        dst: &mut Self::Kv,
        dst_row: usize,
        src: &Self::Buf,
        src_row: usize,
        n: usize,
        ring: bool,
    ) -> Result<()>;
    /// Rows `row..row+n` of a store as f32 (tests, snapshots).
    fn kv_read(&self, k: &Self::Kv, row: usize, n: usize) -> Result<Vec<f32>>;

    // --- whole-batch ops ------------------------------------------------------
    /// Rows `ids` of an embedding matrix, replicated into `n_hc` streams:
    /// `[T, n_hc, dim]`; `host_ids` is the same list on the host (range checks).
    fn embed_hc(
        &self,
        table: &Self::Mat,
        ids: &Self::Idx,
        host_ids: &[u32],
        n_hc: usize,
    ) -> Result<Self::Buf>;
    /// `y[t] = W x[t]` for `rows` tokens; `x` holds `rows * cols`.
    fn matmul(&self, w: &Self::Mat, x: &Self::Buf, rows: usize) -> Result<Self::Buf>;
    /// [`Backend::matmul`] of each matrix on the same input (a backend may
    /// run them together).
    fn matmul_many(&self, ws: &[&Self::Mat], x: &Self::Buf, rows: usize) -> Result<Vec<Self::Buf>> {
        ws.iter().map(|w| self.matmul(w, x, rows)).collect()
    }
    /// Grouped projection: `W` has `groups * out_g` rows of `cols`; group `g`
    /// of token `t` multiplies `x[t][g*cols..]` by rows `g*out_g..`.
    fn matmul_grouped(
        &self,
        w: &Self::Mat,
        x: &Self::Buf,
        rows: usize,
        groups: usize,
    ) -> Result<Self::Buf>;
    /// RMSNorm of each `width` row in place; `w = None` is unweighted.
    fn rms_norm(
        &self,
        x: &mut Self::Buf,
        width: usize,
        w: Option<&Self::Buf>,
        eps: f32,
    ) -> Result<()>;
    /// RoPE (or its inverse) on the last `rope_dim` dims of every `head_dim`
    /// head, `heads` heads per row.
    #[allow(clippy::too_many_arguments)]
    fn rope(
        &self,
        x: &mut Self::Buf,
        heads: usize,
        head_dim: usize,
        pos: RopePos<'_, '_, Self>,
        table: &Self::Rope,
        inverse: bool,
        precise: bool,
    ) -> Result<()>;
    /// Per-head RMSNorm (`w = None`: unweighted) then forward RoPE of every
    /// `head_dim` head (`heads` per row) and, with `kv_round = Some(nope)`,
    /// the KV store's FP8 round trip of dims `0..nope` and f16 rounding: the
    /// ops in that order, which a backend may fuse.
    #[allow(clippy::too_many_arguments)]
    fn norm_rope(
        &self,
        x: &mut Self::Buf,
        heads: usize,
        head_dim: usize,
        w: Option<&Self::Buf>,
        eps: f32,
        pos: RopePos<'_, '_, Self>,
        table: &Self::Rope,
        precise: bool,
        kv_round: Option<usize>,
    ) -> Result<()> {
        norm_rope_ops(
            self, x, heads, head_dim, w, eps, pos, table, precise, kv_round,
        )
    }
    /// FP8 round trip of dims `0..nope` of every `width` row.
    fn fp8_sim(&self, x: &mut Self::Buf, width: usize, nope: usize) -> Result<()>;
    /// f16 rounding of every element.
    fn f16_round(&self, x: &mut Self::Buf) -> Result<()>;
    /// Hadamard transform + FP4 round trip of every `width` row.
    fn hadamard_fp4(&self, x: &mut Self::Buf, width: usize) -> Result<()>;
    /// `(y, post, comb)` of `hc_pre` for `rows` tokens (spec §2.2).
    #[allow(clippy::too_many_arguments)]
    fn hc_pre(
        &self,
        x: &Self::Buf,
        rows: usize,
        cfg: &crate::config::Config,
        fn_: &Self::Mat,
        base: &Self::Buf,
        scale: &Self::Buf,
    ) -> Result<(Self::Buf, Self::Buf, Self::Buf)>;
    /// [`Backend::hc_pre`], then the RMSNorm of y with weight `w` (a backend may fuse them).
    #[allow(clippy::too_many_arguments)]
    fn hc_pre_norm(
        &self,
        x: &Self::Buf,
        rows: usize,
        cfg: &crate::config::Config,
        fn_: &Self::Mat,
        base: &Self::Buf,
        scale: &Self::Buf,
        w: &Self::Buf,
    ) -> Result<(Self::Buf, Self::Buf, Self::Buf)> {
        let (mut y, post, comb) = self.hc_pre(x, rows, cfg, fn_, base, scale)?;
        self.rms_norm(&mut y, cfg.dim, Some(w), cfg.rms_eps)?;
        Ok((y, post, comb))
    }
    /// `X <- post ⊗ o + Cᵀ X` (spec §2.3).
    fn hc_post(
        &self,
        x: &mut Self::Buf,
        o: &Self::Buf,
        post: &Self::Buf,
        comb: &Self::Buf,
        cfg: &crate::config::Config,
    ) -> Result<()>;
    /// Output HC head (spec §2.5).
    fn hc_head(
        &self,
        x: &Self::Buf,
        rows: usize,
        cfg: &crate::config::Config,
        fn_: &Self::Mat,
        base: &Self::Buf,
        scale: &Self::Buf,
    ) -> Result<Self::Buf>;
    /// `a += b`.
    fn add(&self, a: &mut Self::Buf, b: &Self::Buf) -> Result<()>;
    /// Every `len(row)`-wide row of `a` gets `row` added.
    fn add_row_broadcast(&self, a: &mut Self::Buf, row: &Self::Buf) -> Result<()>;
    /// `a *= s`.
    fn scale(&self, a: &mut Self::Buf, s: f32) -> Result<()>;
    /// `x[t] += table[pos[t] mod table_rows]` per `width` row.
    fn add_position_rows(
        &self,
        x: &mut Self::Buf,
        width: usize,
        table: &Self::Buf,
        pos: &Pos<'_, Self>,
    ) -> Result<()>;
    /// Router: sqrt(softplus) scores; selection by hash ids or top-k of
    /// score+bias (ties to the lower index); weights `scale * σ / Σσ`.
    #[allow(clippy::too_many_arguments)]
    fn route(
        &self,
        logits: &Self::Buf,
        rows: usize,
        n_exp: usize,
        k: usize,
        bias: Option<&Self::Buf>,
        hash: Option<HashRoute<'_, Self>>,
        scale: f32,
    ) -> Result<Routing<Self>>;
    /// Routed experts: `Σ_i W2_e (w_i · swiglu(W1_e x, W3_e x))` per token.
    #[allow(clippy::too_many_arguments)]
    fn moe(
        &self,
        x: &Self::Buf,
        rows: usize,
        routing: &Routing<Self>,
        gate: &Self::Mat,
        up: &Self::Mat,
        down: &Self::Mat,
        limit: f32,
    ) -> Result<Self::Buf>;
    /// [`Backend::moe`] plus `add` (the shared expert's output), which a
    /// backend may fuse into its slot sum.
    #[allow(clippy::too_many_arguments)]
    fn moe_plus(
        &self,
        x: &Self::Buf,
        rows: usize,
        routing: &Routing<Self>,
        gate: &Self::Mat,
        up: &Self::Mat,
        down: &Self::Mat,
        limit: f32,
        add: &Self::Buf,
    ) -> Result<Self::Buf> {
        let mut out = self.moe(x, rows, routing, gate, up, down, limit)?;
        self.add(&mut out, add)?;
        Ok(out)
    }
    /// Dense SwiGLU FFN with clamp (shared expert).
    #[allow(clippy::too_many_arguments)]
    fn swiglu_ffn(
        &self,
        x: &Self::Buf,
        rows: usize,
        gate: &Self::Mat,
        up: &Self::Mat,
        down: &Self::Mat,
        limit: f32,
    ) -> Result<Self::Buf>;
    /// Index of the largest value of each `width` row (ties to the lower index).
    fn argmax(&self, x: &Self::Buf, width: usize) -> Result<Vec<u32>>;

    // --- per-sequence ops -----------------------------------------------------
    /// Feed the sequence's kv / score rows (`g.in_width()` wide, rows
    /// `seq.row0..` of the batch buffers, score already holding the ape
    /// rows) into the frontier ring and pool every window that ends inside
    /// the chunk: returns the `(un-normalised) [count, width]` pooled rows of
    /// the windows `g.emitted(seq)`, or `None` when none ends.
    #[allow(clippy::too_many_arguments)]
    fn compress(
        &self,
        ring_kv: &mut Self::Buf,
        ring_score: &mut Self::Buf,
        kv: &Self::Buf,
        score: &Self::Buf,
        seq: Seq,
        g: CompGeom,
    ) -> Result<Option<Self::Buf>>;
    /// Indexer top-k for the sequence's queries: scores
    /// `Σ_h w_h relu(q_h·k_r)` over rows `r < min((p+1)/4, n_rows)` of `rows`,
    /// the `k` best ids per token (ties to the lower id), ascending, `-1`
    /// padded: `[seq.n, k]`.
    #[allow(clippy::too_many_arguments)]
    fn indexer_topk(
        &self,
        q: &Self::Buf,
        w: &Self::Buf,
        rows: &Self::Kv,
        n_rows: usize,
        seq: Seq,
        heads: usize,
        dim: usize,
        k: usize,
    ) -> Result<Self::Idx>;
    /// Attention with sink for the sequence's queries (spec §3.8): raw rows
    /// `max(0,p-window+1)..=p` (positions before `seq.p0` from the ring
    /// `raw`, the others from the chunk's `kv` rows), then the visible
    /// compressed rows of `comp`. Writes rows `seq.row0..` of `out`.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        out: &mut Self::Buf,
        q: &Self::Buf,
        kv: &Self::Buf,
        raw: &Self::Kv,
        comp: Option<&Self::Kv>,
        vis: CompVis<'_, Self>,
        seq: Seq,
        window: usize,
        heads: usize,
        head_dim: usize,
        sinks: &Self::Buf,
        scale: f32,
    ) -> Result<()>;
}
