// ds4-rs CUDA kernels (compiled at run time by NVRTC; no headers needed).
// Layouts follow the CPU backend (crates/ds4-model/src/backend/cpu.rs):
// activations are row-major f32, weights keep their GGUF block layout
// (Q8_0 repacked into [qs | d] for 16-byte loads), KV stores are f32 or f16.

typedef unsigned char u8;
typedef signed char i8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif

#define FMT_F32 0
#define FMT_F16 1
#define FMT_BF16 2
#define FMT_Q8_0 3
#define FMT_Q2_K 4
#define FMT_Q4_K 5
#define FMT_IQ2_XXS 6

__device__ __forceinline__ float h2f(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
__device__ __forceinline__ u16 f2h(float f) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}
__device__ __forceinline__ float bf2f(u16 h) { return __uint_as_float(((u32)h) << 16); }
__device__ __forceinline__ u16 ld16(const u8* p) { return *(const u16*)p; }
__device__ __forceinline__ u32 ld32(const u8* p) { return *(const u32*)p; }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// IQ2_XXS lookup tables, filled by the host (ggml's iq2xxs_grid / ksigns).
__device__ u64 g_iq2xxs_grid[256];
__device__ u8 g_ksigns[128];

// ---------------------------------------------------------------------------
// Weight decoding: 32 consecutive weights ("sub-block" sb) of one row.
// Row pointers point at the row's first byte in the device layout.
// Q8_0 device layout: a matrix of `rows` rows is [qs: rows*cols i8][d: rows*cols/32 f16];
// the caller passes `row` = qs row start and `drow` = d row start.
// ---------------------------------------------------------------------------

