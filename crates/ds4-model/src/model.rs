//! Weights bound to a backend, session state and the forward pass
//! (spec/model.md §2–§7).

use crate::backend::{Backend, CompFrontier, RopeTable, Visibility};
use crate::config::{AttnKind, Config};
use crate::weights::{expect, TensorData, TensorSource};
use anyhow::{bail, Context, Result};
use ds4_quant::GgmlType;

/// Numerics of a session (spec §8, §9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Numerics {
    /// f32 everywhere, no quantisation simulation (what the transformers oracle computes).
    Exact,
    /// FP8 KV round trip, f16 KV storage, Hadamard + FP4 indexer round trip,
    /// f64 RoPE angles (ds4.c / DeepSeek reference numerics).
    #[default]
    Official,
}

impl std::str::FromStr for Numerics {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Numerics> {
        match s {
            "exact" => Ok(Numerics::Exact),
            "official" => Ok(Numerics::Official),
            other => bail!("unknown numerics mode {other:?} (expected exact or official)"),
        }
    }
}

struct HcW<B: Backend> {
    fn_: B::Mat,
    base: B::Buf,
    scale: B::Buf,
}

struct CompW<B: Backend> {
    kv: B::Mat,
    gate: B::Mat,
    ape: B::Buf,
    norm: B::Buf,
    ratio: usize,
    width: usize,
    overlap: bool,
}

struct IdxW<B: Backend> {
    q_b: B::Mat,
    proj: B::Mat,
    comp: CompW<B>,
}

struct Block<B: Backend> {
    kind: AttnKind,
    limit: f32,
    hc_attn: HcW<B>,
    attn_norm: B::Buf,
    q_a: B::Mat,
    q_a_norm: B::Buf,
    q_b: B::Mat,
    kv: B::Mat,
    kv_norm: B::Buf,
    sinks: B::Buf,
    o_a: B::Mat,
    o_b: B::Mat,
    comp: Option<CompW<B>>,
    idx: Option<IdxW<B>>,
    hc_ffn: HcW<B>,
    ffn_norm: B::Buf,
    router: B::Mat,
    bias: Option<B::Buf>,
    tid2eid: Option<TensorData>,
    gate_exps: B::Mat,
    up_exps: B::Mat,
    down_exps: B::Mat,
    gate_sh: B::Mat,
    up_sh: B::Mat,
    down_sh: B::Mat,
}

struct Mtp<B: Backend> {
    e_proj: B::Mat,
    h_proj: B::Mat,
    enorm: B::Buf,
    hnorm: B::Buf,
    norm: B::Buf,
    head: HcW<B>,
    block: Block<B>,
}

/// A model bound to a backend.
pub struct Model<B: Backend> {
    pub cfg: Config,
    pub be: B,
    embed: B::Mat,
    blocks: Vec<Block<B>>,
    out_hc: HcW<B>,
    out_norm: B::Buf,
    head: B::Mat,
    mtp: Option<Mtp<B>>,
    rope_main: RopeTable,
    rope_comp: RopeTable,
}

/// Compressor state of one compressor: frontier plus its emitted rows.
pub struct CompState<B: Backend> {
    front: CompFrontier<B>,
    rows: B::Buf,
    n: usize,
}

/// Per-layer incremental state (spec §7.1).
pub struct LayerState<B: Backend> {
    /// Last `min(n, W)` raw kv rows, oldest first.
    raw: B::Buf,
    raw_n: usize,
    comp: Option<CompState<B>>,
    idx: Option<CompState<B>>,
}

impl<B: Backend> Clone for CompState<B>
where
    B::Buf: Clone,
{
    fn clone(&self) -> Self {
        CompState {
            front: self.front.clone(),
            rows: self.rows.clone(),
            n: self.n,
        }
    }
}

impl<B: Backend> Clone for LayerState<B>
where
    B::Buf: Clone,
{
    fn clone(&self) -> Self {
        LayerState {
            raw: self.raw.clone(),
            raw_n: self.raw_n,
            comp: self.comp.clone(),
            idx: self.idx.clone(),
        }
    }
}

