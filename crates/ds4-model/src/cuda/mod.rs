//! The CUDA backend: weights resident in device memory, every op a kernel of
//! `kernels/*.cu` (compiled by NVRTC at start, cached on disk), no host round
//! trip inside a forward pass except the logits the caller downloads.
//!
//! Built without the CUDA toolkit: the driver and NVRTC are loaded at run
//! time, so [`Cuda::open`] on a machine without a GPU returns an error.

pub mod bench;
pub mod compile;
pub mod dev;
pub mod gemm;
mod matmul;
mod ops;
mod seq;

use crate::backend::{
    Backend, CompGeom, CompVis, HashRoute, Pos, RopePos, RopeTable, Routing, Seq,
};
use crate::config::Config;
use crate::weights::TensorData;
use anyhow::{bail, ensure, Result};
use cudarc::driver::sys::CUdeviceptr;
use dev::{Args, DevMem, Device};
use ds4_quant::GgmlType;
use std::sync::Arc;

pub use dev::{device_count, driver_available};

/// Every kernel the backend launches (looked up once at start).
pub const KERNELS: &[&str] = &[
    "matvec",
    "matvec_splitk",
    "matvec_scalar",
    "mvc_1_1",
    "mvc_2_1",
    "mvc_4_1",
    "mvc_8_1",
    "mvc_1_8",
    "mvc_2_8",
    "mvc_4_8",
    "mvc_8_8",
    "mvc_sw_1",
    "mvc_sw_2",
    "mvc_sw_4",
    "mvc_sw_8",
    "mvm_1",
    "mvm_2",
    "mvm_4",
    "mvm_8",
    "mvx_iq2",
    "mvx_q2k",
    "mvs_gate_up",
    "mvs_down",
    "repack_q8_0",
    "dequant_rows_f32",
    "rms_norm",
    "add_inplace",
    "add_row_bcast",
    "scale_inplace",
    "f16_round",
    "add_position_rows",
    "gather_rows",
    "rope",
    "norm_rope",
    "fp8_sim",
    "hadamard_fp4",
    "hc_pre_finish",
    "hc_head_finish",
    "hc_post",
    "route",
    "swiglu",
    "sum_slots",
    "argmax_rows",
    "kv_write",
    "kv_read",
    "comp_pool",
    "comp_ring_store",
    "idx_scores",
    "idx_topk",
    "attention512_split",
    "attention_any",
    "attention512_h8",
    "dequant_f16",
    "f32_to_f16",
    "gather_f16",
    "scatter_rows",
    "swiglu_f16",
];

/// Tokens per matvec launch (the kernel's MV_MAX_TOK).
const MV_TOK: usize = 8;
/// Decode attention (`attention512_split`): chunks of a multiple of this many
/// visible rows (the kernel's ATT_STAGE), at most this many chunks.
const ATT_CHUNK: usize = 16;
const ATT_MAX_CHUNKS: usize = 24;
/// Completion counters for the split attention's in-kernel merge: (token,
/// 8-head group) pairs per launch.
const ATT_COUNTERS: usize = 4096;

/// The CUDA backend (one device, one stream).
#[derive(Clone)]
pub struct Cuda {
    dev: Arc<Device>,
    blas: Option<Arc<gemm::Blas>>,
    /// Batches of at least this many rows take the cuBLAS (f16 operand) path.
    gemm_min: usize,
    /// Zeroed completion counters of `attention512_split` (ATT_COUNTERS i32s;
    /// every launch leaves them zero again).
    att_counters: Arc<DevMem>,
}

/// `DS4_CUDA_MV=old` (or [`Cuda::set_matvec_old`]): the one-warp-per-row
/// matvec for every format, the chunked kernels off (A/B runs).
static MV_OLD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// [`Cuda::set_attention_generic`]: the generic attention kernel for every
/// head size (the reference the 512-wide kernels are checked against).
static ATT_ANY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Rows from which matmuls use cuBLAS (`DS4_CUDA_GEMM_MIN`, 0 = never).
fn gemm_min() -> usize {
    match std::env::var("DS4_CUDA_GEMM_MIN") {
        Ok(v) => v.parse().unwrap_or(32),
        Err(_) => 32,
    }
}

