//! Matrix × vector micro-benchmark at the decode shapes of the published
//! model (`gpu_check mvbench`): every kernel variant on random weights of the
//! published formats, timed with device events over enough copies that the
//! weights do not fit in L2, and checked against the CPU backend.

use super::{Cuda, CudaBuf, CudaMat, DevMem};
use crate::backend::{Backend, Cpu};
use crate::weights::TensorData;
use anyhow::Result;
use ds4_quant::GgmlType;

struct Case {
    name: &'static str,
    ty: GgmlType,
    cols: usize,
    rows: usize,
    /// stacked matrices (experts); slots > 0 picks `slots` of them per launch
    mats: usize,
    slots: usize,
    /// grouped projection: x has `groups` segments of `cols`
    groups: usize,
}

const fn dense(name: &'static str, ty: GgmlType, cols: usize, rows: usize) -> Case {
    Case {
        name,
        ty,
        cols,
        rows,
        mats: 1,
        slots: 0,
        groups: 1,
    }
}

fn cases() -> Vec<Case> {
    use GgmlType as T;
    vec![
        dense("q_a", T::Q8_0, 4096, 1024),
        dense("q_b", T::Q8_0, 1024, 32768),
        dense("kv", T::Q8_0, 4096, 512),
        Case {
            groups: 8,
            ..dense("o_a", T::Q8_0, 4096, 8192)
        },
        dense("o_b", T::Q8_0, 8192, 4096),
        dense("shexp_gate", T::Q8_0, 4096, 2048),
        dense("shexp_down", T::Q8_0, 2048, 4096),
        dense("head", T::Q8_0, 4096, 129280),
        dense("comp_kv", T::F16, 4096, 1024),
        dense("idx_q_b", T::F16, 1024, 8192),
        dense("idx_comp", T::F16, 4096, 256),
        dense("router", T::F16, 4096, 256),
        dense("hc_fn", T::F16, 16384, 24),
        Case {
            mats: 256,
            slots: 6,
            ..dense("exp_gate", T::Iq2Xxs, 4096, 2048)
        },
        Case {
            mats: 256,
            slots: 6,
            ..dense("exp_down", T::Q2K, 2048, 4096)
        },
    ]
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Random bytes of `n` elements of `ty` with finite, moderate scales.
fn random_tensor(ty: GgmlType, cols: usize, rows: usize, mats: usize, seed: u64) -> TensorData {
    let n = (cols * rows * mats) as u64;
    let len = ty.bytes_for(n).expect("size") as usize;
    let mut r = Rng(seed | 1);
    let mut b = vec![0u8; len];
    for c in b.chunks_mut(8) {
        let v = r.next().to_le_bytes();
        c.copy_from_slice(&v[..c.len()]);
    }
    let f16 = |v: f32| half::f16::from_f32(v).to_le_bytes();
    match ty {
        GgmlType::F16 => {
            for c in b.chunks_mut(2) {
                let v = u16::from_le_bytes([c[0], c[1]]);
                let h = (v & 0x83ff) | ((10 + (v >> 10) % 5) << 10);
                c.copy_from_slice(&h.to_le_bytes());
            }
        }
        GgmlType::F32 => {
            for c in b.chunks_mut(4) {
                let v = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                let f = (v >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
                c.copy_from_slice(&f.to_le_bytes());
            }
        }
        GgmlType::Q8_0 => {
            for blk in b.chunks_mut(34) {
                blk[..2].copy_from_slice(&f16(0.01));
            }
        }
        GgmlType::Q2K => {
            for blk in b.chunks_mut(84) {
                blk[80..82].copy_from_slice(&f16(0.02));
                blk[82..84].copy_from_slice(&f16(0.01));
            }
        }
        GgmlType::Iq2Xxs => {
            for blk in b.chunks_mut(66) {
                blk[..2].copy_from_slice(&f16(0.02));
            }
        }
        _ => {}
    }
    let mut dims = vec![cols, rows];
    if mats > 1 {
        dims.push(mats);
    }
    TensorData::from_bytes(b, ty, dims).expect("tensor")
}

fn rel_max(a: &[f32], b: &[f32]) -> f32 {
    let m = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
    a.iter().zip(b).fold(0f32, |e, (x, y)| e.max((x - y).abs())) / m
}

impl Cuda {
    /// Device microseconds per call of `run(i)` over 200 calls, after 3
    /// untimed ones.
    fn time_us(&self, mut run: impl FnMut(usize) -> Result<()>) -> Result<f64> {
        for i in 0..3 {
            run(i)?;
        }
        let n = 200;
        let t = self.timer()?;
        for i in 0..n {
            run(i)?;
        }
        Ok(self.timer_ms(t)? * 1e3 / n as f64)
    }

    /// One launch of the decode matvec for `c` on matrix `w`.
    fn bench_launch(&self, c: &Case, w: &CudaMat, ids: u64, x: &DevMem, y: &DevMem) -> Result<()> {
        if c.slots > 0 {
            // gate/up: all slots of one token share x (x_div = slots)
            self.mv(w, ids, x.ptr, c.cols, 0, c.slots, 1, y.ptr, c.rows, c.slots)
        } else {
            let rpg = if c.groups > 1 { c.rows / c.groups } else { 0 };
            self.mv(w, 0, x.ptr, c.cols * c.groups, rpg, 1, 1, y.ptr, c.rows, 1)
        }
    }

    /// Time every case with the one-warp-per-row kernels (`old`) and the
    /// dispatch in use (`new`); print one line per case. Returns the number
    /// of cases whose new output strays from the CPU reference by > 1e-5.
    pub fn mvbench(&self) -> Result<usize> {
        let mut bad = 0;
        // the card's copy bandwidth (read + write)
        let bytes = 1usize << 30;
        let a = DevMem::new(&self.dev, bytes)?;
        let b = DevMem::new(&self.dev, bytes)?;
        self.dev.dtod(b.ptr, a.ptr, bytes)?;
        let t = self.timer()?;
        for _ in 0..10 {
            self.dev.dtod(b.ptr, a.ptr, bytes)?;
        }
        let ms = self.timer_ms(t)?;
        println!(
            "copy bandwidth: {:.0} GB/s (1 GiB device-to-device, read + write)",
            20.0 * bytes as f64 / ms / 1e6
        );
        drop((a, b));
        for (ci, c) in cases().iter().enumerate() {
            let td = random_tensor(c.ty, c.cols, c.rows, c.mats, 17 + ci as u64);
            let one = td.bytes().len() / c.mats;
            let per_launch = if c.slots > 0 { one * c.slots } else { one };
            // enough copies that one pass over them does not fit in L2
            let copies = if c.mats > 1 {
                1
            } else {
                (256usize << 20).div_ceil(one).clamp(1, 32)
            };
            let mut mats = Vec::with_capacity(copies);
            for _ in 0..copies {
                mats.push(self.bind(&td)?);
            }
            let xn = c.cols * c.groups.max(1);
            let mut rng = Rng(99 + ci as u64);
            let xv: Vec<f32> = (0..xn)
                .map(|_| (rng.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
                .collect();
            let x = self.upload(&xv)?;
            let ysz = c.rows * c.slots.max(1);
            let y = DevMem::new(&self.dev, ysz * 4)?;
            let idsets: Vec<_> = (0..8)
                .map(|_| {
                    let v: Vec<i32> = (0..c.slots)
                        .map(|_| (rng.next() % c.mats as u64) as i32)
                        .collect();
                    self.upload_idx(&v)
                })
                .collect::<Result<_>>()?;
            let ids = |i: usize| {
                if c.slots > 0 {
                    idsets[i % 8].m.ptr
                } else {
                    0
                }
            };
            let run = |old: bool| -> Result<Vec<f32>> {
                Cuda::set_matvec_old(old);
                self.dev.memset0(y.ptr, ysz * 4)?;
                self.bench_launch(c, &mats[0], ids(0), &x.m, &y)?;
                let v = self.dev.dtoh::<f32>(y.ptr, ysz);
                Cuda::set_matvec_old(false);
                v
            };
            let y_old = run(true)?;
            let y_new = run(false)?;
            let vs_old = rel_max(&y_new, &y_old);
            let vs_cpu = if c.slots == 0 {
                let cm = Cpu.bind(&td)?;
                let cx = Cpu.upload(&xv)?;
                let r = if c.groups > 1 {
                    Cpu.matmul_grouped(&cm, &cx, 1, c.groups)?
                } else {
                    Cpu.matmul(&cm, &cx, 1)?
                };
                let r = Cpu.download(&r)?;
                let e = rel_max(&y_new, &r);
                if e > 1e-5 {
                    bad += 1;
                }
                format!("{e:.1e}")
            } else {
                "-".into()
            };
            let mut line = format!(
                "mv {:<10} {:>7} {:>6}x{:<5} slots {}:",
                c.name,
                c.ty.to_string(),
                c.rows,
                c.cols,
                c.slots
            );
            for (label, old) in [("old", true), ("new", false)] {
                Cuda::set_matvec_old(old);
                let us =
                    self.time_us(|i| self.bench_launch(c, &mats[i % copies], ids(i), &x.m, &y));
                Cuda::set_matvec_old(false);
                let us = us?;
                line += &format!(
                    " {label} {us:6.1} us {:5.0} GB/s |",
                    per_launch as f64 / us / 1e3
                );
            }
            let rpg = if c.groups > 1 { c.rows / c.groups } else { 0 };
            let kern = if c.slots == 0 && rpg == 0 && c.rows < 512 {
                "matvec_splitk"
            } else if c.ty == GgmlType::Iq2Xxs {
                "mvx_iq2"
            } else if c.ty == GgmlType::Q2K {
                "mvx_q2k"
            } else {
                self.chunked_kernel(&mats[0], rpg, 1, c.slots)
                    .map_or("matvec", |k| k.1)
            };
            println!("{line} new={kern} rel(new,old) {vs_old:.1e} rel(new,cpu) {vs_cpu}");
        }
        bad += self.moe_bench()?;
        bad += self.many_bench()?;
        bad += self.swiglu_bench()?;
        Ok(bad)
    }

    /// The shared expert's down projection (Q8_0, 4096 x 2048) of SwiGLU(g, u):
    /// the `swiglu` kernel then the chunked matvec, against `mvc_sw_R` with the
    /// SwiGLU formed while x is read; the same bits. Returns 1 if they differ.
    fn swiglu_bench(&self) -> Result<usize> {
        let (d, f) = (4096, 2048);
        let down = self.bind(&random_tensor(GgmlType::Q8_0, f, d, 1, 81))?;
        let mut rng = Rng(8);
        let mut v = || -> Result<CudaBuf> {
            let h: Vec<f32> = (0..f)
                .map(|_| 8.0 * ((rng.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5))
                .collect();
            self.upload(&h)
        };
        let (g, u) = (v()?, v()?);
        let limit = 3.0;
        let two = || -> Result<CudaBuf> {
            let mid = self.swiglu_k(&g, &u, 0, f, limit)?;
            self.matmul(&down, &mid, 1)
        };
        let one = || -> Result<CudaBuf> {
            self.down_swiglu(&down, &g, &u, 1, limit)?
                .ok_or_else(|| anyhow::anyhow!("fused SwiGLU down path not taken"))
        };
        let a = self.download(&two()?)?;
        let b = self.download(&one()?)?;
        let same = a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits());
        let mut line = "shared expert down of SwiGLU (Q8_0 4096x2048):".to_string();
        for (label, run) in [
            ("swiglu + matvec", &two as &dyn Fn() -> Result<CudaBuf>),
            ("mvc_sw", &one),
        ] {
            let us = self.time_us(|_| run().map(drop))?;
            line += &format!(" {label} {us:6.1} us |");
        }
        println!("{line} bitwise equal: {same}");
        Ok(usize::from(!same))
    }

    /// The seven projections of an attention layer's input (q_a, kv, the
    /// compressor's and the indexer's kv and gate, the indexer weights) one
    /// launch each against `matmul_many`. Returns 1 if they stray by > 1e-5.
    fn many_bench(&self) -> Result<usize> {
        use GgmlType as T;
        let shapes = [
            (T::Q8_0, 1024),
            (T::Q8_0, 512),
            (T::F16, 1024),
            (T::F16, 1024),
            (T::F16, 256),
            (T::F16, 256),
            (T::F16, 64),
        ];
        let d = 4096;
        let mats: Vec<CudaMat> = shapes
            .iter()
            .enumerate()
            .map(|(i, &(ty, rows))| self.bind(&random_tensor(ty, d, rows, 1, 90 + i as u64)))
            .collect::<Result<_>>()?;
        let bytes: usize = mats.iter().map(|m| m.m.bytes).sum();
        let refs: Vec<&CudaMat> = mats.iter().collect();
        let mut rng = Rng(6);
        let xv: Vec<f32> = (0..d)
            .map(|_| (rng.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
            .collect();
        let x = self.upload(&xv)?;
        let one =
            || -> Result<Vec<CudaBuf>> { refs.iter().map(|w| self.matmul(w, &x, 1)).collect() };
        let many = || self.matmul_many(&refs, &x, 1);
        let mut worst = 0f32;
        for (a, b) in one()?.iter().zip(many()?.iter()) {
            worst = worst.max(rel_max(&self.download(b)?, &self.download(a)?));
        }
        let mut line = format!("x projections of an attention layer (7 matrices), {bytes} B:");
        for (label, run) in [
            ("one by one", &one as &dyn Fn() -> Result<Vec<CudaBuf>>),
            ("matmul_many", &many),
        ] {
            let us = self.time_us(|_| run().map(drop))?;
            line += &format!(
                " {label} {us:6.1} us {:5.0} GB/s |",
                bytes as f64 / us / 1e3
            );
        }
        println!("{line} rel {worst:.1e}");
        Ok(usize::from(worst > 1e-5))
    }

    /// One decode token's routed experts (6 of 256, IQ2_XXS gate/up, Q2_K
    /// down): one launch per matrix plus the SwiGLU against the two fused
    /// launches, which must give the same bits. Returns 1 if they differ.
    fn moe_bench(&self) -> Result<usize> {
        use crate::backend::Routing;
        let (d, f, e, k) = (4096, 2048, 256, 6);
        let gate = self.bind(&random_tensor(GgmlType::Iq2Xxs, d, f, e, 71))?;
        let up = self.bind(&random_tensor(GgmlType::Iq2Xxs, d, f, e, 72))?;
        let down = self.bind(&random_tensor(GgmlType::Q2K, f, d, e, 73))?;
        let bytes = k * (2 * gate.mat_bytes as usize + down.mat_bytes as usize);
        let mut rng = Rng(5);
        let mut unit = || (rng.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
        let xv: Vec<f32> = (0..d).map(|_| 4.0 * unit()).collect();
        let x = self.upload(&xv)?;
        let routings: Vec<Routing<Cuda>> = (0..8)
            .map(|i| {
                let ids: Vec<i32> = (0..k).map(|j| ((i * 37 + j * 41) % e) as i32).collect();
                let w: Vec<f32> = (0..k).map(|j| 0.1 + 0.05 * j as f32).collect();
                Ok(Routing {
                    k,
                    ids: self.upload_idx(&ids)?,
                    weights: self.upload(&w)?,
                })
            })
            .collect::<Result<_>>()?;
        let limit = 10.0;
        let unfused = |r: &Routing<Cuda>| self.moe_unfused(&x, 1, r, &gate, &up, &down, limit);
        let fused = |r: &Routing<Cuda>| -> Result<CudaBuf> {
            self.moe_fused(&x, 1, r, &gate, &up, &down, limit)?
                .ok_or_else(|| anyhow::anyhow!("fused expert path not taken"))
        };
        let a = self.download(&unfused(&routings[0])?)?;
        let b = self.download(&fused(&routings[0])?)?;
        let same = a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits());
        let mut line = format!("moe decode token (6 x IQ2_XXS gate/up, Q2_K down), {bytes} B:");
        for (label, run) in [
            (
                "unfused",
                &unfused as &dyn Fn(&Routing<Cuda>) -> Result<CudaBuf>,
            ),
            ("fused", &fused),
        ] {
            let us = self.time_us(|i| run(&routings[i % routings.len()]).map(drop))?;
            line += &format!(
                " {label} {us:6.1} us {:5.0} GB/s |",
                bytes as f64 / us / 1e3
            );
        }
        println!("{line} bitwise equal: {same} (rel {:.1e})", rel_max(&b, &a));
        Ok(usize::from(!same))
    }
}