/// Decoding state of one sequence.
pub struct Session<B: Backend> {
    pub numerics: Numerics,
    /// The config of the model that created the session (checked on use).
    cfg: Config,
    pos: usize,
    layers: Vec<LayerState<B>>,
    mtp_layer: Option<LayerState<B>>,
    mtp_pos: usize,
    /// Final HC state (before the output head) of the last processed token.
    last_hc: Option<B::Buf>,
}

/// A deep copy of the whole decoding state (snapshot / restore): the copy and
/// the original continue independently and bit-identically.
impl<B: Backend> Clone for Session<B>
where
    B::Buf: Clone,
{
    fn clone(&self) -> Self {
        Session {
            numerics: self.numerics,
            cfg: self.cfg.clone(),
            pos: self.pos,
            layers: self.layers.clone(),
            mtp_layer: self.mtp_layer.clone(),
            mtp_pos: self.mtp_pos,
            last_hc: self.last_hc.clone(),
        }
    }
}

/// Which logits rows a forward call returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    All,
    Last,
    None,
}

fn blk(l: usize, s: &str) -> String {
    format!("blk.{l}.{s}")
}

impl<B: Backend> Model<B> {
    /// Bind every tensor of the main model (and, if `mtp` is given, the MTP
    /// block) from `src` onto `be`. Shapes come from `cfg`; a missing or
    /// mis-shaped tensor is an error naming it.
    pub fn bind(
        be: B,
        cfg: Config,
        src: &dyn TensorSource,
        mtp: Option<&dyn TensorSource>,
    ) -> Result<Model<B>> {
        cfg.check()?;
        let c = &cfg;
        let embed = be.bind(&expect(src, "token_embd.weight", &[c.dim, c.vocab])?)?;
        let mut blocks = Vec::with_capacity(c.n_layers);
        for l in 0..c.n_layers {
            let p = |s: &str| blk(l, s);
            blocks.push(
                bind_block(&be, c, src, &p, c.kind(l), l < c.n_hash, c.limit(l))
                    .with_context(|| format!("layer {l}"))?,
            );
        }
        let out_hc = bind_hc(
            &be,
            src,
            "output_hc_fn.weight",
            "output_hc_base.weight",
            "output_hc_scale.weight",
            c.hc_dim(),
            c.n_hc,
            1,
        )?;
        let out_norm = be.bind_vec(&expect(src, "output_norm.weight", &[c.dim])?)?;
        let head = be.bind(&expect(src, "output.weight", &[c.dim, c.vocab])?)?;
        let mtp = match mtp {
            None => None,
            Some(m) => {
                let p = |s: &str| format!("mtp.0.{s}");
                let d = c.dim;
                let block = bind_block(
                    &be,
                    c,
                    m,
                    &p,
                    AttnKind::Swa,
                    false,
                    *c.swiglu_limit.last().unwrap(),
                )
                .context("MTP block")?;
                Some(Mtp {
                    e_proj: be.bind(&expect(m, &p("e_proj.weight"), &[d, d])?)?,
                    h_proj: be.bind(&expect(m, &p("h_proj.weight"), &[d, d])?)?,
                    enorm: be.bind_vec(&expect(m, &p("enorm.weight"), &[d])?)?,
                    hnorm: be.bind_vec(&expect(m, &p("hnorm.weight"), &[d])?)?,
                    norm: be.bind_vec(&expect(m, &p("norm.weight"), &[d])?)?,
                    head: bind_hc(
                        &be,
                        m,
                        &p("hc_head_fn.weight"),
                        &p("hc_head_base.weight"),
                        &p("hc_head_scale.weight"),
                        c.hc_dim(),
                        c.n_hc,
                        1,
                    )?,
                    block,
                })
            }
        };
        let rope_main = RopeTable::new(c, c.rope_theta, false);
        let rope_comp = RopeTable::new(c, c.compress_rope_theta, true);
        Ok(Model {
            cfg,
            be,
            embed,
            blocks,
            out_hc,
            out_norm,
            head,
            mtp,
            rope_main,
            rope_comp,
        })
    }