pub struct CudaBuf {
    m: DevMem,
    n: usize,
}
pub struct CudaIdx {
    m: DevMem,
    n: usize,
}
pub struct CudaKv {
    m: DevMem,
    rows: usize,
    width: usize,
    half: bool,
}
pub struct CudaMat {
    m: DevMem,
    fmt: i32,
    rows: usize,
    cols: usize,
    mats: usize,
    mat_bytes: i64,
    d_off: i64,
}
pub struct CudaRope {
    inv32: DevMem,
    inv64: DevMem,
    npairs: usize,
}

fn fmt_code(ty: GgmlType) -> Result<i32> {
    Ok(match ty {
        GgmlType::F32 => 0,
        GgmlType::F16 => 1,
        GgmlType::Bf16 => 2,
        GgmlType::Q8_0 => 3,
        GgmlType::Q2K => 4,
        GgmlType::Q4K => 5,
        GgmlType::Iq2Xxs => 6,
        other => bail!("weights of type {other} are not supported by the CUDA backend"),
    })
}

fn blocks(n: usize, per: usize) -> u32 {
    n.div_ceil(per).max(1) as u32
}

impl Cuda {
    /// Open GPU `ordinal`: load the driver, compile (or load from the cache)
    /// the kernels for its architecture, upload the IQ2_XXS tables.
    pub fn open(ordinal: usize) -> Result<Cuda> {
        let dev = Device::open(ordinal)?;
        let blas = gemm::Blas::new(dev.stream)?.map(Arc::new);
        let att_counters = Arc::new(DevMem::zeroed(&dev, ATT_COUNTERS * 4)?);
        let be = Cuda {
            dev,
            blas,
            gemm_min: gemm_min(),
            att_counters,
        };
        if std::env::var("DS4_CUDA_MV").is_ok_and(|v| v == "old") {
            Cuda::set_matvec_old(true);
        }
        be.upload_tables()?;
        Ok(be)
    }

    fn upload_tables(&self) -> Result<()> {
        // the IQ2_XXS grid and sign tables live in __device__ globals
        use cudarc::driver::result as cu;
        self.dev.bind()?;
        for (name, bytes) in [
            ("g_iq2xxs_grid", unsafe {
                std::slice::from_raw_parts(
                    ds4_quant::tables::IQ2XXS_GRID.as_ptr() as *const u8,
                    256 * 8,
                )
            }),
            ("g_ksigns", &ds4_quant::tables::KSIGNS_IQ2XS[..]),
        ] {
            let c = std::ffi::CString::new(name).unwrap();
            // SAFETY: the module is loaded and defines the symbol.
            let (ptr, size) = unsafe { cu::module::get_global(self.dev_module(), c) }
                .map_err(|e| anyhow::anyhow!("CUDA symbol {name}: {e:?}"))?;
            ensure!(
                size == bytes.len(),
                "table {name} has {size} bytes on the device"
            );
            self.dev.htod(ptr, bytes)?;
        }
        Ok(())
    }

    fn dev_module(&self) -> cudarc::driver::sys::CUmodule {
        self.dev.module
    }

    /// Device name and compute capability.
    pub fn describe(&self) -> String {
        format!(
            "{} (sm_{}{}, {} SMs, {})",
            self.dev.name,
            self.dev.sm.0,
            self.dev.sm.1,
            self.dev.n_sm,
            match (&self.blas, self.gemm_min) {
                (Some(_), n) if n > 0 => format!("cuBLAS f16 GEMM from {n} rows"),
                _ => "matvec kernels only".to_string(),
            }
        )
    }

    /// GPU time per kernel since the last call (`DS4_CUDA_PROFILE` set).
    pub fn profile_report(&self) -> Result<Vec<(String, usize, f64)>> {
        self.dev.profile_report()
    }

