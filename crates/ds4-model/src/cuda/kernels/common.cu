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