    pub fn has_mtp(&self) -> bool {
        self.mtp.is_some()
    }

    /// A fresh session (no tokens).
    pub fn session(&self, numerics: Numerics) -> Session<B> {
        let layers = self.blocks.iter().map(|b| self.layer_state(b)).collect();
        let mtp_layer = self.mtp.as_ref().map(|m| self.layer_state(&m.block));
        Session {
            numerics,
            cfg: self.cfg.clone(),
            pos: 0,
            layers,
            mtp_layer,
            mtp_pos: 0,
            last_hc: None,
        }
    }

    fn layer_state(&self, b: &Block<B>) -> LayerState<B> {
        let mk = |w: &CompW<B>| {
            let in_w = if w.overlap { 2 * w.width } else { w.width };
            let slots = if w.overlap { 2 * w.ratio } else { w.ratio };
            CompState {
                front: CompFrontier {
                    kv: self.be.zeros(slots * in_w),
                    score: self.be.zeros(slots * in_w),
                    ratio: w.ratio,
                    width: w.width,
                    overlap: w.overlap,
                    has_prev: false,
                },
                rows: self.be.zeros(0),
                n: 0,
            }
        };
        LayerState {
            raw: self.be.zeros(0),
            raw_n: 0,
            comp: b.comp.as_ref().map(mk),
            idx: b.idx.as_ref().map(|i| mk(&i.comp)),
        }
    }

    /// Run `ids` at positions `s.pos ..`; returns logits rows as requested
    /// (`[rows, vocab]` row-major).
    pub fn forward(&self, s: &mut Session<B>, ids: &[u32], want: Want) -> Result<Vec<f32>> {
        let c = &self.cfg;
        if s.cfg != self.cfg {
            bail!("the session was created by a model with a different config");
        }
        let t_n = ids.len();
        if t_n == 0 {
            return Ok(Vec::new());
        }
        if let Some(&bad) = ids.iter().find(|&&t| t as usize >= c.vocab) {
            bail!("token id {bad} outside the vocabulary of {}", c.vocab);
        }
        let positions: Vec<usize> = (s.pos..s.pos + t_n).collect();
        let mut x = self.be.embed_hc(&self.embed, ids, c.n_hc)?;
        for (l, b) in self.blocks.iter().enumerate() {
            self.block_forward(b, &mut s.layers[l], &mut x, ids, &positions, s.numerics)
                .with_context(|| format!("layer {l}"))?;
        }
        s.pos += t_n;
        let hc = c.n_hc * c.dim;
        s.last_hc = Some(self.be.slice_rows(&x, hc, t_n - 1, 1));
        match want {
            Want::None => Ok(Vec::new()),
            Want::All => Ok(self.logits(&x, t_n)),
            Want::Last => {
                let last = self.be.slice_rows(&x, hc, t_n - 1, 1);
                Ok(self.logits(&last, 1))
            }
        }
    }

    fn logits(&self, x: &B::Buf, rows: usize) -> Vec<f32> {
        let c = &self.cfg;
        let mut y = self.be.hc_head(
            x,
            rows,
            c,
            &self.out_hc.fn_,
            &self.out_hc.base,
            &self.out_hc.scale,
        );
        self.be
            .rms_norm(&mut y, c.dim, Some(&self.out_norm), c.rms_eps);
        self.be.download(&self.be.matmul(&self.head, &y, rows))
    }