__device__ __forceinline__ void decode_sub(int fmt, const u8* row, const u8* drow, int sb,
                                           float* w) {
    switch (fmt) {
    case FMT_F32: {
        const float4* p = (const float4*)(row + sb * 128);
#pragma unroll
        for (int i = 0; i < 8; i++) {
            float4 v = p[i];
            w[4 * i] = v.x; w[4 * i + 1] = v.y; w[4 * i + 2] = v.z; w[4 * i + 3] = v.w;
        }
        break;
    }
    case FMT_F16:
    case FMT_BF16: {
        const uint4* p = (const uint4*)(row + sb * 64);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            uint4 v = p[i];
            u32 a[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
            for (int j = 0; j < 4; j++) {
                u16 lo = (u16)(a[j] & 0xffff), hi = (u16)(a[j] >> 16);
                w[8 * i + 2 * j] = fmt == FMT_F16 ? h2f(lo) : bf2f(lo);
                w[8 * i + 2 * j + 1] = fmt == FMT_F16 ? h2f(hi) : bf2f(hi);
            }
        }
        break;
    }
    case FMT_Q8_0: {
        float d = h2f(((const u16*)drow)[sb]);
        const uint4* p = (const uint4*)(row + sb * 32);
#pragma unroll
        for (int i = 0; i < 2; i++) {
            uint4 v = p[i];
            u32 a[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
            for (int j = 0; j < 4; j++) {
#pragma unroll
                for (int b = 0; b < 4; b++) {
                    w[16 * i + 4 * j + b] = (float)(i8)((a[j] >> (8 * b)) & 0xff) * d;
                }
            }
        }
        break;
    }
    case FMT_Q2_K: {
        const u8* blk = row + (sb >> 3) * 84;
        int s = sb & 7;
        int n = s >> 2, j = s & 3;
        float d = h2f(ld16(blk + 80)), dmin = h2f(ld16(blk + 82));
        u8 sc0 = blk[8 * n + 2 * j], sc1 = blk[8 * n + 2 * j + 1];
        float dl0 = d * (float)(sc0 & 0xF), ml0 = dmin * (float)(sc0 >> 4);
        float dl1 = d * (float)(sc1 & 0xF), ml1 = dmin * (float)(sc1 >> 4);
        const u8* qs = blk + 16 + 32 * n;
#pragma unroll
        for (int i = 0; i < 8; i++) {
            u32 q4 = ld32(qs + 4 * i);
#pragma unroll
            for (int b = 0; b < 4; b++) {
                int l = 4 * i + b;
                float q = (float)((((q4 >> (8 * b)) & 0xff) >> (2 * j)) & 3);
                w[l] = l < 16 ? dl0 * q - ml0 : dl1 * q - ml1;
            }
        }
        break;
    }
    case FMT_Q4_K: {
        const u8* blk = row + (sb >> 3) * 144;
        int s = sb & 7;
        float d = h2f(ld16(blk)), dmin = h2f(ld16(blk + 2));
        const u8* sc = blk + 4;
        int sv, mv;
        if (s < 4) {
            sv = sc[s] & 63;
            mv = sc[s + 4] & 63;
        } else {
            sv = (sc[s + 4] & 0xF) | ((sc[s - 4] >> 6) << 4);
            mv = (sc[s + 4] >> 4) | ((sc[s] >> 6) << 4);
        }
        float dl = d * (float)sv, ml = dmin * (float)mv;
        const uint4* qp = (const uint4*)(blk + 16 + 32 * (s >> 1));
        int shift = (s & 1) * 4;
#pragma unroll
        for (int i = 0; i < 2; i++) {
            uint4 v = qp[i];
            u32 a[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
            for (int j = 0; j < 4; j++) {
#pragma unroll
                for (int b = 0; b < 4; b++) {
                    float q = (float)(((a[j] >> (8 * b)) >> shift) & 0xF);
                    w[16 * i + 4 * j + b] = dl * q - ml;
                }
            }
        }
        break;
    }
    case FMT_IQ2_XXS: {
        const u8* blk = row + (sb >> 3) * 66;
        int g = sb & 7;
        float d = h2f(ld16(blk));
        const u8* o = blk + 2 + 8 * g;
        u32 a1 = (u32)ld16(o + 4) | ((u32)ld16(o + 6) << 16);
        u32 a0 = (u32)ld16(o) | ((u32)ld16(o + 2) << 16);
        float db = d * (0.5f + (float)(a1 >> 28)) * 0.25f;
#pragma unroll
        for (int k = 0; k < 4; k++) {
            u64 grid = g_iq2xxs_grid[(a0 >> (8 * k)) & 0xff];
            u8 signs = g_ksigns[(a1 >> (7 * k)) & 0x7F];
#pragma unroll
            for (int j = 0; j < 8; j++) {
                float v = db * (float)((grid >> (8 * j)) & 0xff);
                w[8 * k + j] = (signs >> j) & 1 ? -v : v;
            }
        }
        break;
    }
    }
}

// Bytes of one row in the device layout (Q8_0: qs part only).
__device__ __forceinline__ long long row_bytes_dev(int fmt, int cols) {
    switch (fmt) {
    case FMT_F32: return (long long)cols * 4;
    case FMT_F16:
    case FMT_BF16: return (long long)cols * 2;
    case FMT_Q8_0: return cols;
    case FMT_Q2_K: return (long long)(cols / 256) * 84;
    case FMT_Q4_K: return (long long)(cols / 256) * 144;
    default: return (long long)(cols / 256) * 66;
    }
}

// Scalar element `c` of a row (float formats only; tails of non-32 rows).
__device__ __forceinline__ float elem_float(int fmt, const u8* row, int c) {
    if (fmt == FMT_F32) return ((const float*)row)[c];
    if (fmt == FMT_F16) return h2f(((const u16*)row)[c]);
    return bf2f(((const u16*)row)[c]);
}

// ---------------------------------------------------------------------------
// Matrix × vector(s). One warp per output row, 8 rows per block.
// dense: grid.y = 1; tokens t < ntok read x + t*x_stride (+ group offset);
// slots: grid.y = number of slots, matrix mat_ids[slot], x row slot / x_div,
//        y row slot (ntok must be 1).
// ---------------------------------------------------------------------------
#define MV_MAX_TOK 8

extern "C" __global__ void __launch_bounds__(256) matvec(
    int fmt, const u8* __restrict__ W, long long mat_bytes, long long d_off, const int* mat_ids,
    int rows, int cols, const float* __restrict__ x, long long x_stride, int rows_per_group,
    int x_div, int ntok, float* __restrict__ y, long long y_stride) {
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int r = blockIdx.x * 8 + warp;
    if (r >= rows) return;
    int slot = blockIdx.y;
    const u8* base = W;
    const float* xb = x;
    float* yb = y;
    if (mat_ids) {
        int e = mat_ids[slot];
        base = W + (long long)e * mat_bytes;
        xb = x + (long long)(slot / x_div) * x_stride;
        yb = y + (long long)slot * y_stride;
    }
    long long rb = row_bytes_dev(fmt, cols);
    const u8* row = base + (long long)r * rb;
    const u8* drow = base + d_off + (long long)r * (cols / 32) * 2;
    if (rows_per_group > 0) xb += (long long)(r / rows_per_group) * cols;
    float acc[MV_MAX_TOK];
#pragma unroll
    for (int t = 0; t < MV_MAX_TOK; t++) acc[t] = 0.f;
    int nsub = cols / 32;
    float wa[32], wb[32];
    // two sub-blocks per iteration: both decodes' loads are in flight together
    for (int sb = lane; sb < nsub; sb += 64) {
        int sb2 = sb + 32;
        bool two = sb2 < nsub;
        decode_sub(fmt, row, drow, sb, wa);
        decode_sub(fmt, row, drow, two ? sb2 : sb, wb);
#pragma unroll
        for (int t = 0; t < MV_MAX_TOK; t++) {
            if (t < ntok) {
                const float4* xp = (const float4*)(xb + (long long)t * x_stride + sb * 32);
                const float4* xq = (const float4*)(xb + (long long)t * x_stride + (two ? sb2 : sb) * 32);
                float a = 0.f, b = 0.f;
#pragma unroll
                for (int i = 0; i < 8; i++) {
                    float4 v = xp[i];
                    a = fmaf(wa[4 * i], v.x, a);
                    a = fmaf(wa[4 * i + 1], v.y, a);
                    a = fmaf(wa[4 * i + 2], v.z, a);
                    a = fmaf(wa[4 * i + 3], v.w, a);
                    float4 u = xq[i];
                    b = fmaf(wb[4 * i], u.x, b);
                    b = fmaf(wb[4 * i + 1], u.y, b);
                    b = fmaf(wb[4 * i + 2], u.z, b);
                    b = fmaf(wb[4 * i + 3], u.w, b);
                }
                acc[t] += a;
                if (two) acc[t] += b;
            }
        }
    }
    // tail of float rows whose length is not a multiple of 32
    for (int c = nsub * 32 + lane; c < cols; c += 32) {
        float wv = elem_float(fmt, row, c);
        for (int t = 0; t < ntok; t++) acc[t] += wv * xb[(long long)t * x_stride + c];
    }
#pragma unroll
    for (int t = 0; t < MV_MAX_TOK; t++) {
        if (t < ntok) {
            float s = warp_sum(acc[t]);
            if (lane == 0) yb[(long long)t * y_stride + r] = s;
        }
    }
}

// Few rows (router, HC mixes): one block per row, the 8 warps split the
// sub-blocks, block reduction. Dense only.
extern "C" __global__ void __launch_bounds__(256) matvec_splitk(
    int fmt, const u8* __restrict__ W, long long d_off, int rows, int cols,
    const float* __restrict__ x, long long x_stride, int ntok, float* __restrict__ y,
    long long y_stride) {
    __shared__ float part[8][MV_MAX_TOK];
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int r = blockIdx.x;
    long long rb = row_bytes_dev(fmt, cols);
    const u8* row = W + (long long)r * rb;
    const u8* drow = W + d_off + (long long)r * (cols / 32) * 2;
    float acc[MV_MAX_TOK];
#pragma unroll
    for (int t = 0; t < MV_MAX_TOK; t++) acc[t] = 0.f;
    int nsub = cols / 32;
    float w[32];
    for (int sb = threadIdx.x; sb < nsub; sb += 256) {
        decode_sub(fmt, row, drow, sb, w);
#pragma unroll
        for (int t = 0; t < MV_MAX_TOK; t++) {
            if (t < ntok) {
                const float4* xp = (const float4*)(x + (long long)t * x_stride + sb * 32);
                float a = 0.f;
#pragma unroll
                for (int i = 0; i < 8; i++) {
                    float4 v = xp[i];
                    a = fmaf(w[4 * i], v.x, a);
                    a = fmaf(w[4 * i + 1], v.y, a);
                    a = fmaf(w[4 * i + 2], v.z, a);
                    a = fmaf(w[4 * i + 3], v.w, a);
                }
                acc[t] += a;
            }
        }
    }
#pragma unroll
    for (int t = 0; t < MV_MAX_TOK; t++) {
        float s = warp_sum(acc[t]);
        if (lane == 0) part[warp][t] = s;
    }
    __syncthreads();
    if (threadIdx.x < ntok) {
        float s = 0.f;
        for (int w2 = 0; w2 < 8; w2++) s += part[w2][threadIdx.x];
        y[(long long)threadIdx.x * y_stride + r] = s;
    }
}

// Q8_0 ([qs | d] layout), dense rows: each lane reads 16 quants (one uint4)
// per step, four steps in flight, fully coalesced across the warp.
extern "C" __global__ void __launch_bounds__(256) matvec_q8(
    const u8* __restrict__ W, long long d_off, int rows, int cols, const float* __restrict__ x,
    long long x_stride, int rows_per_group, int ntok, float* __restrict__ y, long long y_stride) {
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int r = blockIdx.x * 8 + warp;
    if (r >= rows) return;
    const uint4* qrow = (const uint4*)(W + (long long)r * cols);
    const u16* drow = (const u16*)(W + d_off) + (long long)r * (cols / 32);
    const float* xb = x;
    if (rows_per_group > 0) xb += (long long)(r / rows_per_group) * cols;
    float acc[MV_MAX_TOK];
#pragma unroll
    for (int t = 0; t < MV_MAX_TOK; t++) acc[t] = 0.f;
    int nch = cols / 16;
    for (int c0 = lane; c0 < nch; c0 += 128) {
        uint4 q[4];
        float d[4];
#pragma unroll
        for (int u = 0; u < 4; u++) {
            int c = c0 + 32 * u;
            int cc = c < nch ? c : c0;
            q[u] = qrow[cc];
            d[u] = c < nch ? h2f(drow[cc >> 1]) : 0.f;
        }
#pragma unroll
        for (int u = 0; u < 4; u++) {
            int c = c0 + 32 * u;
            if (c >= nch) break;
            float w[16];
            u32 a[4] = {q[u].x, q[u].y, q[u].z, q[u].w};
#pragma unroll
            for (int j = 0; j < 4; j++)
#pragma unroll
                for (int b = 0; b < 4; b++) w[4 * j + b] = (float)(i8)((a[j] >> (8 * b)) & 0xff) * d[u];
#pragma unroll
            for (int t = 0; t < MV_MAX_TOK; t++) {
                if (t < ntok) {
                    const float4* xp = (const float4*)(xb + (long long)t * x_stride + c * 16);
                    float s = 0.f;
#pragma unroll
                    for (int i = 0; i < 4; i++) {
                        float4 v = xp[i];
                        s = fmaf(w[4 * i], v.x, s);
                        s = fmaf(w[4 * i + 1], v.y, s);
                        s = fmaf(w[4 * i + 2], v.z, s);
                        s = fmaf(w[4 * i + 3], v.w, s);
                    }
                    acc[t] += s;
                }
            }
        }
    }
#pragma unroll
    for (int t = 0; t < MV_MAX_TOK; t++) {
        if (t < ntok) {
            float s = warp_sum(acc[t]);
            if (lane == 0) y[(long long)t * y_stride + r] = s;
        }
    }
}

// Same as matvec for rows whose x is not 16-byte aligned per token (cols % 4 != 0):
// scalar loads.
extern "C" __global__ void __launch_bounds__(256) matvec_scalar(
    int fmt, const u8* __restrict__ W, long long mat_bytes, long long d_off, const int* mat_ids,
    int rows, int cols, const float* __restrict__ x, long long x_stride, int rows_per_group,
    int x_div, int ntok, float* __restrict__ y, long long y_stride) {
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int r = blockIdx.x * 8 + warp;
    if (r >= rows) return;
    int slot = blockIdx.y;
    const u8* base = W;
    const float* xb = x;
    float* yb = y;
    if (mat_ids) {
        int e = mat_ids[slot];
        base = W + (long long)e * mat_bytes;
        xb = x + (long long)(slot / x_div) * x_stride;
        yb = y + (long long)slot * y_stride;
    }
    long long rb = row_bytes_dev(fmt, cols);
    const u8* row = base + (long long)r * rb;
    if (rows_per_group > 0) xb += (long long)(r / rows_per_group) * cols;
    for (int t = 0; t < ntok; t++) {
        float acc = 0.f;
        for (int c = lane; c < cols; c += 32) acc += elem_float(fmt, row, c) * xb[(long long)t * x_stride + c];
        acc = warp_sum(acc);
        if (lane == 0) yb[(long long)t * y_stride + r] = acc;
    }
}

// Q8_0 raw GGUF blocks (34 bytes) -> [qs | d] device layout. One thread per block.
extern "C" __global__ void repack_q8_0(const u8* __restrict__ src, u8* __restrict__ qs,
                                       u16* __restrict__ d, long long nblocks) {
    long long b = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= nblocks) return;
    const u8* s = src + b * 34;
    d[b] = (u16)s[0] | ((u16)s[1] << 8);
    for (int i = 0; i < 32; i++) qs[b * 32 + i] = s[2 + i];
}

// Dequantize rows of any format to f32 (embeddings). One thread per sub-block.
extern "C" __global__ void dequant_rows_f32(int fmt, const u8* __restrict__ W, long long d_off,
                                            int cols, const int* __restrict__ rows, int nrows,
                                            int reps, float* __restrict__ out) {
    int nsub = (cols + 31) / 32;
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)nrows * nsub) return;
    int rr = (int)(i / nsub), sb = (int)(i % nsub);
    int r = rows[rr];
    long long rb = row_bytes_dev(fmt, cols);
    const u8* row = W + (long long)r * rb;
    const u8* drow = W + d_off + (long long)r * (cols / 32) * 2;
    if (sb * 32 + 32 > cols) {
        for (int rep = 0; rep < reps; rep++) {
            float* o = out + ((long long)rr * reps + rep) * cols;
            for (int c = sb * 32; c < cols; c++) o[c] = elem_float(fmt, row, c);
        }
        return;
    }
    float w[32];
    decode_sub(fmt, row, drow, sb, w);
    for (int rep = 0; rep < reps; rep++) {
        float* o = out + ((long long)rr * reps + rep) * cols + sb * 32;
#pragma unroll
        for (int c = 0; c < 32; c++) o[c] = w[c];
    }
}

