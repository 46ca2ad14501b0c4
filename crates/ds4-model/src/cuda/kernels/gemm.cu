// ---------------------------------------------------------------------------
// Prefill (GEMM) path: weights decoded to f16 for cuBLAS, activations to f16.
// ---------------------------------------------------------------------------
// rows [r0, r0+nrows) of one matrix -> out [nrows, cols] f16. One thread per sub-block.
extern "C" __global__ void dequant_f16(int fmt, const u8* __restrict__ W, long long d_off,
                                       int cols, long long r0, long long nrows,
                                       u16* __restrict__ out) {
    int nsub = (cols + 31) / 32;
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= nrows * nsub) return;
    long long rr = i / nsub;
    int sb = (int)(i % nsub);
    long long r = r0 + rr;
    long long rb = row_bytes_dev(fmt, cols);
    const u8* row = W + r * rb;
    const u8* drow = W + d_off + r * (cols / 32) * 2;
    u16* o = out + rr * cols + sb * 32;
    if (sb * 32 + 32 > cols) {
        // float-format row tail: element by element (no register array)
        for (int c = sb * 32; c < cols; c++) o[c - sb * 32] = f2h(elem_float(fmt, row, c));
        return;
    }
    float w[32];
    decode_sub(fmt, row, drow, sb, w);
    if ((cols % 8) == 0) {
        uint4* o4 = (uint4*)o;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            uint4 v;
            v.x = (u32)f2h(w[8 * i]) | ((u32)f2h(w[8 * i + 1]) << 16);
            v.y = (u32)f2h(w[8 * i + 2]) | ((u32)f2h(w[8 * i + 3]) << 16);
            v.z = (u32)f2h(w[8 * i + 4]) | ((u32)f2h(w[8 * i + 5]) << 16);
            v.w = (u32)f2h(w[8 * i + 6]) | ((u32)f2h(w[8 * i + 7]) << 16);
            o4[i] = v;
        }
    } else {
#pragma unroll
        for (int c = 0; c < 32; c++) o[c] = f2h(w[c]);
    }
}
extern "C" __global__ void f32_to_f16(const float* __restrict__ x, long long n, u16* __restrict__ out) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = f2h(x[i]);
}
// out[j] = f16(x[rows[j] / div]) rows of width `width` (MoE token gather).
extern "C" __global__ void gather_f16(const float* __restrict__ x, int width, const int* rows,
                                      int div, int n, u16* __restrict__ out) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)n * width) return;
    int j = (int)(i / width), c = (int)(i % width);
    out[i] = f2h(x[(long long)(rows[j] / div) * width + c]);
}
// slots[rows[j]] = y[j] (width floats).
extern "C" __global__ void scatter_rows(const float* __restrict__ y, int width, const int* rows,
                                        int n, float* __restrict__ slots) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)n * width) return;
    int j = (int)(i / width), c = (int)(i % width);
    slots[(long long)rows[j] * width + c] = y[i];
}
// mid[j] = f16(w[rows[j]] * silu(min(g,l)) * clamp(u,-l,l)); g, u: [n, width]
extern "C" __global__ void swiglu_f16(const float* g, const float* u, const float* w,
                                      const int* rows, int width, int n, float limit,
                                      u16* out) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)n * width) return;
    int j = (int)(i / width);
    float gc = fminf(g[i], limit);
    float uc = fminf(fmaxf(u[i], -limit), limit);
    float s = gc / (1.f + expf(-gc));
    out[i] = f2h(w[rows[j]] * (s * uc));
}