    /// One transformer layer over a chunk (spec §2.4, §5.1 step 2).
    fn block_forward(
        &self,
        b: &Block<B>,
        st: &mut LayerState<B>,
        x: &mut B::Buf,
        ids: &[u32],
        pos: &[usize],
        num: Numerics,
    ) -> Result<()> {
        let c = &self.cfg;
        let be = &self.be;
        let t_n = ids.len();
        let (mut y, post, comb) =
            be.hc_pre(x, t_n, c, &b.hc_attn.fn_, &b.hc_attn.base, &b.hc_attn.scale);
        be.rms_norm(&mut y, c.dim, Some(&b.attn_norm), c.rms_eps);
        let a = self.attention(b, st, &y, pos, num)?;
        be.hc_post(x, &a, &post, &comb, c);
        let (mut y, post, comb) =
            be.hc_pre(x, t_n, c, &b.hc_ffn.fn_, &b.hc_ffn.base, &b.hc_ffn.scale);
        be.rms_norm(&mut y, c.dim, Some(&b.ffn_norm), c.rms_eps);
        let f = self.moe(b, &y, ids)?;
        be.hc_post(x, &f, &post, &comb, c);
        Ok(())
    }

    fn moe(&self, b: &Block<B>, r: &B::Buf, ids: &[u32]) -> Result<B::Buf> {
        let c = &self.cfg;
        let be = &self.be;
        let t_n = ids.len();
        let logits = be.matmul(&b.router, r, t_n);
        let hash: Option<Vec<i32>> = match &b.tid2eid {
            None => None,
            Some(t) => {
                let k = c.n_experts_used;
                let bytes = t.bytes();
                let mut v = Vec::with_capacity(t_n * k);
                for &id in ids {
                    let o = id as usize * k * 4;
                    for j in 0..k {
                        let q = &bytes[o + 4 * j..o + 4 * j + 4];
                        v.push(i32::from_le_bytes([q[0], q[1], q[2], q[3]]));
                    }
                }
                Some(v)
            }
        };
        let routing = be.route(
            &logits,
            c.n_experts,
            c.n_experts_used,
            b.bias.as_ref(),
            hash.as_deref(),
            c.routed_scale,
        )?;
        let mut out = be.moe(r, &routing, &b.gate_exps, &b.up_exps, &b.down_exps, b.limit);
        let sh = be.swiglu_ffn(r, t_n, &b.gate_sh, &b.up_sh, &b.down_sh, b.limit);
        be.add(&mut out, &sh);
        Ok(out)
    }