// ---------------------------------------------------------------------------
// Norms and elementwise ops
// ---------------------------------------------------------------------------

__device__ double block_sum_d(double v, double* sh) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    double t = 0;
    int nw = (blockDim.x + 31) / 32;
    for (int i = 0; i < nw; i++) t += sh[i];
    return t;
}

// In place; out may equal x. One block per row.
extern "C" __global__ void rms_norm(const float* x, float* out, int width, const float* w,
                                    float eps) {
    __shared__ double sh[32];
    const float* xr = x + (long long)blockIdx.x * width;
    float* orow = out + (long long)blockIdx.x * width;
    double ss = 0;
    for (int i = threadIdx.x; i < width; i += blockDim.x) ss += (double)xr[i] * (double)xr[i];
    ss = block_sum_d(ss, sh);
    float r = 1.0f / sqrtf((float)(ss / width) + eps);
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        float v = xr[i] * r;
        orow[i] = w ? v * w[i] : v;
    }
}

extern "C" __global__ void add_inplace(float* a, const float* b, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) a[i] += b[i];
}
extern "C" __global__ void add_row_bcast(float* a, const float* row, int width, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) a[i] += row[i % width];
}
extern "C" __global__ void scale_inplace(float* a, float s, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) a[i] *= s;
}
extern "C" __global__ void f16_round(float* a, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) a[i] = h2f(f2h(a[i]));
}
extern "C" __global__ void add_position_rows(float* x, int width, const float* table,
                                             int table_rows, const int* pos, int rows) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)rows * width) return;
    int r = (int)(i / width), c = (int)(i % width);
    x[i] += table[(long long)(pos[r] % table_rows) * width + c];
}
extern "C" __global__ void gather_rows(const float* src, int width, const int* rows, int n,
                                       float* out) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)n * width) return;
    int r = (int)(i / width), c = (int)(i % width);
    out[i] = src[(long long)rows[r] * width + c];
}

