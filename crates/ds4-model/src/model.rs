//! Weights bound to a backend, session state and the forward pass
//! (spec/model.md §2–§7).
//!
//! [`Model::forward_batch`] runs one forward call over a batch of independent
//! sequences: each brings its own [`Session`] (KV state preallocated at its
//! context size), its own positions and its own number of tokens (a prefill
//! chunk or one decode token), so continuous batching and speculative
//! verification use the same call.

use crate::backend::{Backend, CompGeom, CompVis, HashRoute, Pos, RopePos, RopeTable, Seq};
use crate::config::{AttnKind, Config};
use crate::weights::{expect, TensorSource};
use anyhow::{bail, ensure, Context, Result};
use ds4_quant::GgmlType;

/// Context size of [`Model::session`] (use [`Model::session_ctx`] to choose).
pub const DEFAULT_CTX: usize = 65536;

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
    geom: CompGeom,
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
    tid2eid: Option<B::Idx>,
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
    rope_main: B::Rope,
    rope_comp: B::Rope,
}

/// Compressor state of one compressor: the frontier ring (the last
/// `ring_rows` token rows, indexed by position) and the emitted rows.
pub struct CompState<B: Backend> {
    ring_kv: B::Buf,
    ring_score: B::Buf,
    rows: B::Kv,
    n: usize,
    width: usize,
    /// Bytes per stored value.
    elem: usize,
}

/// Per-layer incremental state (spec §7.1).
pub struct LayerState<B: Backend> {
    /// Ring of the last `window` raw kv rows, row `p mod window` for position `p`.
    raw: B::Kv,
    comp: Option<CompState<B>>,
    idx: Option<CompState<B>>,
}

/// Decoding state of one sequence.
pub struct Session<B: Backend> {
    pub numerics: Numerics,
    /// The config of the model that created the session (checked on use).
    cfg: Config,
    ctx: usize,
    pos: usize,
    layers: Vec<LayerState<B>>,
    mtp_layer: Option<LayerState<B>>,
    mtp_pos: usize,
    /// Final HC state (before the output head) of the last processed token.
    last_hc: Option<B::Buf>,
}

/// Which logits rows a forward call returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    All,
    Last,
    None,
}