    fn attention(
        &self,
        b: &Block<B>,
        st: &mut LayerState<B>,
        x: &B::Buf,
        pos: &[usize],
        num: Numerics,
    ) -> Result<B::Buf> {
        let c = &self.cfg;
        let be = &self.be;
        let t_n = pos.len();
        let (h, hd) = (c.n_heads, c.head_dim);
        let official = num == Numerics::Official;
        let table = if b.kind == AttnKind::Swa {
            &self.rope_main
        } else {
            &self.rope_comp
        };
        // query path
        let mut qlat = be.matmul(&b.q_a, x, t_n);
        be.rms_norm(&mut qlat, c.q_lora, Some(&b.q_a_norm), c.rms_eps);
        let mut q = be.matmul(&b.q_b, &qlat, t_n);
        be.rms_norm(&mut q, hd, None, c.rms_eps);
        be.rope(&mut q, h, hd, pos, table, false, official);
        // kv path
        let mut kv = be.matmul(&b.kv, x, t_n);
        be.rms_norm(&mut kv, hd, Some(&b.kv_norm), c.rms_eps);
        be.rope(&mut kv, 1, hd, pos, table, false, official);
        if official {
            be.fp8_sim(&mut kv, hd, c.nope_dim());
            be.f16_round(&mut kv);
        }
        // raw staging: previous window rows followed by this chunk's rows
        let raw_start = pos[0] - st.raw_n;
        let mut staging = std::mem::replace(&mut st.raw, be.zeros(0));
        be.append(&mut staging, &kv);
        let n_stage = st.raw_n + t_n;

        // compressor rows emitted within this chunk
        if let (Some(w), Some(cs)) = (&b.comp, st.comp.as_mut()) {
            let (mut rows, n) = self.feed_compressor_rope(w, cs, x, pos, hd, official);
            if n > 0 {
                if official {
                    be.fp8_sim(&mut rows, hd, c.nope_dim());
                    be.f16_round(&mut rows);
                }
                be.append(&mut cs.rows, &rows);
                cs.n += n;
            }
        }
        // indexer
        let mut selected: Option<Vec<Vec<u32>>> = None;
        if let (Some(iw), Some(is)) = (&b.idx, st.idx.as_mut()) {
            let di = c.idx_dim;
            let (mut rows, n) = self.feed_compressor_rope(&iw.comp, is, x, pos, di, official);
            if n > 0 {
                if official {
                    be.hadamard_fp4(&mut rows, di);
                    // ds4.c stores indexer rows rounded to f16 too (kv_cache_push_comp)
                    be.f16_round(&mut rows);
                }
                be.append(&mut is.rows, &rows);
                is.n += n;
            }
            let n_valid: Vec<usize> = pos.iter().map(|&p| ((p + 1) / 4).min(is.n)).collect();
            if n_valid.iter().any(|&v| v > c.idx_topk) {
                let mut qi = be.matmul(&iw.q_b, &qlat, t_n);
                be.rope(
                    &mut qi,
                    c.idx_heads,
                    di,
                    pos,
                    &self.rope_comp,
                    false,
                    official,
                );
                if official {
                    be.hadamard_fp4(&mut qi, di);
                }
                let mut wts = be.matmul(&iw.proj, x, t_n);
                be.scale(&mut wts, 1.0 / ((di * c.idx_heads) as f32).sqrt());
                let scores = be.indexer_scores(&qi, c.idx_heads, di, &wts, &is.rows, &n_valid);
                let n_rows = is.n;
                let mut sel = Vec::with_capacity(t_n);
                for t in 0..t_n {
                    let nv = n_valid[t];
                    if nv <= c.idx_topk {
                        sel.push((0..nv as u32).collect());
                    } else {
                        let mut v: Vec<u32> = crate::backend::topk_desc(
                            &scores[t * n_rows..t * n_rows + nv],
                            c.idx_topk,
                        )
                        .into_iter()
                        .map(|i| i as u32)
                        .collect();
                        v.sort_unstable();
                        sel.push(v);
                    }
                }
                selected = Some(sel);
            }
        }
        // visibility lists
        let mut vis = Visibility {
            offsets: vec![0],
            rows: Vec::new(),
        };
        let n_comp_rows = st.comp.as_ref().map_or(0, |cs| cs.n);
        for (t, &p) in pos.iter().enumerate() {
            let lo = (p + 1).saturating_sub(c.window);
            for q in lo..=p {
                vis.rows.push((q - raw_start) as u32);
            }
            match b.kind {
                AttnKind::Swa => {}
                AttnKind::Hca(r) => {
                    let nv = ((p + 1) / r).min(n_comp_rows);
                    vis.rows.extend((0..nv as u32).map(|w| w + n_stage as u32));
                }
                AttnKind::Csa => {
                    let nv = ((p + 1) / 4).min(n_comp_rows);
                    match &selected {
                        Some(sel) => vis.rows.extend(sel[t].iter().map(|&w| w + n_stage as u32)),
                        None => vis.rows.extend((0..nv as u32).map(|w| w + n_stage as u32)),
                    }
                }
            }
            vis.offsets.push(vis.rows.len() as u32);
        }
        let empty = be.zeros(0);
        let comp_rows = st.comp.as_ref().map_or(&empty, |cs| &cs.rows);
        let mut o = be.attention(
            &q,
            h,
            hd,
            &staging,
            comp_rows,
            &vis,
            &b.sinks,
            1.0 / (hd as f32).sqrt(),
        );
        be.rope(&mut o, h, hd, pos, table, true, official);
        let low = be.matmul_grouped(&b.o_a, &o, t_n, c.o_groups);
        let a = be.matmul(&b.o_b, &low, t_n);
        // keep the last W raw rows
        let keep = n_stage.min(c.window);
        st.raw = be.slice_rows(&staging, hd, n_stage - keep, keep);
        st.raw_n = keep;
        Ok(a)
    }