// RoPE on the last 2*npairs dims of every head. pos: per row (dpos) or start + row*step.
extern "C" __global__ void rope(float* x, int rows, int heads, int head_dim, int npairs,
                                const int* pos, int start, int step, const float* inv32,
                                const double* inv64, int inverse, int precise) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long total = (long long)rows * heads * npairs;
    if (i >= total) return;
    int j = (int)(i % npairs);
    long long rh = i / npairs;
    int row = (int)(rh / heads), h = (int)(rh % heads);
    int p = pos ? pos[row] : start + row * step;
    double a;
    if (precise) a = (double)p * inv64[j];
    else a = (double)((float)p * inv32[j]);
    float c = (float)cos(a), s = (float)sin(a);
    if (inverse) s = -s;
    float* t = x + ((long long)row * heads + h) * head_dim + head_dim - 2 * npairs;
    float u = t[2 * j], v = t[2 * j + 1];
    t[2 * j] = u * c - v * s;
    t[2 * j + 1] = v * c + u * s;
}

// FP8 e4m3fn round trip of dims 0..nope of each `width` row, blocks of 64.
__device__ float e4m3_round(float x) {
    float s = x < 0 ? -1.f : 1.f;
    float a = fminf(fabsf(x), 448.f);
    if (a == 0.f || a != a) return 0.f * s;
    float step;
    if (a < 0.015625f) {
        step = 0.001953125f;
    } else {
        int e;
        frexpf(a, &e);  // a = m * 2^e, m in [0.5, 1): floor(log2 a) = e - 1
        step = ldexpf(1.f, e - 1 - 3);
    }
    return s * rintf(a / step) * step;
}
extern "C" __global__ void fp8_sim(float* x, int rows, int width, int nope) {
    int nb = nope / 64;
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)rows * nb) return;
    float* b = x + (i / nb) * width + (i % nb) * 64;
    float amax = 0.f;
    for (int k = 0; k < 64; k++) amax = fmaxf(amax, fabsf(b[k]));
    amax = fmaxf(amax, 1e-4f);
    float sc = ldexpf(1.f, (int)ceilf(log2f(amax / 448.f)));
    for (int k = 0; k < 64; k++) b[k] = e4m3_round(fminf(fmaxf(b[k] / sc, -448.f), 448.f)) * sc;
}

__device__ float e2m1_round(float x) {
    const float vals[8] = {0.f, 0.5f, 1.f, 1.5f, 2.f, 3.f, 4.f, 6.f};
    float s = x < 0 ? -1.f : 1.f;
    float a = fminf(fabsf(x), 6.f);
    if (a != a) return 0.f;
    int best = 0;
    for (int i = 1; i < 8; i++) {
        float db = fabsf(a - vals[best]), d = fabsf(a - vals[i]);
        if (d < db || (d == db && (i % 2) == 0)) best = i;
    }
    return s * vals[best];
}
// Hadamard (Sylvester, natural order) + FP4 round trip of each `width` row
// (width a power of two, <= 1024). One block of `width` threads per row.
extern "C" __global__ void hadamard_fp4(float* x, int width, float scale) {
    extern __shared__ float hs[];
    float* r = x + (long long)blockIdx.x * width;
    int i = threadIdx.x;
    hs[i] = r[i];
    __syncthreads();
    for (int s = 1; s < width; s <<= 1) {
        float a = hs[i], b = hs[i ^ s];
        __syncthreads();
        hs[i] = (i & s) ? b - a : a + b;
        __syncthreads();
    }
    float v = hs[i] * scale;
    __syncthreads();
    hs[i] = v;
    __syncthreads();
    int b0 = i & ~31;
    float amax = 0.f;
    for (int k = 0; k < 32; k++) amax = fmaxf(amax, fabsf(hs[b0 + k]));
    amax = fmaxf(amax, 6.f * 1.1754943508222875e-38f);
    float sc = ldexpf(1.f, (int)ceilf(log2f(amax / 6.f)));
    r[i] = e2m1_round(fminf(fmaxf(v / sc, -6.f), 6.f)) * sc;
}

// ---------------------------------------------------------------------------
// Hyper-connections (spec §2.2, §2.3, §2.5)
// ---------------------------------------------------------------------------
__device__ __forceinline__ float sigmoidf_(float z) { return 1.f / (1.f + expf(-z)); }