/// One sequence of a batched forward call.
pub struct SeqStep<'a, B: Backend> {
    pub session: &'a mut Session<B>,
    pub ids: &'a [u32],
    pub want: Want,
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
        let rope_main = be.bind_rope(&RopeTable::new(c, c.rope_theta, false))?;
        let rope_comp = be.bind_rope(&RopeTable::new(c, c.compress_rope_theta, true))?;
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

    /// A fresh session with [`DEFAULT_CTX`] positions (panics if its state
    /// cannot be allocated; [`Model::session_ctx`] returns the error).
    pub fn session(&self, numerics: Numerics) -> Session<B> {
        self.session_ctx(numerics, DEFAULT_CTX)
            .expect("allocating a session")
    }

    /// A fresh session whose KV state is preallocated for `ctx` positions.
    pub fn session_ctx(&self, numerics: Numerics, ctx: usize) -> Result<Session<B>> {
        ensure!(ctx > 0, "a session needs a context of at least one token");
        let half = numerics == Numerics::Official;
        let layers = self
            .blocks
            .iter()
            .map(|b| self.layer_state(b, ctx, half))
            .collect::<Result<Vec<_>>>()?;
        let mtp_layer = match &self.mtp {
            Some(m) => Some(self.layer_state(&m.block, ctx, half)?),
            None => None,
        };
        Ok(Session {
            numerics,
            cfg: self.cfg.clone(),
            ctx,
            pos: 0,
            layers,
            mtp_layer,
            mtp_pos: 0,
            last_hc: None,
        })
    }

    /// Bytes of KV state a session of `ctx` positions preallocates.
    pub fn session_bytes(&self, numerics: Numerics, ctx: usize) -> usize {
        let c = &self.cfg;
        let el = self
            .be
            .kv_alloc(1, 1, numerics == Numerics::Official)
            .map_or(4, |k| self.be.kv_bytes(&k).max(1));
        let mut b = 0;
        for l in 0..c.n_layers {
            b += c.window * c.head_dim * el;
            let r = c.compress_ratios[l];
            if r == 0 {
                continue;
            }
            let ov = if r == 4 { 2 } else { 1 };
            b += (ctx / r + 1) * c.head_dim * el + 2 * ov * r * ov * c.head_dim * 4;
            if r == 4 {
                b += (ctx / 4 + 1) * c.idx_dim * el + 2 * 2 * 4 * 2 * c.idx_dim * 4;
            }
        }
        b
    }

    fn layer_state(&self, b: &Block<B>, ctx: usize, half: bool) -> Result<LayerState<B>> {
        let c = &self.cfg;
        let mk = |w: &CompW<B>| -> Result<CompState<B>> {
            let g = w.geom;
            let ring = g.ring_rows() * g.in_width();
            let cap = ctx / g.ratio + 1;
            let rows = self.be.kv_alloc(cap, g.width, half)?;
            let elem = self.be.kv_bytes(&rows) / (cap * g.width);
            Ok(CompState {
                ring_kv: self.be.zeros(ring)?,
                ring_score: self.be.zeros(ring)?,
                rows,
                n: 0,
                width: g.width,
                elem,
            })
        };
        Ok(LayerState {
            raw: self.be.kv_alloc(c.window, c.head_dim, half)?,
            comp: b.comp.as_ref().map(mk).transpose()?,
            idx: b.idx.as_ref().map(|i| mk(&i.comp)).transpose()?,
        })
    }

    /// Run `ids` at positions `s.pos ..`; returns logits rows as requested
    /// (`[rows, vocab]` row-major).
    pub fn forward(&self, s: &mut Session<B>, ids: &[u32], want: Want) -> Result<Vec<f32>> {
        let mut out = self.forward_batch(&mut [SeqStep {
            session: s,
            ids,
            want,
        }])?;
        Ok(out.pop().unwrap_or_default())
    }

    /// One forward call over a batch of independent sequences (each at its
    /// own position, with any number of tokens); returns each sequence's
    /// logits rows as it asked. All sessions must share their numerics.
    pub fn forward_batch(&self, batch: &mut [SeqStep<'_, B>]) -> Result<Vec<Vec<f32>>> {
        let c = &self.cfg;
        let be = &self.be;
        let mut ids: Vec<u32> = Vec::new();
        let mut positions: Vec<usize> = Vec::new();
        let mut seqs: Vec<Seq> = Vec::with_capacity(batch.len());
        let numerics = match batch.first() {
            Some(s) => s.session.numerics,
            None => return Ok(Vec::new()),
        };
        for st in batch.iter() {
            let s = &st.session;
            if s.cfg != self.cfg {
                bail!("the session was created by a model with a different config");
            }
            if s.numerics != numerics {
                bail!("all sequences of a batch must share their numerics");
            }
            if let Some(&bad) = st.ids.iter().find(|&&t| t as usize >= c.vocab) {
                bail!("token id {bad} outside the vocabulary of {}", c.vocab);
            }
            if s.pos + st.ids.len() > s.ctx {
                bail!(
                    "context overflow: {} + {} tokens exceed the session's context of {}",
                    s.pos,
                    st.ids.len(),
                    s.ctx
                );
            }
            seqs.push(Seq {
                row0: ids.len(),
                n: st.ids.len(),
                p0: s.pos,
            });
            ids.extend_from_slice(st.ids);
            positions.extend(s.pos..s.pos + st.ids.len());
        }
        let t_n = ids.len();
        if t_n == 0 {
            return Ok(batch.iter().map(|_| Vec::new()).collect());
        }
        let dids = be.upload_idx(&ids.iter().map(|&t| t as i32).collect::<Vec<_>>())?;
        let dpos = be.upload_idx(&positions.iter().map(|&p| p as i32).collect::<Vec<_>>())?;
        let pos = Pos {
            host: &positions,
            dev: &dpos,
        };
        let mut x = be.embed_hc(&self.embed, &dids, &ids, c.n_hc)?;
        for (l, b) in self.blocks.iter().enumerate() {
            let mut states: Vec<&mut LayerState<B>> =
                batch.iter_mut().map(|s| &mut s.session.layers[l]).collect();
            self.block_forward(b, &mut states, &mut x, &dids, &pos, &seqs, numerics)
                .with_context(|| format!("layer {l}"))?;
        }
        let hc = c.n_hc * c.dim;
        let mut rows: Vec<usize> = Vec::new();
        for (st, sq) in batch.iter_mut().zip(&seqs) {
            if sq.n == 0 {
                continue;
            }
            st.session.pos += sq.n;
            st.session.last_hc = Some(be.slice_rows(&x, hc, sq.row0 + sq.n - 1, 1)?);
            match st.want {
                Want::None => {}
                Want::Last => rows.push(sq.row0 + sq.n - 1),
                Want::All => rows.extend(sq.row0..sq.row0 + sq.n),
            }
        }
        let mut out: Vec<Vec<f32>> = batch.iter().map(|_| Vec::new()).collect();
        if rows.is_empty() {
            return Ok(out);
        }
        let all: Vec<usize> = (0..t_n).collect();
        let logits = if rows == all {
            self.logits(&x, t_n)?
        } else {
            let g = be.gather_rows(&x, hc, &rows)?;
            self.logits(&g, rows.len())?
        };
        let v = c.vocab;
        let mut at = 0;
        for ((st, sq), o) in batch.iter().zip(&seqs).zip(out.iter_mut()) {
            let n = match st.want {
                _ if sq.n == 0 => 0,
                Want::None => 0,
                Want::Last => 1,
                Want::All => sq.n,
            };
            o.extend_from_slice(&logits[at * v..(at + n) * v]);
            at += n;
        }
        Ok(out)
    }

    fn logits(&self, x: &B::Buf, rows: usize) -> Result<Vec<f32>> {
        let c = &self.cfg;
        let mut y = self.be.hc_head(
            x,
            rows,
            c,
            &self.out_hc.fn_,
            &self.out_hc.base,
            &self.out_hc.scale,
        )?;
        self.be
            .rms_norm(&mut y, c.dim, Some(&self.out_norm), c.rms_eps)?;
        self.be.download(&self.be.matmul(&self.head, &y, rows)?)
    }

    /// One transformer layer over a batch (spec §2.4, §5.1 step 2).
    #[allow(clippy::too_many_arguments)]
    fn block_forward(
        &self,
        b: &Block<B>,
        sts: &mut [&mut LayerState<B>],
        x: &mut B::Buf,
        ids: &B::Idx,
        pos: &Pos<'_, B>,
        seqs: &[Seq],
        num: Numerics,
    ) -> Result<()> {
        let c = &self.cfg;
        let be = &self.be;
        let t_n = pos.host.len();
        let h = &b.hc_attn;
        let (y, post, comb) = be.hc_pre_norm(x, t_n, c, &h.fn_, &h.base, &h.scale, &b.attn_norm)?;
        let a = self.attention(b, sts, &y, pos, seqs, num)?;
        be.hc_post(x, &a, &post, &comb, c)?;
        let h = &b.hc_ffn;
        let (y, post, comb) = be.hc_pre_norm(x, t_n, c, &h.fn_, &h.base, &h.scale, &b.ffn_norm)?;
        let f = self.moe(b, &y, t_n, ids)?;
        be.hc_post(x, &f, &post, &comb, c)?;
        Ok(())
    }

    fn moe(&self, b: &Block<B>, r: &B::Buf, t_n: usize, ids: &B::Idx) -> Result<B::Buf> {
        let c = &self.cfg;
        let be = &self.be;
        let logits = be.matmul(&b.router, r, t_n)?;
        let hash = b
            .tid2eid
            .as_ref()
            .map(|table| HashRoute { table, tokens: ids });
        let routing = be.route(
            &logits,
            t_n,
            c.n_experts,
            c.n_experts_used,
            b.bias.as_ref(),
            hash,
            c.routed_scale,
        )?;
        let sh = be.swiglu_ffn(r, t_n, &b.gate_sh, &b.up_sh, &b.down_sh, b.limit)?;
        be.moe_plus(
            r,
            t_n,
            &routing,
            &b.gate_exps,
            &b.up_exps,
            &b.down_exps,
            b.limit,
            &sh,
        )
    }

    fn attention(
        &self,
        b: &Block<B>,
        sts: &mut [&mut LayerState<B>],
        x: &B::Buf,
        pos: &Pos<'_, B>,
        seqs: &[Seq],
        num: Numerics,
    ) -> Result<B::Buf> {
        let c = &self.cfg;
        let be = &self.be;
        let t_n = pos.host.len();
        let (h, hd) = (c.n_heads, c.head_dim);
        let official = num == Numerics::Official;
        let table = if b.kind == AttnKind::Swa {
            &self.rope_main
        } else {
            &self.rope_comp
        };
        // every projection of x, together
        let mut mats = vec![&b.q_a, &b.kv];
        if let Some(w) = &b.comp {
            mats.extend([&w.kv, &w.gate]);
        }
        if let Some(iw) = &b.idx {
            mats.extend([&iw.comp.kv, &iw.comp.gate, &iw.proj]);
        }
        let mut outs = be.matmul_many(&mats, x, t_n)?.into_iter();
        let mut next = || outs.next().context("matmul_many returned too few outputs");
        let mut qlat = next()?;
        let mut kv = next()?;
        let comp_in = match &b.comp {
            Some(w) => Some(self.compressor_inputs(w, next()?, next()?, pos)?),
            None => None,
        };
        let idx_in = match &b.idx {
            Some(iw) => {
                let (ikv, isc) = self.compressor_inputs(&iw.comp, next()?, next()?, pos)?;
                Some((ikv, isc, next()?))
            }
            None => None,
        };
        // query path
        be.rms_norm(&mut qlat, c.q_lora, Some(&b.q_a_norm), c.rms_eps)?;
        let mut q = be.matmul(&b.q_b, &qlat, t_n)?;
        let tok = RopePos::Tokens(pos);
        be.norm_rope(&mut q, h, hd, None, c.rms_eps, tok, table, official, None)?;
        // kv path
        let (tok, nope) = (RopePos::Tokens(pos), official.then(|| c.nope_dim()));
        be.norm_rope(
            &mut kv,
            1,
            hd,
            Some(&b.kv_norm),
            c.rms_eps,
            tok,
            table,
            official,
            nope,
        )?;
        // compressor rows emitted within this chunk
        if let (Some(w), Some((ckv, csc))) = (&b.comp, &comp_in) {
            for (st, &sq) in sts.iter_mut().zip(seqs) {
                let cs = st
                    .comp
                    .as_mut()
                    .context("layer state lacks its compressor")?;
                if let Some(mut rows) = self.compress_rows(w, cs, ckv, csc, sq, hd, official)? {
                    if official {
                        be.fp8_sim(&mut rows, hd, c.nope_dim())?;
                        be.f16_round(&mut rows)?;
                    }
                    let (_, count) = w.geom.emitted(sq);
                    be.kv_write(&mut cs.rows, cs.n, &rows, 0, count, false)?;
                    cs.n += count;
                }
            }
        }
        // indexer: its compressor always runs; scoring only where it prunes
        let mut selections: Vec<Option<B::Idx>> = seqs.iter().map(|_| None).collect();
        if let (Some(iw), Some((ikv, isc, iproj))) = (&b.idx, idx_in) {
            let di = c.idx_dim;
            let mut prunes = vec![false; seqs.len()];
            for (i, (st, &sq)) in sts.iter_mut().zip(seqs).enumerate() {
                let is = st.idx.as_mut().context("layer state lacks its indexer")?;
                if let Some(mut rows) =
                    self.compress_rows(&iw.comp, is, &ikv, &isc, sq, di, official)?
                {
                    if official {
                        be.hadamard_fp4(&mut rows, di)?;
                        // ds4.c stores indexer rows rounded to f16 too (kv_cache_push_comp)
                        be.f16_round(&mut rows)?;
                    }
                    let (_, count) = iw.comp.geom.emitted(sq);
                    be.kv_write(&mut is.rows, is.n, &rows, 0, count, false)?;
                    is.n += count;
                }
                let last = sq.p0 + sq.n - 1;
                prunes[i] = sq.n > 0 && ((last + 1) / 4).min(is.n) > c.idx_topk;
            }
            if prunes.iter().any(|&p| p) {
                let mut qi = be.matmul(&iw.q_b, &qlat, t_n)?;
                be.rope(
                    &mut qi,
                    c.idx_heads,
                    di,
                    RopePos::Tokens(pos),
                    &self.rope_comp,
                    false,
                    official,
                )?;
                if official {
                    be.hadamard_fp4(&mut qi, di)?;
                }
                let mut wts = iproj;
                be.scale(&mut wts, 1.0 / ((di * c.idx_heads) as f32).sqrt())?;
                for (i, (st, &sq)) in sts.iter().zip(seqs).enumerate() {
                    if !prunes[i] {
                        continue;
                    }
                    let is = st.idx.as_ref().context("layer state lacks its indexer")?;
                    selections[i] = Some(be.indexer_topk(
                        &qi,
                        &wts,
                        &is.rows,
                        is.n,
                        sq,
                        c.idx_heads,
                        di,
                        c.idx_topk,
                    )?);
                }
            }
        }
        // attention per sequence, then the raw window takes the chunk's last rows;
        // the sequences' rows cover the batch, so attention writes all of o
        let covered = seqs.iter().map(|s| s.n).sum::<usize>() == t_n;
        let mut o = match covered {
            true => be.scratch(t_n * h * hd)?,
            false => be.zeros(t_n * h * hd)?,
        };
        for (i, (st, &sq)) in sts.iter_mut().zip(seqs).enumerate() {
            if sq.n == 0 {
                continue;
            }
            let vis = match (b.kind, &selections[i]) {
                (AttnKind::Swa, _) => CompVis::None,
                (AttnKind::Hca(r), _) => CompVis::All { ratio: r },
                (AttnKind::Csa, None) => CompVis::All { ratio: 4 },
                (AttnKind::Csa, Some(sel)) => CompVis::Selected { sel, k: c.idx_topk },
            };
            let comp = st.comp.as_ref().map(|cs| &cs.rows);
            be.attention(
                &mut o,
                &q,
                &kv,
                &st.raw,
                comp,
                vis,
                sq,
                c.window,
                h,
                hd,
                &b.sinks,
                1.0 / (hd as f32).sqrt(),
            )?;
            let end = sq.p0 + sq.n;
            let first = end.saturating_sub(c.window).max(sq.p0);
            be.kv_write(
                &mut st.raw,
                first,
                &kv,
                sq.row0 + first - sq.p0,
                end - first,
                true,
            )?;
        }
        be.rope(&mut o, h, hd, RopePos::Tokens(pos), table, true, official)?;
        let low = be.matmul_grouped(&b.o_a, &o, t_n, c.o_groups)?;
        be.matmul(&b.o_b, &low, t_n)
    }

    /// Compressor kv and score of every token of the batch (the kv and gate
    /// projections of x), the score with its ape rows added.
    fn compressor_inputs(
        &self,
        w: &CompW<B>,
        kv: B::Buf,
        mut score: B::Buf,
        pos: &Pos<'_, B>,
    ) -> Result<(B::Buf, B::Buf)> {
        self.be
            .add_position_rows(&mut score, w.geom.in_width(), &w.ape, pos)?;
        Ok((kv, score))
    }

    /// Feed one sequence into a compressor; the rows it emits, normed and
    /// roped at their windows' first positions.
    #[allow(clippy::too_many_arguments)]
    fn compress_rows(
        &self,
        w: &CompW<B>,
        cs: &mut CompState<B>,
        kv: &B::Buf,
        score: &B::Buf,
        sq: Seq,
        head_dim: usize,
        official: bool,
    ) -> Result<Option<B::Buf>> {
        let be = &self.be;
        let Some(mut rows) =
            be.compress(&mut cs.ring_kv, &mut cs.ring_score, kv, score, sq, w.geom)?
        else {
            return Ok(None);
        };
        be.rms_norm(&mut rows, head_dim, Some(&w.norm), self.cfg.rms_eps)?;
        let (w0, _) = w.geom.emitted(sq);
        be.rope(
            &mut rows,
            1,
            head_dim,
            RopePos::Arith {
                start: w0 * w.geom.ratio,
                step: w.geom.ratio,
            },
            &self.rope_comp,
            false,
            official,
        )?;
        Ok(Some(rows))
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
        let dtok = be.upload_idx(&[token as i32])?;
        let mut e = be.embed_hc(&self.embed, &dtok, &[token], 1)?;
        be.rms_norm(&mut e, c.dim, Some(&m.enorm), c.rms_eps)?;
        let e2 = be.matmul(&m.e_proj, &e, 1)?;
        let mut hb = be.buf_clone(h)?;
        be.rms_norm(&mut hb, c.dim, Some(&m.hnorm), c.rms_eps)?;
        let mut x = be.matmul(&m.h_proj, &hb, c.n_hc)?;
        be.add_row_broadcast(&mut x, &e2)?;
        let positions = [s.mtp_pos];
        let dpos = be.upload_idx(&[s.mtp_pos as i32])?;
        let pos = Pos {
            host: &positions,
            dev: &dpos,
        };
        let seqs = [Seq {
            row0: 0,
            n: 1,
            p0: s.mtp_pos,
        }];
        let numerics = s.numerics;
        let st = s
            .mtp_layer
            .as_mut()
            .context("session was created before the MTP block was bound")?;
        self.block_forward(&m.block, &mut [st], &mut x, &dtok, &pos, &seqs, numerics)?;
        s.mtp_pos += 1;
        let mut y = be.hc_head(&x, 1, c, &m.head.fn_, &m.head.base, &m.head.scale)?;
        be.rms_norm(&mut y, c.dim, Some(&m.norm), c.rms_eps)?;
        let logits = be.download(&be.matmul(&self.head, &y, 1)?)?;
        Ok((logits, x))
    }
}