    fn feed_compressor_rope(
        &self,
        w: &CompW<B>,
        cs: &mut CompState<B>,
        x: &B::Buf,
        pos: &[usize],
        head_dim: usize,
        official: bool,
    ) -> (B::Buf, usize) {
        let be = &self.be;
        let t_n = pos.len();
        let kv = be.matmul(&w.kv, x, t_n);
        let mut score = be.matmul(&w.gate, x, t_n);
        let in_w = if w.overlap { 2 * w.width } else { w.width };
        be.add_position_rows(&mut score, in_w, &w.ape, pos);
        let (mut rows, wins) = be.compress(&mut cs.front, &kv, &score, pos);
        let n = wins.len();
        if n > 0 {
            be.rms_norm(&mut rows, head_dim, Some(&w.norm), self.cfg.rms_eps);
            let rpos: Vec<usize> = wins.iter().map(|&wi| wi * w.ratio).collect();
            be.rope(
                &mut rows,
                1,
                head_dim,
                &rpos,
                &self.rope_comp,
                false,
                official,
            );
        }
        (rows, n)
    }

    /// The MTP block's forward (spec §6.2): from an HC state `h` (`n_hc*dim`,
    /// e.g. [`Session::last_hidden`]) and token `t` at the MTP cache's next
    /// position; returns `(logits, output HC state)`.
    pub fn mtp_forward(
        &self,
        s: &mut Session<B>,
        h: &B::Buf,
        token: u32,
    ) -> Result<(Vec<f32>, B::Buf)> {
        let c = &self.cfg;
        let be = &self.be;
        let m = self.mtp.as_ref().context("model has no MTP block bound")?;
        if s.cfg != self.cfg {
            bail!("the session was created by a model with a different config");
        }
        if token as usize >= c.vocab {
            bail!("token id {token} outside the vocabulary of {}", c.vocab);
        }
        if be.len(h) != c.hc_dim() {
            bail!(
                "MTP input state has {} values, expected {}",
                be.len(h),
                c.hc_dim()
            );
        }
        let mut e = be.embed_hc(&self.embed, &[token], 1)?;
        be.rms_norm(&mut e, c.dim, Some(&m.enorm), c.rms_eps);
        let e2 = be.matmul(&m.e_proj, &e, 1);
        let mut hn = be.download(h);
        let mut hb = be.upload(&hn);
        be.rms_norm(&mut hb, c.dim, Some(&m.hnorm), c.rms_eps);
        let hp = be.matmul(&m.h_proj, &hb, c.n_hc);
        hn = be.download(&hp);
        let e2h = be.download(&e2);
        for s_ in 0..c.n_hc {
            for i in 0..c.dim {
                hn[s_ * c.dim + i] += e2h[i];
            }
        }
        let mut x = be.upload(&hn);
        let pos = [s.mtp_pos];
        let st = s
            .mtp_layer
            .as_mut()
            .context("session was created before the MTP block was bound")?;
        self.block_forward(&m.block, st, &mut x, &[token], &pos, s.numerics)?;
        s.mtp_pos += 1;
        let mut y = be.hc_head(&x, 1, c, &m.head.fn_, &m.head.base, &m.head.scale);
        be.rms_norm(&mut y, c.dim, Some(&m.norm), c.rms_eps);
        let logits = be.download(&be.matmul(&self.head, &y, 1));
        Ok((logits, x))
    }
}