// mix: [rows, (2+n)n]; x: [rows, n, d]. Writes y [rows, d], post [rows, n], comb [rows, n, n].
extern "C" __global__ void hc_pre_finish(const float* mix, const float* base, const float* scale,
                                         const float* x, int n, int d, int iters, float eps,
                                         float* y, float* post, float* comb) {
    __shared__ float pre_s[16];
    __shared__ float c[256];
    int t = blockIdx.x;
    int m = (2 + n) * n;
    const float* mx = mix + (long long)t * m;
    if (threadIdx.x == 0) {
        for (int s = 0; s < n; s++) pre_s[s] = sigmoidf_(mx[s] * scale[0] + base[s]) + eps;
        for (int s = 0; s < n; s++) post[t * n + s] = 2.f * sigmoidf_(mx[n + s] * scale[1] + base[n + s]);
        for (int i = 0; i < n * n; i++) c[i] = mx[2 * n + i] * scale[2] + base[2 * n + i];
        if (n == 4) {
            // same operations as the generic loop, in registers
            float r[16];
#pragma unroll
            for (int i = 0; i < 16; i++) r[i] = c[i];
#pragma unroll
            for (int j = 0; j < 4; j++) {
                float mm = -INFINITY;
#pragma unroll
                for (int k = 0; k < 4; k++) mm = fmaxf(mm, r[4 * j + k]);
                float sm = 0.f;
#pragma unroll
                for (int k = 0; k < 4; k++) { r[4 * j + k] = expf(r[4 * j + k] - mm); sm += r[4 * j + k]; }
#pragma unroll
                for (int k = 0; k < 4; k++) r[4 * j + k] = r[4 * j + k] / sm + eps;
            }
            for (int it = 0; it < iters; it++) {
                if (it > 0) {
#pragma unroll
                    for (int j = 0; j < 4; j++) {
                        float sm = 0.f;
#pragma unroll
                        for (int k = 0; k < 4; k++) sm += r[4 * j + k];
#pragma unroll
                        for (int k = 0; k < 4; k++) r[4 * j + k] /= sm + eps;
                    }
                }
#pragma unroll
                for (int k = 0; k < 4; k++) {
                    float sm = 0.f;
#pragma unroll
                    for (int j = 0; j < 4; j++) sm += r[4 * j + k];
#pragma unroll
                    for (int j = 0; j < 4; j++) r[4 * j + k] /= sm + eps;
                }
            }
#pragma unroll
            for (int i = 0; i < 16; i++) c[i] = r[i];
        } else {
            for (int j = 0; j < n; j++) {
                float* rw = c + j * n;
                float mm = -INFINITY;
                for (int k = 0; k < n; k++) mm = fmaxf(mm, rw[k]);
                float sm = 0.f;
                for (int k = 0; k < n; k++) { rw[k] = expf(rw[k] - mm); sm += rw[k]; }
                for (int k = 0; k < n; k++) rw[k] = rw[k] / sm + eps;
            }
            for (int it = 0; it < iters; it++) {
                if (it > 0) {
                    for (int j = 0; j < n; j++) {
                        float sm = 0.f;
                        for (int k = 0; k < n; k++) sm += c[j * n + k];
                        for (int k = 0; k < n; k++) c[j * n + k] /= sm + eps;
                    }
                }
                for (int k = 0; k < n; k++) {
                    float sm = 0.f;
                    for (int j = 0; j < n; j++) sm += c[j * n + k];
                    for (int j = 0; j < n; j++) c[j * n + k] /= sm + eps;
                }
            }
        }
        for (int i = 0; i < n * n; i++) comb[(long long)t * n * n + i] = c[i];
    }
    __syncthreads();
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        float acc = 0.f;
        for (int s = 0; s < n; s++) acc += pre_s[s] * x[((long long)t * n + s) * d + i];
        y[(long long)t * d + i] = acc;
    }
}

extern "C" __global__ void hc_head_finish(const float* mix, const float* base, const float* scale,
                                          const float* x, int n, int d, float eps, float* y) {
    __shared__ float w_s[16];
    int t = blockIdx.x;
    if (threadIdx.x < n) {
        int s = threadIdx.x;
        w_s[s] = sigmoidf_(mix[(long long)t * n + s] * scale[0] + base[s]) + eps;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        float acc = 0.f;
        for (int s = 0; s < n; s++) acc += w_s[s] * x[((long long)t * n + s) * d + i];
        y[(long long)t * d + i] = acc;
    }
}

// X'_k = post_k o + sum_j C_jk X_j, in place.
extern "C" __global__ void hc_post(float* x, const float* o, const float* post, const float* comb,
                                   int n, int d, int rows) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)rows * d) return;
    int t = (int)(i / d), c = (int)(i % d);
    float old[16];
#pragma unroll
    for (int j = 0; j < 16; j++) old[j] = j < n ? x[((long long)t * n + j) * d + c] : 0.f;
    float ov = o[(long long)t * d + c];
#pragma unroll
    for (int k = 0; k < 16; k++) {
        if (k >= n) break;
        float acc = post[t * n + k] * ov;
#pragma unroll
        for (int j = 0; j < 16; j++)
            if (j < n) acc += comb[(long long)t * n * n + j * n + k] * old[j];
        x[((long long)t * n + k) * d + c] = acc;
    }
}

// ---------------------------------------------------------------------------
// Routing and experts (spec §4)
// ---------------------------------------------------------------------------
__device__ __forceinline__ float softplusf_(float z) {
    if (z > 20.f) return z;
    if (z < -20.f) return expf(z);
    return log1pf(expf(z));
}
// One warp per token (4 per block); scores staged in shared memory.
// logits [rows, n_exp] (n_exp <= 2048); table/tokens for hash routing.
extern "C" __global__ void route(const float* logits, int rows, int n_exp, int k,
                                 const float* bias, const int* table, const int* tokens,
                                 float scale, int* ids, float* weights) {
    __shared__ float sh[4][2048];
    int wq = threadIdx.x >> 5;
    int t = blockIdx.x * 4 + wq;
    int lane = threadIdx.x & 31;
    if (t >= rows) return;
    const float* l = logits + (long long)t * n_exp;
    float* sc = sh[wq];
    int sel[16];
    if (table) {
        for (int j = 0; j < k; j++) sel[j] = table[(long long)tokens[t] * k + j];
    } else {
        for (int e = lane; e < n_exp; e += 32) sc[e] = sqrtf(softplusf_(l[e])) + (bias ? bias[e] : 0.f);
        __syncwarp();
        for (int j = 0; j < 16; j++) {
            if (j >= k) break;
            float best = -INFINITY;
            int bi = 0x7fffffff;
            for (int e = lane; e < n_exp; e += 32) {
                float v = sc[e];
                if (v > best || (v == best && e < bi)) { best = v; bi = e; }
            }
            for (int o = 16; o > 0; o >>= 1) {
                float ov = __shfl_xor_sync(0xffffffffu, best, o);
                int oi = __shfl_xor_sync(0xffffffffu, bi, o);
                if (ov > best || (ov == best && oi < bi)) { best = ov; bi = oi; }
            }
            if (bi == 0x7fffffff) bi = 0;
            sel[j] = bi;
            __syncwarp();
            if (lane == 0) sc[bi] = -INFINITY;
            __syncwarp();
        }
    }
    if (lane == 0) {
        float sum = 0.f;
        for (int j = 0; j < k; j++) sum += sqrtf(softplusf_(l[sel[j]]));
        for (int j = 0; j < k; j++) {
            ids[(long long)t * k + j] = sel[j];
            weights[(long long)t * k + j] = scale * sqrtf(softplusf_(l[sel[j]])) / sum;
        }
    }
}

// out = w * silu(min(g, limit)) * clamp(u, -limit, limit); w per row (slot) or 1.
extern "C" __global__ void swiglu(const float* g, const float* u, const float* w, int width,
                                  long long n, float limit, float* out) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float gc = fminf(g[i], limit);
    float uc = fminf(fmaxf(u[i], -limit), limit);
    float s = gc / (1.f + expf(-gc));
    float wt = w ? w[i / width] : 1.f;
    out[i] = wt * (s * uc);
}

// out[t] = sum_{i<k} slots[t*k + i] in slot order.
extern "C" __global__ void sum_slots(const float* slots, int k, int d, int rows, float* out) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)rows * d) return;
    int t = (int)(i / d), c = (int)(i % d);
    float acc = 0.f;
    for (int j = 0; j < k; j++) acc += slots[((long long)t * k + j) * d + c];
    out[i] = acc;
}