impl<B: Backend> Session<B> {
    /// Number of tokens processed.
    pub fn pos(&self) -> usize {
        self.pos
    }
    /// Forget every token (the preallocated state is reused: stale ring rows
    /// are never read, since reads stay behind the positions written since).
    pub fn clear(&mut self) {
        self.pos = 0;
        self.mtp_pos = 0;
        self.last_hc = None;
        for l in self.layers.iter_mut().chain(self.mtp_layer.iter_mut()) {
            for c in [l.comp.as_mut(), l.idx.as_mut()].into_iter().flatten() {
                c.n = 0;
            }
        }
    }
    /// Positions this session's KV state was allocated for.
    pub fn ctx(&self) -> usize {
        self.ctx
    }
    /// Position the next [`Model::mtp_forward`] call runs at.
    pub fn mtp_pos(&self) -> usize {
        self.mtp_pos
    }
    /// Empty the MTP block's raw window and make its next call run at `pos`
    /// (e.g. the main model's position, ds4.c style, spec §6.3).
    pub fn reset_mtp(&mut self, model: &Model<B>, pos: usize) -> Result<()> {
        let half = self.numerics == Numerics::Official;
        self.mtp_layer = match &model.mtp {
            Some(m) => Some(model.layer_state(&m.block, self.ctx, half)?),
            None => None,
        };
        self.mtp_pos = pos;
        Ok(())
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
        self.layers
            .iter()
            .map(|_| self.pos.min(self.cfg.window))
            .collect()
    }
    /// Bytes of the filled part of the state that grows with the context
    /// (compressed and indexer rows, in their storage type).
    pub fn growing_bytes(&self, _be: &B) -> usize {
        let used = |c: &CompState<B>| c.n * c.width * c.elem;
        self.layers
            .iter()
            .map(|l| l.comp.as_ref().map_or(0, used) + l.idx.as_ref().map_or(0, used))
            .sum()
    }
    /// All session state bytes as allocated (raw rings, frontiers, row stores).
    pub fn state_bytes(&self, be: &B) -> usize {
        let comp = |c: &CompState<B>| {
            be.kv_bytes(&c.rows) + be.buf_bytes(&c.ring_kv) + be.buf_bytes(&c.ring_score)
        };
        self.layers
            .iter()
            .chain(self.mtp_layer.iter())
            .map(|l| {
                be.kv_bytes(&l.raw)
                    + l.comp.as_ref().map_or(0, comp)
                    + l.idx.as_ref().map_or(0, comp)
            })
            .sum()
    }
    /// Rows `row..row+n` of layer `l`'s compressed rows (tests, snapshots).
    pub fn read_compressed(&self, be: &B, l: usize, row: usize, n: usize) -> Result<Vec<f32>> {
        let cs = self.layers[l]
            .comp
            .as_ref()
            .context("layer has no compressor")?;
        ensure!(
            row + n <= cs.n,
            "rows {row}..{} of {} written",
            row + n,
            cs.n
        );
        be.kv_read(&cs.rows, row, n)
    }