impl<B: Backend> Session<B> {
    /// Number of tokens processed.
    pub fn pos(&self) -> usize {
        self.pos
    }
    /// Position the next [`Model::mtp_forward`] call runs at.
    pub fn mtp_pos(&self) -> usize {
        self.mtp_pos
    }
    /// Empty the MTP block's raw window and make its next call run at `pos`
    /// (e.g. the main model's position, ds4.c style, spec §6.3).
    pub fn reset_mtp(&mut self, model: &Model<B>, pos: usize) {
        self.mtp_layer = model.mtp.as_ref().map(|m| model.layer_state(&m.block));
        self.mtp_pos = pos;
    }
    /// Final HC state of the last processed token (before the output head).
    pub fn last_hidden(&self) -> Option<&B::Buf> {
        self.last_hc.as_ref()
    }
    /// Number of compressed rows per layer (0 for SWA layers).
    pub fn compressed_rows(&self) -> Vec<usize> {
        self.layers
            .iter()
            .map(|l| l.comp.as_ref().map_or(0, |c| c.n))
            .collect()
    }
    /// Number of indexer rows per layer.
    pub fn indexer_rows(&self) -> Vec<usize> {
        self.layers
            .iter()
            .map(|l| l.idx.as_ref().map_or(0, |c| c.n))
            .collect()
    }
    /// Raw-window rows held per layer.
    pub fn raw_rows(&self) -> Vec<usize> {
        self.layers.iter().map(|l| l.raw_n).collect()
    }
    /// Bytes of session state that grow with the context (compressed and indexer rows).
    pub fn growing_bytes(&self, be: &B) -> usize {
        self.layers
            .iter()
            .map(|l| {
                l.comp.as_ref().map_or(0, |c| be.buf_bytes(&c.rows))
                    + l.idx.as_ref().map_or(0, |c| be.buf_bytes(&c.rows))
            })
            .sum()
    }
    /// All session state bytes (raw windows, frontiers, rows).
    pub fn state_bytes(&self, be: &B) -> usize {
        let comp = |c: &CompState<B>| {
            be.buf_bytes(&c.rows) + be.buf_bytes(&c.front.kv) + be.buf_bytes(&c.front.score)
        };
        self.layers
            .iter()
            .chain(self.mtp_layer.iter())
            .map(|l| {
                be.buf_bytes(&l.raw)
                    + l.comp.as_ref().map_or(0, comp)
                    + l.idx.as_ref().map_or(0, comp)
            })
            .sum()
    }
}

/// Amortised growth of the session state in f32 values per token (spec §7.4):
/// CSA `(head_dim + idx_dim)/4`, HCA `head_dim/ratio`, SWA 0.
pub fn state_values_per_token(cfg: &Config) -> f64 {
    cfg.compress_ratios
        .iter()
        .map(|&r| match AttnKind::from_ratio(r) {
            AttnKind::Swa => 0.0,
            AttnKind::Csa => (cfg.head_dim + cfg.idx_dim) as f64 / 4.0,
            AttnKind::Hca(r) => cfg.head_dim as f64 / r as f64,
        })
        .sum()
}

fn bind_hc<B: Backend>(
    be: &B,
    src: &dyn TensorSource,
    f: &str,
    b: &str,
    s: &str,
    hc_dim: usize,
    outs: usize,
    n_scale: usize,
) -> Result<HcW<B>> {
    Ok(HcW {
        fn_: be.bind(&expect(src, f, &[hc_dim, outs])?)?,
        base: be.bind_vec(&expect(src, b, &[outs])?)?,
        scale: be.bind_vec(&expect(src, s, &[n_scale])?)?,
    })
}