// argmax of each row, ties to the lower index. One block per row.
extern "C" __global__ void argmax_rows(const float* x, int width, int* out) {
    __shared__ float bv[32];
    __shared__ int bi[32];
    const float* r = x + (long long)blockIdx.x * width;
    float best = -INFINITY;
    int idx = 0x7fffffff;
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        float v = r[i];
        if (v > best || (v == best && i < idx)) { best = v; idx = i; }
    }
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, best, o);
        int oi = __shfl_xor_sync(0xffffffffu, idx, o);
        if (ov > best || (ov == best && oi < idx)) { best = ov; idx = oi; }
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) { bv[warp] = best; bi[warp] = idx; }
    __syncthreads();
    if (threadIdx.x == 0) {
        int nw = blockDim.x / 32;
        for (int w = 1; w < nw; w++)
            if (bv[w] > best || (bv[w] == best && bi[w] < idx)) { best = bv[w]; idx = bi[w]; }
        out[blockIdx.x] = idx == 0x7fffffff ? 0 : idx;
    }
}

// ---------------------------------------------------------------------------
// KV stores
// ---------------------------------------------------------------------------
extern "C" __global__ void kv_write(void* dst, int half, int dst_rows, int dst_row, int ring,
                                    const float* src, int src_row, int n, int width) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)n * width) return;
    int r = (int)(i / width), c = (int)(i % width);
    int d = dst_row + r;
    if (ring) d %= dst_rows;
    float v = src[(long long)(src_row + r) * width + c];
    if (half) ((u16*)dst)[(long long)d * width + c] = f2h(v);
    else ((float*)dst)[(long long)d * width + c] = v;
}
extern "C" __global__ void kv_read(const void* src, int half, int row, int n, int width,
                                   float* out) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)n * width) return;
    long long s = (long long)row * width + i;
    out[i] = half ? h2f(((const u16*)src)[s]) : ((const float*)src)[s];
}

// ---------------------------------------------------------------------------
// Compressor (spec §3.6): pool the windows that end inside the chunk, then
// store the chunk's last rows in the position-indexed frontier ring.
// ---------------------------------------------------------------------------
__device__ __forceinline__ const float* comp_src(long long q, long long p0, int row0,
                                                 const float* chunk, const float* ring,
                                                 int ring_rows, int in_w) {
    if (q >= p0) return chunk + (long long)(row0 + (q - p0)) * in_w;
    return ring + (long long)(q % ring_rows) * in_w;
}
extern "C" __global__ void comp_pool(const float* ring_kv, const float* ring_sc, const float* kv,
                                     const float* sc, int row0, long long p0, int w0, int count,
                                     int ratio, int width, int overlap, float* out) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)count * width) return;
    int wi = (int)(i / width), c = (int)(i % width);
    long long win = w0 + wi;
    int in_w = overlap ? 2 * width : width;
    int rr = overlap ? 2 * ratio : ratio;
    float m = -INFINITY;
    long long qa0 = (overlap && win > 0) ? (win - 1) * ratio : win * ratio;
    int lane_b = overlap ? width : 0;
    // pass 1: max
    for (long long q = qa0; q < (win + 1) * ratio; q++) {
        int off = (q < win * ratio) ? 0 : lane_b;
        float s = comp_src(q, p0, row0, sc, ring_sc, rr, in_w)[off + c];
        m = fmaxf(m, s);
    }
    float den = 0.f, num = 0.f;
    for (long long q = qa0; q < (win + 1) * ratio; q++) {
        int off = (q < win * ratio) ? 0 : lane_b;
        float s = comp_src(q, p0, row0, sc, ring_sc, rr, in_w)[off + c];
        float v = comp_src(q, p0, row0, kv, ring_kv, rr, in_w)[off + c];
        float e = expf(s - m);
        den += e;
        num += e * v;
    }
    out[i] = num / den;
}
extern "C" __global__ void comp_ring_store(float* ring_kv, float* ring_sc, const float* kv,
                                           const float* sc, int row0, long long p0, long long first,
                                           int n, int ring_rows, int in_w) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)n * in_w) return;
    long long q = first + i / in_w;
    int c = (int)(i % in_w);
    long long src = (long long)row0 + (q - p0);
    long long dst = (q % ring_rows) * in_w + c;
    ring_kv[dst] = kv[src * in_w + c];
    ring_sc[dst] = sc[src * in_w + c];
}

// ---------------------------------------------------------------------------
// Lightning indexer (spec §3.7): scores then top-k per token.
// q: [rows, heads, dim] (dim == 128 and heads <= 64 for the shared tiles, else generic)
// ---------------------------------------------------------------------------
__device__ __forceinline__ float kv_at(const void* base, int half, long long i) {
    return half ? h2f(((const u16*)base)[i]) : ((const float*)base)[i];
}
// grid: (ceil(nv_max / 32), n tokens); block 256 (8 warps, 4 rows each).
extern "C" __global__ void idx_scores(const float* q, const float* w, const void* rows, int half,
                                      int n_rows, int row0, long long p0, int heads, int dim,
                                      int ld, float* scores) {
    extern __shared__ float sq[];  // heads * (dim + 1) + heads
    int i = blockIdx.y;
    int t = row0 + i;
    long long p = p0 + i;
    long long nvl = (p + 1) / 4;
    int nv = (int)(nvl < n_rows ? nvl : n_rows);
    const float* qt = q + (long long)t * heads * dim;
    float* sw = sq + heads * (dim + 1);
    for (int j = threadIdx.x; j < heads * dim; j += blockDim.x)
        sq[(j / dim) * (dim + 1) + j % dim] = qt[j];
    for (int j = threadIdx.x; j < heads; j += blockDim.x) sw[j] = w[(long long)t * heads + j];
    __syncthreads();
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    for (int rr = 0; rr < 4; rr++) {
        int r = blockIdx.x * 32 + warp * 4 + rr;
        if (r >= ld) continue;
        if (r >= nv) {
            if (lane == 0) scores[(long long)i * ld + r] = -INFINITY;
            continue;
        }
        float acc = 0.f;
        for (int h = lane; h < heads; h += 32) {
            float d = 0.f;
            const float* qh = sq + h * (dim + 1);
            for (int c = 0; c < dim; c++) d += qh[c] * kv_at(rows, half, (long long)r * dim + c);
            acc += sw[h] * fmaxf(d, 0.f);
        }
        acc = warp_sum(acc);
        if (lane == 0) scores[(long long)i * ld + r] = acc;
    }
}

