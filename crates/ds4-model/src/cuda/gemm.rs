//! cuBLAS (loaded at run time) for the prefill path: f16 operands, f32
//! accumulation and output. Weights are decoded to f16 per call
//! (`dequant_f16`), activations converted (`f32_to_f16`).

use anyhow::{bail, Result};
use cudarc::cublas::sys as cb;
use cudarc::driver::sys::{CUdeviceptr, CUstream};

pub struct Blas {
    h: cb::cublasHandle_t,
}

// SAFETY: the handle is used from one stream; cuBLAS handles may be used from
// any thread as long as calls are not concurrent, which the model guarantees
// (one forward call at a time per backend).
unsafe impl Send for Blas {}
unsafe impl Sync for Blas {}

fn ck(s: cb::cublasStatus_t, what: &str) -> Result<()> {
    if s != cb::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
        bail!("cuBLAS {what}: {s:?}");
    }
    Ok(())
}

impl Blas {
    /// A handle on `stream`, or `None` when libcublas cannot be loaded.
    pub fn new(stream: CUstream) -> Result<Option<Blas>> {
        // SAFETY: only tries to dlopen the candidate library names.
        if !unsafe { cb::is_culib_present() } {
            return Ok(None);
        }
        let mut h = std::ptr::null_mut();
        // SAFETY: out-parameter; the stream outlives the handle.
        unsafe {
            ck(cb::cublasCreate_v2(&mut h), "create")?;
            ck(
                cb::cublasSetStream_v2(h, stream as cb::cudaStream_t),
                "set stream",
            )?;
        }
        Ok(Some(Blas { h }))
    }

    /// Column-major `C[m×n] = Aᵀ B` with `A: [k×m]` (row-major weights
    /// `[m][k]`), `B: [k×n]` (row-major activations `[n][k]`), batched with
    /// strides (elements).
    #[allow(clippy::too_many_arguments)]
    pub fn gemm(
        &self,
        m: usize,
        n: usize,
        k: usize,
        a: CUdeviceptr,
        lda: usize,
        stride_a: usize,
        b: CUdeviceptr,
        ldb: usize,
        stride_b: usize,
        c: CUdeviceptr,
        ldc: usize,
        stride_c: usize,
        batch: usize,
    ) -> Result<()> {
        let alpha = 1.0f32;
        let beta = 0.0f32;
        // SAFETY: the pointers are device allocations of the given shapes.
        unsafe {
            ck(
                cb::cublasGemmStridedBatchedEx(
                    self.h,
                    cb::cublasOperation_t::CUBLAS_OP_T,
                    cb::cublasOperation_t::CUBLAS_OP_N,
                    m as i32,
                    n as i32,
                    k as i32,
                    &alpha as *const f32 as *const _,
                    a as *const _,
                    cb::cudaDataType::CUDA_R_16F,
                    lda as i32,
                    stride_a as i64,
                    b as *const _,
                    cb::cudaDataType::CUDA_R_16F,
                    ldb as i32,
                    stride_b as i64,
                    &beta as *const f32 as *const _,
                    c as *mut _,
                    cb::cudaDataType::CUDA_R_32F,
                    ldc as i32,
                    stride_c as i64,
                    batch as i32,
                    cb::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                    cb::cublasGemmAlgo_t::CUBLAS_GEMM_DFALT,
                ),
                "GemmStridedBatchedEx",
            )
        }
    }
}

impl Drop for Blas {
    fn drop(&mut self) {
        // SAFETY: created in new, destroyed once.
        unsafe {
            let _ = cb::cublasDestroy_v2(self.h);
        }
    }
}