#[allow(clippy::too_many_arguments)]
fn bind_block<B: Backend>(
    be: &B,
    c: &Config,
    src: &dyn TensorSource,
    p: &dyn Fn(&str) -> String,
    kind: AttnKind,
    hash: bool,
    limit: f32,
) -> Result<Block<B>> {
    let d = c.dim;
    let hd = c.head_dim;
    let m = |n: &str, dims: &[usize]| -> Result<B::Mat> { be.bind(&expect(src, &p(n), dims)?) };
    let v = |n: &str, dims: &[usize]| -> Result<B::Buf> { be.bind_vec(&expect(src, &p(n), dims)?) };
    let comp_w = |pre: &str, width: usize, ratio: usize, overlap: bool| -> Result<CompW<B>> {
        let in_w = if overlap { 2 * width } else { width };
        Ok(CompW {
            kv: m(&format!("{pre}_kv.weight"), &[d, in_w])?,
            gate: m(&format!("{pre}_gate.weight"), &[d, in_w])?,
            ape: v(&format!("{pre}_ape.weight"), &[in_w, ratio])?,
            norm: v(&format!("{pre}_norm.weight"), &[width])?,
            ratio,
            width,
            overlap,
        })
    };
    let (comp, idx) = match kind {
        AttnKind::Swa => (None, None),
        AttnKind::Hca(r) => (Some(comp_w("attn_compressor", hd, r, false)?), None),
        AttnKind::Csa => (
            Some(comp_w("attn_compressor", hd, 4, true)?),
            Some(IdxW {
                q_b: m(
                    "indexer.attn_q_b.weight",
                    &[c.q_lora, c.idx_heads * c.idx_dim],
                )?,
                proj: m("indexer.proj.weight", &[d, c.idx_heads])?,
                comp: comp_w("indexer_compressor", c.idx_dim, 4, true)?,
            }),
        ),
    };
    let tid2eid = if hash {
        let t = expect(
            src,
            &p("ffn_gate_tid2eid.weight"),
            &[c.n_experts_used, c.vocab],
        )?;
        if t.ty != GgmlType::I32 {
            bail!(
                "{}: type {}, expected I32",
                p("ffn_gate_tid2eid.weight"),
                t.ty
            );
        }
        let n = t.n_elems();
        for (i, q) in t.bytes().chunks_exact(4).take(n).enumerate() {
            let e = i32::from_le_bytes([q[0], q[1], q[2], q[3]]);
            if e < 0 || e as usize >= c.n_experts {
                bail!(
                    "{}: token {} routes to expert {e}, the model has {}",
                    p("ffn_gate_tid2eid.weight"),
                    i / c.n_experts_used,
                    c.n_experts
                );
            }
        }
        Some(t)
    } else {
        None
    };
    let bias = if hash {
        None
    } else {
        match src.tensor(&p("exp_probs_b.bias")) {
            None => None,
            Some(_) => Some(v("exp_probs_b.bias", &[c.n_experts])?),
        }
    };
    Ok(Block {
        kind,
        limit,
        hc_attn: bind_hc(
            be,
            src,
            &p("hc_attn_fn.weight"),
            &p("hc_attn_base.weight"),
            &p("hc_attn_scale.weight"),
            c.hc_dim(),
            c.hc_mix(),
            3,
        )?,
        attn_norm: v("attn_norm.weight", &[d])?,
        q_a: m("attn_q_a.weight", &[d, c.q_lora])?,
        q_a_norm: v("attn_q_a_norm.weight", &[c.q_lora])?,
        q_b: m("attn_q_b.weight", &[c.q_lora, c.n_heads * hd])?,
        kv: m("attn_kv.weight", &[d, hd])?,
        kv_norm: v("attn_kv_a_norm.weight", &[hd])?,
        sinks: v("attn_sinks.weight", &[c.n_heads])?,
        o_a: m(
            "attn_output_a.weight",
            &[c.n_heads * hd / c.o_groups, c.o_groups * c.o_lora],
        )?,
        o_b: m("attn_output_b.weight", &[c.o_groups * c.o_lora, d])?,
        comp,
        idx,
        hc_ffn: bind_hc(
            be,
            src,
            &p("hc_ffn_fn.weight"),
            &p("hc_ffn_base.weight"),
            &p("hc_ffn_scale.weight"),
            c.hc_dim(),
            c.hc_mix(),
            3,
        )?,
        ffn_norm: v("ffn_norm.weight", &[d])?,
        router: m("ffn_gate_inp.weight", &[d, c.n_experts])?,
        bias,
        tid2eid,
        gate_exps: m("ffn_gate_exps.weight", &[d, c.ffn_dim, c.n_experts])?,
        up_exps: m("ffn_up_exps.weight", &[d, c.ffn_dim, c.n_experts])?,
        down_exps: m("ffn_down_exps.weight", &[c.ffn_dim, d, c.n_experts])?,
        gate_sh: m("ffn_gate_shexp.weight", &[d, c.ffn_dim])?,
        up_sh: m("ffn_up_shexp.weight", &[d, c.ffn_dim])?,
        down_sh: m("ffn_down_shexp.weight", &[c.ffn_dim, d])?,
    })
}