__device__ __forceinline__ u32 fkey(float f) {
    u32 b = __float_as_uint(f);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
// Top-k per token by radix select over the score bits, ties to the lower
// index; output ascending ids, -1 padded. One block (1024 threads) per token.
extern "C" __global__ void idx_topk(const float* scores, int ld, int n_rows, long long p0, int k,
                                    int* out) {
    __shared__ u32 hist[256];
    __shared__ u32 s_prefix, s_need;
    __shared__ u32 wsum[32];
    int i = blockIdx.x;
    long long p = p0 + i;
    long long nvl = (p + 1) / 4;
    int nv = (int)(nvl < n_rows ? nvl : n_rows);
    const float* s = scores + (long long)i * ld;
    int* o = out + (long long)i * k;
    if (nv <= k) {
        for (int j = threadIdx.x; j < k; j += blockDim.x) o[j] = j < nv ? j : -1;
        return;
    }
    // find the k-th largest key
    u32 prefix = 0, mask = 0;
    u32 need = k;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int j = threadIdx.x; j < 256; j += blockDim.x) hist[j] = 0;
        __syncthreads();
        for (int j = threadIdx.x; j < nv; j += blockDim.x) {
            u32 key = fkey(s[j]);
            if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 0xff], 1u);
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            u32 acc = 0;
            int b = 255;
            for (; b > 0; b--) {
                if (acc + hist[b] >= need) break;
                acc += hist[b];
            }
            s_prefix = prefix | ((u32)b << shift);
            s_need = need - acc;
        }
        __syncthreads();
        prefix = s_prefix;
        need = s_need;
        mask |= 0xffu << shift;
        __syncthreads();
    }
    // prefix is the k-th key; `need` of the ties (lowest ids) are taken.
    u32 kth = prefix;
    u32 base_taken = 0, base_ties = 0;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int c0 = 0; c0 < nv; c0 += blockDim.x) {
        int j = c0 + threadIdx.x;
        u32 key = j < nv ? fkey(s[j]) : 0u;
        int gt = j < nv && key > kth;
        int eq = j < nv && key == kth;
        // exclusive scan of eq over the chunk (in index order)
        u32 be = __ballot_sync(0xffffffffu, eq);
        u32 rank_w = __popc(be & ((1u << lane) - 1));
        if (lane == 0) wsum[warp] = __popc(be);
        __syncthreads();
        u32 before = 0;
        for (int w2 = 0; w2 < warp; w2++) before += wsum[w2];
        u32 tot_eq = 0;
        for (int w2 = 0; w2 < nw; w2++) tot_eq += wsum[w2];
        __syncthreads();
        int take = gt || (eq && base_ties + before + rank_w < need);
        u32 bt = __ballot_sync(0xffffffffu, take);
        u32 rank_t = __popc(bt & ((1u << lane) - 1));
        if (lane == 0) wsum[warp] = __popc(bt);
        __syncthreads();
        u32 tb = 0;
        for (int w2 = 0; w2 < warp; w2++) tb += wsum[w2];
        u32 tot_t = 0;
        for (int w2 = 0; w2 < nw; w2++) tot_t += wsum[w2];
        if (take) {
            u32 slot = base_taken + tb + rank_t;
            if (slot < (u32)k) o[slot] = j;
        }
        base_taken += tot_t;
        base_ties += tot_eq;
        __syncthreads();
    }
    for (int j = base_taken + threadIdx.x; j < k; j += blockDim.x) o[j] = -1;
}

// ---------------------------------------------------------------------------
// Attention with sink (spec §3.8). Block = (token i, head h); NW warps split
// the visible rows (interleaved) with an online softmax each, then combine.
// Lane holds dims {c*128 + lane*4 + j}: coalesced row loads.
// ---------------------------------------------------------------------------
#define ATT_WARPS 8
__device__ __forceinline__ void load_row512(const float* rf, const u16* rh, float* v, int lane) {
    if (rf) {
#pragma unroll
        for (int c = 0; c < 4; c++) {
            float4 a = *(const float4*)(rf + c * 128 + lane * 4);
            v[4 * c] = a.x; v[4 * c + 1] = a.y; v[4 * c + 2] = a.z; v[4 * c + 3] = a.w;
        }
    } else {
#pragma unroll
        for (int c = 0; c < 4; c++) {
            uint2 a = *(const uint2*)(rh + c * 128 + lane * 4);
            v[4 * c] = h2f((u16)(a.x & 0xffff)); v[4 * c + 1] = h2f((u16)(a.x >> 16));
            v[4 * c + 2] = h2f((u16)(a.y & 0xffff)); v[4 * c + 3] = h2f((u16)(a.y >> 16));
        }
    }
}

// Generic-width attention (head_dim a multiple of 128 up to 512 uses the fast path;
// other widths take the scalar path below).
extern "C" __global__ void __launch_bounds__(256) attention512(
    float* out, const float* q, const float* kv, const void* raw, int raw_half, int window,
    const void* comp, int comp_half, int vis_mode, int ratio, const int* sel, int k,
    int row0, long long p0, int heads, const float* sinks, float scale) {
    __shared__ float sm_m[ATT_WARPS], sm_l[ATT_WARPS];
    __shared__ float sm_o[ATT_WARPS][512];
    const int hd = 512;
    int i = blockIdx.x, h = blockIdx.y;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int t = row0 + i;
    long long p = p0 + i;
    long long lo = p + 1 - window;
    if (lo < 0) lo = 0;
    int nr = (int)(p - lo + 1);
    int nc = 0;
    if (vis_mode == 1) nc = (int)((p + 1) / ratio);
    else if (vis_mode == 2) nc = k;
    float qv[16];
    const float* qh = q + ((long long)t * heads + h) * hd;
    load_row512(qh, 0, qv, lane);
    float z = sinks[h];
    float m = z, l = (warp == 0) ? 1.f : 0.f;
    if (warp != 0) m = -INFINITY;
    float o[16];
#pragma unroll
    for (int j = 0; j < 16; j++) o[j] = 0.f;
    float v[16];
    for (int j = warp; j < nr + nc; j += ATT_WARPS) {
        const float* rf = 0;
        const u16* rh = 0;
        if (j < nr) {
            long long qq = lo + j;
            if (qq >= p0) rf = kv + (long long)(row0 + (qq - p0)) * hd;
            else if (raw_half) rh = (const u16*)raw + (qq % window) * hd;
            else rf = (const float*)raw + (qq % window) * hd;
        } else {
            int c = j - nr;
            if (vis_mode == 2) {
                c = sel[(long long)i * k + c];
                if (c < 0) continue;
            }
            if (comp_half) rh = (const u16*)comp + (long long)c * hd;
            else rf = (const float*)comp + (long long)c * hd;
        }
        load_row512(rf, rh, v, lane);
        float d = 0.f;
#pragma unroll
        for (int e = 0; e < 16; e++) d = fmaf(qv[e], v[e], d);
        float s = warp_sum(d) * scale;
        float mn = fmaxf(m, s);
        float corr = expf(m - mn);
        float ps = expf(s - mn);
        l = l * corr + ps;
#pragma unroll
        for (int e = 0; e < 16; e++) o[e] = o[e] * corr + ps * v[e];
        m = mn;
    }
    if (lane == 0) { sm_m[warp] = m; sm_l[warp] = l; }
    __syncthreads();
    float M = -INFINITY;
    for (int w = 0; w < ATT_WARPS; w++) M = fmaxf(M, sm_m[w]);
    float f = (m == -INFINITY) ? 0.f : expf(m - M);
#pragma unroll
    for (int c = 0; c < 4; c++)
#pragma unroll
        for (int e = 0; e < 4; e++) sm_o[warp][c * 128 + lane * 4 + e] = o[4 * c + e] * f;
    __syncthreads();
    float L = 0.f;
    for (int w = 0; w < ATT_WARPS; w++) L += (sm_m[w] == -INFINITY) ? 0.f : sm_l[w] * expf(sm_m[w] - M);
    float* oh = out + ((long long)t * heads + h) * hd;
    for (int c = threadIdx.x; c < hd; c += blockDim.x) {
        float acc = 0.f;
        for (int w = 0; w < ATT_WARPS; w++) acc += sm_o[w][c];
        oh[c] = acc / L;
    }
}