    /// Start a GPU-time measurement.
    pub fn timer(&self) -> Result<dev::GpuMark> {
        self.dev.mark()
    }
    /// GPU milliseconds since `t` (synchronises).
    pub fn timer_ms(&self, t: dev::GpuMark) -> Result<f64> {
        self.dev.elapsed_ms(t)
    }

    /// `(free, total)` device memory in bytes.
    /// Host seconds spent waiting for the GPU so far (see [`dev::Device::sync_wait_ns`]).
    pub fn sync_wait_s(&self) -> f64 {
        self.dev
            .sync_wait_ns
            .load(std::sync::atomic::Ordering::Relaxed) as f64
            / 1e9
    }

    /// `(kernel launches, host seconds inside cuLaunchKernel)` so far.
    pub fn host_stats(&self) -> (u64, f64) {
        self.dev.host_stats()
    }

    /// See [`dev::Device::host_detail`].
    pub fn host_detail(&self) -> ([u64; 6], f64) {
        self.dev.host_detail()
    }

    /// Use the generic attention kernel for every head size (process-wide).
    pub fn set_attention_generic(on: bool) {
        ATT_ANY.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Use the one-warp-per-row matvec kernels only (process-wide).
    pub fn set_matvec_old(on: bool) {
        MV_OLD.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// See [`dev::Device::profiler_range`].
    pub fn profiler_range(&self, on: bool) -> Result<()> {
        self.dev.profiler_range(on)
    }

    pub fn mem_info(&self) -> (usize, usize) {
        self.dev.mem_info()
    }

    fn buf(&self, n: usize) -> Result<CudaBuf> {
        Ok(CudaBuf {
            m: DevMem::new(&self.dev, n * 4)?,
            n,
        })
    }
    fn idx(&self, n: usize) -> Result<CudaIdx> {
        Ok(CudaIdx {
            m: DevMem::new(&self.dev, n * 4)?,
            n,
        })
    }

    fn launch(
        &self,
        name: &str,
        grid: (u32, u32, u32),
        block: u32,
        smem: u32,
        a: &mut Args,
    ) -> Result<()> {
        self.dev.launch(name, grid, (block, 1, 1), smem, a)
    }
}

impl Backend for Cuda {
    type Buf = CudaBuf;
    type Idx = CudaIdx;
    type Kv = CudaKv;
    type Mat = CudaMat;
    type Rope = CudaRope;

    fn name(&self) -> String {
        format!("cuda: {}", self.describe())
    }

    fn mem_free(&self) -> Option<usize> {
        Some(self.mem_info().0)
    }

    fn profile_report(&self) -> Vec<(String, usize, f64)> {
        self.dev.profile_report().unwrap_or_default()
    }

    fn bind(&self, t: &TensorData) -> Result<CudaMat> {
        let fmt = fmt_code(t.ty)?;
        ensure!(
            !t.dims.is_empty() && t.dims.len() <= 3,
            "weight with dims {:?} is not a matrix",
            t.dims
        );
        let cols = t.dims[0];
        let rows = t.dims.get(1).copied().unwrap_or(1);
        let mats = t.dims.get(2).copied().unwrap_or(1);
        let bytes = t.bytes();
        if t.ty == GgmlType::Q8_0 {
            // [qs | d] per matrix for 16-byte loads
            let per = rows * cols;
            let mat_bytes = per + per / 32 * 2;
            let m = DevMem::new(&self.dev, mat_bytes * mats)?;
            let raw = DevMem::new(&self.dev, bytes.len())?;
            self.dev.htod(raw.ptr, bytes)?;
            let nb = per / 32;
            for e in 0..mats {
                let mut a = Args::new();
                a.p(raw.ptr + (e * nb * 34) as u64)
                    .p(m.ptr + (e * mat_bytes) as u64)
                    .p(m.ptr + (e * mat_bytes + per) as u64)
                    .l(nb as i64);
                self.launch("repack_q8_0", (blocks(nb, 256), 1, 1), 256, 0, &mut a)?;
            }
            self.dev.sync()?;
            return Ok(CudaMat {
                m,
                fmt,
                rows,
                cols,
                mats,
                mat_bytes: mat_bytes as i64,
                d_off: per as i64,
            });
        }
        let m = DevMem::new(&self.dev, bytes.len())?;
        self.dev.htod(m.ptr, bytes)?;
        Ok(CudaMat {
            m,
            fmt,
            rows,
            cols,
            mats,
            mat_bytes: (bytes.len() / mats) as i64,
            d_off: 0,
        })
    }

    fn bind_vec(&self, t: &TensorData) -> Result<CudaBuf> {
        let v = crate::backend::Cpu.bind_vec(t)?;
        self.upload(&v)
    }

    fn bind_idx(&self, t: &TensorData) -> Result<CudaIdx> {
        let v = crate::backend::Cpu.bind_idx(t)?;
        self.upload_idx(&v)
    }

    fn bind_rope(&self, t: &RopeTable) -> Result<CudaRope> {
        let inv32 = DevMem::new(&self.dev, t.inv_f32.len() * 4)?;
        self.dev.htod(inv32.ptr, &t.inv_f32)?;
        let inv64 = DevMem::new(&self.dev, t.inv_f64.len() * 8)?;
        self.dev.htod(inv64.ptr, &t.inv_f64)?;
        Ok(CudaRope {
            inv32,
            inv64,
            npairs: t.inv_f32.len(),
        })
    }

    fn upload(&self, x: &[f32]) -> Result<CudaBuf> {
        let b = self.buf(x.len())?;
        if !x.is_empty() {
            self.dev.htod(b.m.ptr, x)?;
        }
        Ok(b)
    }
    fn upload_idx(&self, x: &[i32]) -> Result<CudaIdx> {
        let b = self.idx(x.len())?;
        if !x.is_empty() {
            self.dev.htod(b.m.ptr, x)?;
        }
        Ok(b)
    }
    fn download(&self, b: &CudaBuf) -> Result<Vec<f32>> {
        if b.n == 0 {
            return Ok(Vec::new());
        }
        self.dev.dtoh(b.m.ptr, b.n)
    }
    fn download_idx(&self, b: &CudaIdx) -> Result<Vec<i32>> {
        if b.n == 0 {
            return Ok(Vec::new());
        }
        self.dev.dtoh(b.m.ptr, b.n)
    }
    fn zeros(&self, n: usize) -> Result<CudaBuf> {
        Ok(CudaBuf {
            m: DevMem::zeroed(&self.dev, n * 4)?,
            n,
        })
    }
    fn scratch(&self, n: usize) -> Result<CudaBuf> {
        self.buf(n)
    }
    fn len(&self, b: &CudaBuf) -> usize {
        b.n
    }
    fn buf_bytes(&self, b: &CudaBuf) -> usize {
        b.n * 4
    }
    fn slice_rows(&self, b: &CudaBuf, width: usize, start: usize, n: usize) -> Result<CudaBuf> {
        ensure!((start + n) * width <= b.n, "rows outside the buffer");
        let o = self.buf(n * width)?;
        if n * width > 0 {
            self.dev
                .dtod(o.m.ptr, b.m.ptr + (start * width * 4) as u64, n * width * 4)?;
        }
        Ok(o)
    }
    fn gather_rows(&self, b: &CudaBuf, width: usize, rows: &[usize]) -> Result<CudaBuf> {
        ensure!(
            rows.iter().all(|&r| (r + 1) * width <= b.n),
            "gathered row outside the buffer"
        );
        let list = self.upload_idx(&rows.iter().map(|&r| r as i32).collect::<Vec<_>>())?;
        let o = self.buf(rows.len() * width)?;
        let mut a = Args::new();
        a.p(b.m.ptr)
            .i(width as i32)
            .p(list.m.ptr)
            .i(rows.len() as i32)
            .p(o.m.ptr);
        self.launch("gather_rows", (blocks(o.n, 256), 1, 1), 256, 0, &mut a)?;
        Ok(o)
    }
    fn sync(&self) -> Result<()> {
        self.dev.sync()
    }

    fn kv_alloc(&self, rows: usize, width: usize, half: bool) -> Result<CudaKv> {
        let el = if half { 2 } else { 4 };
        Ok(CudaKv {
            m: DevMem::zeroed(&self.dev, rows * width * el)?,
            rows,
            width,
            half,
        })
    }
    fn kv_bytes(&self, k: &CudaKv) -> usize {
        k.m.bytes
    }
    fn kv_clone(&self, k: &CudaKv) -> Result<CudaKv> {
        let m = DevMem::new(&self.dev, k.m.bytes)?;
        self.dev.dtod(m.ptr, k.m.ptr, k.m.bytes)?;
        Ok(CudaKv {
            m,
            rows: k.rows,
            width: k.width,
            half: k.half,
        })
    }
    fn buf_clone(&self, b: &CudaBuf) -> Result<CudaBuf> {
        let o = self.buf(b.n)?;
        if b.n > 0 {
            self.dev.dtod(o.m.ptr, b.m.ptr, b.n * 4)?;
        }
        Ok(o)
    }
    fn kv_write(
        &self,
        dst: &mut CudaKv,
        dst_row: usize,
        src: &CudaBuf,
        src_row: usize,
        n: usize,
        ring: bool,
    ) -> Result<()> {
        ensure!(
            (src_row + n) * dst.width <= src.n,
            "KV write reads past its source"
        );
        if !ring {
            ensure!(
                dst_row + n <= dst.rows,
                "KV store full: {} rows, writing {}..{}",
                dst.rows,
                dst_row,
                dst_row + n
            );
        }
        let mut a = Args::new();
        a.p(dst.m.ptr)
            .i(dst.half as i32)
            .i(dst.rows as i32)
            .i(dst_row as i32)
            .i(ring as i32)
            .p(src.m.ptr)
            .i(src_row as i32)
            .i(n as i32)
            .i(dst.width as i32);
        self.launch(
            "kv_write",
            (blocks(n * dst.width, 256), 1, 1),
            256,
            0,
            &mut a,
        )
    }
    fn kv_read(&self, k: &CudaKv, row: usize, n: usize) -> Result<Vec<f32>> {
        ensure!(row + n <= k.rows, "KV read past the store");
        let o = self.buf(n * k.width)?;
        let mut a = Args::new();
        a.p(k.m.ptr)
            .i(k.half as i32)
            .i(row as i32)
            .i(n as i32)
            .i(k.width as i32)
            .p(o.m.ptr);
        self.launch("kv_read", (blocks(o.n, 256), 1, 1), 256, 0, &mut a)?;
        self.download(&o)
    }

    fn embed_hc(
        &self,
        table: &CudaMat,
        ids: &CudaIdx,
        host_ids: &[u32],
        n_hc: usize,
    ) -> Result<CudaBuf> {
        if let Some(&bad) = host_ids.iter().find(|&&i| i as usize >= table.rows) {
            bail!("token id {bad} outside the vocabulary of {}", table.rows);
        }
        let d = table.cols;
        let out = self.buf(host_ids.len() * n_hc * d)?;
        let nsub = d.div_ceil(32);
        let mut a = Args::new();
        a.i(table.fmt)
            .p(table.m.ptr)
            .l(table.d_off)
            .i(d as i32)
            .p(ids.m.ptr)
            .i(host_ids.len() as i32)
            .i(n_hc as i32)
            .p(out.m.ptr);
        self.launch(
            "dequant_rows_f32",
            (blocks(host_ids.len() * nsub, 128), 1, 1),
            128,
            0,
            &mut a,
        )?;
        Ok(out)
    }

    fn matmul(&self, w: &CudaMat, x: &CudaBuf, rows: usize) -> Result<CudaBuf> {
        self.dense(w, x, rows, 1)
    }

    fn matmul_grouped(
        &self,
        w: &CudaMat,
        x: &CudaBuf,
        rows: usize,
        groups: usize,
    ) -> Result<CudaBuf> {
        self.dense(w, x, rows, groups)
    }

    fn matmul_many(&self, ws: &[&CudaMat], x: &CudaBuf, rows: usize) -> Result<Vec<CudaBuf>> {
        self.matmul_many_impl(ws, x, rows)
    }

    fn rms_norm(&self, x: &mut CudaBuf, width: usize, w: Option<&CudaBuf>, eps: f32) -> Result<()> {
        self.rms_norm_op(x, width, w, eps)
    }

    fn rope(
        &self,
        x: &mut CudaBuf,
        heads: usize,
        head_dim: usize,
        pos: RopePos<'_, '_, Self>,
        table: &CudaRope,
        inverse: bool,
        precise: bool,
    ) -> Result<()> {
        self.rope_op(x, heads, head_dim, pos, table, inverse, precise)
    }

    fn norm_rope(
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
        self.norm_rope_op(x, heads, head_dim, w, eps, pos, table, precise, kv_round)
    }

    fn fp8_sim(&self, x: &mut CudaBuf, width: usize, nope: usize) -> Result<()> {
        self.fp8_sim_op(x, width, nope)
    }

    fn f16_round(&self, x: &mut CudaBuf) -> Result<()> {
        self.f16_round_op(x)
    }

    fn hadamard_fp4(&self, x: &mut CudaBuf, width: usize) -> Result<()> {
        self.hadamard_fp4_op(x, width)
    }

    fn hc_pre(
        &self,
        x: &CudaBuf,
        rows: usize,
        cfg: &Config,
        fn_: &CudaMat,
        base: &CudaBuf,
        scale: &CudaBuf,
    ) -> Result<(CudaBuf, CudaBuf, CudaBuf)> {
        self.hc_pre_op(x, rows, cfg, fn_, base, scale)
    }

    fn hc_pre_norm(
        &self,
        x: &CudaBuf,
        rows: usize,
        cfg: &Config,
        fn_: &CudaMat,
        base: &CudaBuf,
        scale: &CudaBuf,
        w: &CudaBuf,
    ) -> Result<(CudaBuf, CudaBuf, CudaBuf)> {
        self.hc_pre_norm_op(x, rows, cfg, fn_, base, scale, w)
    }

    fn hc_post(
        &self,
        x: &mut CudaBuf,
        o: &CudaBuf,
        post: &CudaBuf,
        comb: &CudaBuf,
        cfg: &Config,
    ) -> Result<()> {
        self.hc_post_op(x, o, post, comb, cfg)
    }

    fn hc_head(
        &self,
        x: &CudaBuf,
        rows: usize,
        cfg: &Config,
        fn_: &CudaMat,
        base: &CudaBuf,
        scale: &CudaBuf,
    ) -> Result<CudaBuf> {
        self.hc_head_op(x, rows, cfg, fn_, base, scale)
    }

    fn add(&self, a_: &mut CudaBuf, b: &CudaBuf) -> Result<()> {
        ensure!(a_.n == b.n, "add of {} and {} values", a_.n, b.n);
        let mut a = Args::new();
        a.p(a_.m.ptr).p(b.m.ptr).l(a_.n as i64);
        self.launch("add_inplace", (blocks(a_.n, 256), 1, 1), 256, 0, &mut a)
    }

    fn add_row_broadcast(&self, a_: &mut CudaBuf, row: &CudaBuf) -> Result<()> {
        ensure!(
            row.n > 0 && a_.n.is_multiple_of(row.n),
            "broadcast add shape"
        );
        let mut a = Args::new();
        a.p(a_.m.ptr).p(row.m.ptr).i(row.n as i32).l(a_.n as i64);
        self.launch("add_row_bcast", (blocks(a_.n, 256), 1, 1), 256, 0, &mut a)
    }

    fn scale(&self, a_: &mut CudaBuf, s: f32) -> Result<()> {
        let mut a = Args::new();
        a.p(a_.m.ptr).f(s).l(a_.n as i64);
        self.launch("scale_inplace", (blocks(a_.n, 256), 1, 1), 256, 0, &mut a)
    }

    fn add_position_rows(
        &self,
        x: &mut CudaBuf,
        width: usize,
        table: &CudaBuf,
        pos: &Pos<'_, Self>,
    ) -> Result<()> {
        let rows = x.n / width.max(1);
        let mut a = Args::new();
        a.p(x.m.ptr)
            .i(width as i32)
            .p(table.m.ptr)
            .i((table.n / width) as i32)
            .p(pos.dev.m.ptr)
            .i(rows as i32);
        self.launch(
            "add_position_rows",
            (blocks(x.n, 256), 1, 1),
            256,
            0,
            &mut a,
        )
    }

    fn route(
        &self,
        logits: &CudaBuf,
        rows: usize,
        n_exp: usize,
        k: usize,
        bias: Option<&CudaBuf>,
        hash: Option<HashRoute<'_, Self>>,
        scale: f32,
    ) -> Result<Routing<Self>> {
        self.route_op(logits, rows, n_exp, k, bias, hash, scale)
    }

    fn moe(
        &self,
        x: &CudaBuf,
        rows: usize,
        routing: &Routing<Self>,
        gate: &CudaMat,
        up: &CudaMat,
        down: &CudaMat,
        limit: f32,
    ) -> Result<CudaBuf> {
        self.moe_sum(x, rows, routing, gate, up, down, limit, None)
    }

    fn moe_plus(
        &self,
        x: &CudaBuf,
        rows: usize,
        routing: &Routing<Self>,
        gate: &CudaMat,
        up: &CudaMat,
        down: &CudaMat,
        limit: f32,
        add: &CudaBuf,
    ) -> Result<CudaBuf> {
        self.moe_sum(x, rows, routing, gate, up, down, limit, Some(add))
    }

    fn swiglu_ffn(
        &self,
        x: &CudaBuf,
        rows: usize,
        gate: &CudaMat,
        up: &CudaMat,
        down: &CudaMat,
        limit: f32,
    ) -> Result<CudaBuf> {
        let mut gu = self.matmul_many(&[gate, up], x, rows)?.into_iter();
        let (g, u) = match (gu.next(), gu.next()) {
            (Some(g), Some(u)) => (g, u),
            _ => anyhow::bail!("matmul_many returned too few outputs"),
        };
        if let Some(y) = self.down_swiglu(down, &g, &u, rows, limit)? {
            return Ok(y);
        }
        let mid = self.swiglu_k(&g, &u, 0, gate.rows, limit)?;
        self.matmul(down, &mid, rows)
    }

    fn argmax(&self, x: &CudaBuf, width: usize) -> Result<Vec<u32>> {
        ensure!(width > 0 && x.n.is_multiple_of(width), "argmax shape");
        let rows = x.n / width;
        let o = self.idx(rows)?;
        let mut a = Args::new();
        a.p(x.m.ptr).i(width as i32).p(o.m.ptr);
        self.launch("argmax_rows", (rows as u32, 1, 1), 1024, 0, &mut a)?;
        Ok(self
            .download_idx(&o)?
            .into_iter()
            .map(|v| v as u32)
            .collect())
    }

    fn compress(
        &self,
        ring_kv: &mut CudaBuf,
        ring_score: &mut CudaBuf,
        kv: &CudaBuf,
        score: &CudaBuf,
        seq: Seq,
        g: CompGeom,
    ) -> Result<Option<CudaBuf>> {
        self.compress_op(ring_kv, ring_score, kv, score, seq, g)
    }

    fn indexer_topk(
        &self,
        q: &CudaBuf,
        w: &CudaBuf,
        rows: &CudaKv,
        n_rows: usize,
        seq: Seq,
        heads: usize,
        dim: usize,
        k: usize,
    ) -> Result<CudaIdx> {
        self.indexer_topk_op(q, w, rows, n_rows, seq, heads, dim, k)
    }

    fn attention(
        &self,
        out: &mut CudaBuf,
        q: &CudaBuf,
        kv: &CudaBuf,
        raw: &CudaKv,
        comp: Option<&CudaKv>,
        vis: CompVis<'_, Self>,
        seq: Seq,
        window: usize,
        heads: usize,
        hd: usize,
        sinks: &CudaBuf,
        scale: f32,
    ) -> Result<()> {
        self.attention_op(
            out, q, kv, raw, comp, vis, seq, window, heads, hd, sinks, scale,
        )
    }
}