    /// A deep copy of the whole decoding state (snapshot / restore): the copy
    /// and the original continue independently and bit-identically.
    pub fn try_clone(&self, be: &B) -> Result<Session<B>> {
        let comp = |c: &CompState<B>| -> Result<CompState<B>> {
            Ok(CompState {
                ring_kv: be.buf_clone(&c.ring_kv)?,
                ring_score: be.buf_clone(&c.ring_score)?,
                rows: be.kv_clone(&c.rows)?,
                n: c.n,
                width: c.width,
                elem: c.elem,
            })
        };
        let layer = |l: &LayerState<B>| -> Result<LayerState<B>> {
            Ok(LayerState {
                raw: be.kv_clone(&l.raw)?,
                comp: l.comp.as_ref().map(comp).transpose()?,
                idx: l.idx.as_ref().map(comp).transpose()?,
            })
        };
        Ok(Session {
            numerics: self.numerics,
            cfg: self.cfg.clone(),
            ctx: self.ctx,
            pos: self.pos,
            layers: self.layers.iter().map(layer).collect::<Result<_>>()?,
            mtp_layer: self.mtp_layer.as_ref().map(layer).transpose()?,
            mtp_pos: self.mtp_pos,
            last_hc: self.last_hc.as_ref().map(|h| be.buf_clone(h)).transpose()?,
        })
    }
}

/// The CPU's state is plain host memory: `Clone` is [`Session::try_clone`].
impl Clone for Session<crate::backend::Cpu> {
    fn clone(&self) -> Self {
        self.try_clone(&crate::backend::Cpu)
            .expect("CPU session copy cannot fail")
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
            geom: CompGeom {
                ratio,
                width,
                overlap,
            },
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
        Some(be.bind_idx(&t)?)
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