// Prefill form: block = (token, 8 heads), warp w = head 8*blockIdx.y + w over
// all visible rows (the 8 warps read the same rows: L1 hits).
extern "C" __global__ void __launch_bounds__(256) attention512_h8(
    float* out, const float* q, const float* kv, const void* raw, int raw_half, int window,
    const void* comp, int comp_half, int vis_mode, int ratio, const int* sel, int k,
    int row0, long long p0, int heads, const float* sinks, float scale) {
    const int hd = 512;
    int i = blockIdx.x;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int h = blockIdx.y * 8 + warp;
    if (h >= heads) return;
    int t = row0 + i;
    long long p = p0 + i;
    long long lo = p + 1 - window;
    if (lo < 0) lo = 0;
    int nr = (int)(p - lo + 1);
    int nc = 0;
    if (vis_mode == 1) nc = (int)((p + 1) / ratio);
    else if (vis_mode == 2) nc = k;
    float qv[16];
    load_row512(q + ((long long)t * heads + h) * hd, 0, qv, lane);
    float m = sinks[h], l = 1.f;
    float o[16];
#pragma unroll
    for (int j = 0; j < 16; j++) o[j] = 0.f;
    float v[16];
    for (int j = 0; j < nr + nc; j++) {
        const float* rf = 0;
        const u16* rh = 0;
        if (j < nr) {
            long long qq = lo + j;
            if (qq >= p0) rf = kv + (long long)(row0 + (qq - p0)) * hd;
            else if (raw_half) rh = (const u16*)raw + (qq % window) * hd;
            else rf = (const float*)raw + (qq % window) * hd;
        } else {
            int c = j - nr;
            if (vis_mode == 2) {
                c = sel[(long long)i * k + c];
                if (c < 0) continue;
            }
            if (comp_half) rh = (const u16*)comp + (long long)c * hd;
            else rf = (const float*)comp + (long long)c * hd;
        }
        load_row512(rf, rh, v, lane);
        float d = 0.f;
#pragma unroll
        for (int e = 0; e < 16; e++) d = fmaf(qv[e], v[e], d);
        float s = warp_sum(d) * scale;
        float mn = fmaxf(m, s);
        float corr = expf(m - mn);
        float ps = expf(s - mn);
        l = l * corr + ps;
#pragma unroll
        for (int e = 0; e < 16; e++) o[e] = o[e] * corr + ps * v[e];
        m = mn;
    }
    float* oh = out + ((long long)t * heads + h) * hd;
#pragma unroll
    for (int c = 0; c < 4; c++) {
        float4 r;
        r.x = o[4 * c] / l; r.y = o[4 * c + 1] / l; r.z = o[4 * c + 2] / l; r.w = o[4 * c + 3] / l;
        *(float4*)(oh + c * 128 + lane * 4) = r;
    }
}

// Scalar attention for any head_dim (tiny models). Block = (token, head), one
// thread block of 128 threads processes rows sequentially.
extern "C" __global__ void attention_any(
    float* out, const float* q, const float* kv, const void* raw, int raw_half, int window,
    const void* comp, int comp_half, int vis_mode, int ratio, const int* sel, int k,
    int row0, long long p0, int heads, int hd, const float* sinks, float scale) {
    __shared__ double sh[32];
    __shared__ float s_sc;
    int i = blockIdx.x, h = blockIdx.y;
    int t = row0 + i;
    long long p = p0 + i;
    long long lo = p + 1 - window;
    if (lo < 0) lo = 0;
    int nr = (int)(p - lo + 1);
    int nc = 0;
    if (vis_mode == 1) nc = (int)((p + 1) / ratio);
    else if (vis_mode == 2) nc = k;
    const float* qh = q + ((long long)t * heads + h) * hd;
    float z = sinks[h];
    float m = z, l = 1.f;
    float o[8];  // hd <= 8 * blockDim
    for (int e = 0; e < 8; e++) o[e] = 0.f;
    for (int j = 0; j < nr + nc; j++) {
        const void* base;
        int half;
        long long off;
        if (j < nr) {
            long long qq = lo + j;
            if (qq >= p0) { base = kv; half = 0; off = (long long)(row0 + (qq - p0)) * hd; }
            else { base = raw; half = raw_half; off = (qq % window) * hd; }
        } else {
            int c = j - nr;
            if (vis_mode == 2) {
                c = sel[(long long)i * k + c];
                if (c < 0) continue;
            }
            base = comp; half = comp_half; off = (long long)c * hd;
        }
        double d = 0;
        for (int e = threadIdx.x; e < hd; e += blockDim.x) d += (double)(qh[e] * kv_at(base, half, off + e));
        d = block_sum_d(d, sh);
        if (threadIdx.x == 0) s_sc = (float)d * scale;
        __syncthreads();
        float s = s_sc;
        __syncthreads();
        float mn = fmaxf(m, s);
        float corr = expf(m - mn), ps = expf(s - mn);
        l = l * corr + ps;
        for (int e = 0; e < 8; e++) {
            int c = threadIdx.x + e * blockDim.x;
            if (c < hd) o[e] = o[e] * corr + ps * kv_at(base, half, off + c);
        }
        m = mn;
    }
    float* oh = out + ((long long)t * heads + h) * hd;
    for (int e = 0; e < 8; e++) {
        int c = threadIdx.x + e * blockDim.x;
        if (c < hd) oh[c] = o[e] / l;
    }
}

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
