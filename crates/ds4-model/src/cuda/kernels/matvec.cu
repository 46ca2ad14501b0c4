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
// ss_out (may be null): block 0 also writes each token's sum of x^2 (double;
// the HC pre's norm scalar from the pass the mix makes over x anyway).
extern "C" __global__ void __launch_bounds__(256) matvec_splitk(
    int fmt, const u8* __restrict__ W, long long d_off, int rows, int cols,
    const float* __restrict__ x, long long x_stride, int ntok, float* __restrict__ y,
    long long y_stride, double* __restrict__ ss_out) {
    __shared__ float part[8][MV_MAX_TOK];
    __shared__ double part_ss[8][MV_MAX_TOK];
    const bool want_ss = ss_out && blockIdx.x == 0;
    double sq[MV_MAX_TOK];
#pragma unroll
    for (int t = 0; t < MV_MAX_TOK; t++) sq[t] = 0.0;
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
                    if (want_ss)
                        sq[t] += (double)v.x * v.x + (double)v.y * v.y + (double)v.z * v.z +
                                 (double)v.w * v.w;
                }
                acc[t] += a;
            }
        }
    }
#pragma unroll
    for (int t = 0; t < MV_MAX_TOK; t++) {
        float s = warp_sum(acc[t]);
        if (lane == 0) part[warp][t] = s;
        if (want_ss) {
            double q = sq[t];
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) q += __shfl_xor_sync(0xffffffffu, q, o);
            if (lane == 0) part_ss[warp][t] = q;
        }
    }
    __syncthreads();
    if (want_ss && threadIdx.x < ntok) {
        double q = 0.0;
        for (int w2 = 0; w2 < 8; w2++) q += part_ss[w2][threadIdx.x];
        ss_out[threadIdx.x] = q;
    }
    if (threadIdx.x < ntok) {
        float s = 0.f;
        for (int w2 = 0; w2 < 8; w2++) s += part[w2][threadIdx.x];
        y[(long long)threadIdx.x * y_stride + r] = s;
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

// ---------------------------------------------------------------------------
// Chunked matrix × vector for F32 / F16 / BF16 / Q8_0 rows (decode). Weights
// are read as 16-byte chunks (4 / 8 / 8 / 16 weights). A warp owns R
// consecutive rows and walks their columns in steps of 32*K chunks: each lane
// has R*K = 8 independent 16-byte loads in flight, and each x chunk it loads
// serves R rows. The host checks chunks-per-row % (32*K) == 0 and, for
// grouped rows, rows_per_group % R == 0. 4 warps per block; grid.x = row
// tiles / 4, grid.y = slots (mat_ids given) or 1.
// ---------------------------------------------------------------------------
// Byte b of w as a float, exactly: 0x4B0000bb is 2^23 + bb (one PRMT and one
// FADD instead of a quarter-rate integer conversion).
__device__ __forceinline__ float byte_float(u32 w, int b) {
    return __int_as_float(__byte_perm(w, 0x4B000000u, 0x7540 + b)) - 8388608.f;
}

// x sources of the chunked kernels: float4 j of the chunk at float offset off.
// XPlain reads x; XSwiGLU forms x = SwiGLU(g, u) on the fly (the `swiglu`
// kernel's arithmetic with weight 1), so a dense FFN's down projection needs no
// separate SwiGLU pass.
struct XPlain {
    const float* x;
    __device__ __forceinline__ float4 at(long long off) const { return *(const float4*)(x + off); }
};
struct XSwiGLU {
    const float* g;
    const float* u;
    float limit;
    __device__ __forceinline__ float4 at(long long off) const {
        float4 a = *(const float4*)(g + off), b = *(const float4*)(u + off);
        float gv[4] = {a.x, a.y, a.z, a.w}, uv[4] = {b.x, b.y, b.z, b.w}, o[4];
#pragma unroll
        for (int e = 0; e < 4; e++) {
            float gc = fminf(gv[e], limit);
            float uc = fminf(fmaxf(uv[e], -limit), limit);
            float sv = gc / (1.f + expf(-gc));
            o[e] = 1.f * (sv * uc);
        }
        return make_float4(o[0], o[1], o[2], o[3]);
    }
};

template <int FMT, class XS>
__device__ __forceinline__ float chunk_dot(uint4 q, XS xs, long long xo) {
    float s = 0.f;
    if (FMT == FMT_F32) {
        float4 v = xs.at(xo);
        s = __uint_as_float(q.x) * v.x;
        s = fmaf(__uint_as_float(q.y), v.y, s);
        s = fmaf(__uint_as_float(q.z), v.z, s);
        s = fmaf(__uint_as_float(q.w), v.w, s);
    } else if (FMT == FMT_F16 || FMT == FMT_BF16) {
        u32 a[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
        for (int j = 0; j < 2; j++) {
            float4 v = xs.at(xo + 4 * j);
            u32 lo = a[2 * j], hi = a[2 * j + 1];
            float w0 = FMT == FMT_F16 ? h2f((u16)(lo & 0xffff)) : bf2f((u16)(lo & 0xffff));
            float w1 = FMT == FMT_F16 ? h2f((u16)(lo >> 16)) : bf2f((u16)(lo >> 16));
            float w2 = FMT == FMT_F16 ? h2f((u16)(hi & 0xffff)) : bf2f((u16)(hi & 0xffff));
            float w3 = FMT == FMT_F16 ? h2f((u16)(hi >> 16)) : bf2f((u16)(hi >> 16));
            s = fmaf(w0, v.x, s);
            s = fmaf(w1, v.y, s);
            s = fmaf(w2, v.z, s);
            s = fmaf(w3, v.w, s);
        }
    } else {
        u32 a[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
        for (int j = 0; j < 4; j++) {
            float4 v = xs.at(xo + 4 * j);
            // q + 128 as an unsigned byte, exactly converted (see byte_float)
            u32 u = a[j] ^ 0x80808080u;
            s = fmaf(byte_float(u, 0) - 128.f, v.x, s);
            s = fmaf(byte_float(u, 1) - 128.f, v.y, s);
            s = fmaf(byte_float(u, 2) - 128.f, v.z, s);
            s = fmaf(byte_float(u, 3) - 128.f, v.w, s);
        }
    }
    return s;
}

template <int FMT, int R, int K, int NT, class XS = XPlain>
__device__ __forceinline__ void mvc_body(const u8* __restrict__ base, long long d_off, int rows,
                                         int cols, XS xs, long long x_stride,
                                         int rows_per_group, int ntok, float* __restrict__ yb,
                                         long long y_stride, int r0) {
    constexpr int CW = FMT == FMT_Q8_0 ? 16 : (FMT == FMT_F32 ? 4 : 8);
    constexpr int EB = FMT == FMT_Q8_0 ? 1 : (FMT == FMT_F32 ? 4 : 2);
    int lane = threadIdx.x & 31;
    int cpr = cols / CW;
    const uint4* wr[R];
    const u16* dr[R];
#pragma unroll
    for (int i = 0; i < R; i++) {
        int r = min(r0 + i, rows - 1);
        wr[i] = (const uint4*)(base + (long long)r * cols * EB);
        dr[i] = (const u16*)(base + d_off) + (long long)r * (cols / 32);
    }
    long long xg = 0;
    if (rows_per_group > 0) xg = (long long)(r0 / rows_per_group) * cols;
    float acc[R][NT];
#pragma unroll
    for (int i = 0; i < R; i++)
#pragma unroll
        for (int t = 0; t < NT; t++) acc[i][t] = 0.f;
    for (int c0 = lane; c0 < cpr; c0 += 32 * K) {
        uint4 q[R][K];
        float d[R][K];
#pragma unroll
        for (int i = 0; i < R; i++)
#pragma unroll
            for (int k = 0; k < K; k++) {
                q[i][k] = wr[i][c0 + 32 * k];
                d[i][k] = FMT == FMT_Q8_0 ? h2f(dr[i][(c0 + 32 * k) >> 1]) : 1.f;
            }
#pragma unroll
        for (int t = 0; t < NT; t++) {
            if (t < ntok) {
#pragma unroll
                for (int k = 0; k < K; k++) {
                    long long xo = xg + (long long)t * x_stride + (long long)(c0 + 32 * k) * CW;
#pragma unroll
                    for (int i = 0; i < R; i++) {
                        float s = chunk_dot<FMT>(q[i][k], xs, xo);
                        acc[i][t] = FMT == FMT_Q8_0 ? fmaf(s, d[i][k], acc[i][t]) : acc[i][t] + s;
                    }
                }
            }
        }
    }
#pragma unroll
    for (int i = 0; i < R; i++)
#pragma unroll
        for (int t = 0; t < NT; t++) {
            if (t < ntok) {
                float s = warp_sum(acc[i][t]);
                if (lane == 0 && r0 + i < rows) yb[(long long)t * y_stride + r0 + i] = s;
            }
        }
}

#define MVC_KERNEL(R, K, NT, MB)                                                                    \
    extern "C" __global__ void __launch_bounds__(128, MB) mvc_##R##_##NT(                          \
        int fmt, const u8* __restrict__ W, long long mat_bytes, long long d_off,                  \
        const int* mat_ids, int rows, int cols, const float* __restrict__ x, long long x_stride, \
        int rows_per_group, int x_div, int ntok, float* __restrict__ y, long long y_stride) {     \
        int r0 = (blockIdx.x * 4 + (threadIdx.x >> 5)) * R;                                      \
        if (r0 >= rows) return;                                                                   \
        const u8* base = W;                                                                       \
        const float* xb = x;                                                                      \
        float* yb = y;                                                                            \
        if (mat_ids) {                                                                            \
            int slot = blockIdx.y;                                                                \
            base = W + (long long)mat_ids[slot] * mat_bytes;                                      \
            xb = x + (long long)(slot / x_div) * x_stride;                                        \
            yb = y + (long long)slot * y_stride;                                                  \
        }                                                                                         \
        switch (fmt) {                                                                            \
        case FMT_F32:                                                                             \
            mvc_body<FMT_F32, R, K, NT>(base, d_off, rows, cols, XPlain{xb}, x_stride, rows_per_group,   \
                                        ntok, yb, y_stride, r0);                                  \
            break;                                                                                \
        case FMT_F16:                                                                             \
            mvc_body<FMT_F16, R, K, NT>(base, d_off, rows, cols, XPlain{xb}, x_stride, rows_per_group,   \
                                        ntok, yb, y_stride, r0);                                  \
            break;                                                                                \
        case FMT_BF16:                                                                            \
            mvc_body<FMT_BF16, R, K, NT>(base, d_off, rows, cols, XPlain{xb}, x_stride, rows_per_group,  \
                                         ntok, yb, y_stride, r0);                                 \
            break;                                                                                \
        default:                                                                                  \
            mvc_body<FMT_Q8_0, R, K, NT>(base, d_off, rows, cols, XPlain{xb}, x_stride, rows_per_group,  \
                                         ntok, yb, y_stride, r0);                                 \
        }                                                                                         \
    }
MVC_KERNEL(1, 8, 1, 4)
MVC_KERNEL(2, 4, 1, 4)
MVC_KERNEL(4, 2, 1, 4)
MVC_KERNEL(8, 1, 1, 4)
MVC_KERNEL(1, 8, 8, 1)
MVC_KERNEL(2, 4, 8, 1)
MVC_KERNEL(4, 2, 8, 1)
MVC_KERNEL(8, 1, 8, 1)

// Dense FFN down projection of one token with the SwiGLU of (g, u) formed while
// x is read (XSwiGLU): same sums as mvc_R_1 on the SwiGLU output.
#define MVC_SW_KERNEL(R, K)                                                                       \
    extern "C" __global__ void __launch_bounds__(128, 4) mvc_sw_##R(                              \
        int fmt, const u8* __restrict__ W, long long d_off, int rows, int cols,                   \
        const float* __restrict__ g, const float* __restrict__ u, float limit,                    \
        float* __restrict__ y) {                                                                  \
        int r0 = (blockIdx.x * 4 + (threadIdx.x >> 5)) * R;                                      \
        if (r0 >= rows) return;                                                                   \
        XSwiGLU xs{g, u, limit};                                                                  \
        switch (fmt) {                                                                            \
        case FMT_F32: mvc_body<FMT_F32, R, K, 1>(W, d_off, rows, cols, xs, cols, 0, 1, y, rows, r0); break; \
        case FMT_F16: mvc_body<FMT_F16, R, K, 1>(W, d_off, rows, cols, xs, cols, 0, 1, y, rows, r0); break; \
        case FMT_BF16: mvc_body<FMT_BF16, R, K, 1>(W, d_off, rows, cols, xs, cols, 0, 1, y, rows, r0); break; \
        default: mvc_body<FMT_Q8_0, R, K, 1>(W, d_off, rows, cols, xs, cols, 0, 1, y, rows, r0);  \
        }                                                                                         \
    }
MVC_SW_KERNEL(1, 8)
MVC_SW_KERNEL(2, 4)
MVC_SW_KERNEL(4, 2)
MVC_SW_KERNEL(8, 1)

// Several matrices on one input row (decode): `mvm_R` runs mvc_body for up to
// MVM_MAX matrices in one launch; matrix e owns blocks [bstart[e], bstart[e+1]).
// Same sums as mvc_R_1 on each matrix alone.
#define MVM_MAX 8
struct MvTab {
    const u8* w[MVM_MAX];
    float* y[MVM_MAX];
    long long d_off[MVM_MAX];
    int fmt[MVM_MAX];
    int rows[MVM_MAX];
    int bstart[MVM_MAX + 1];
    int n;
};
#define MVM_KERNEL(R, K)                                                                          \
    extern "C" __global__ void __launch_bounds__(128, 4) mvm_##R(MvTab tab, int cols,             \
                                                                 const float* __restrict__ x) {   \
        int b = blockIdx.x, e = 0;                                                                \
        while (e + 1 < tab.n && b >= tab.bstart[e + 1]) e++;                                      \
        int rows = tab.rows[e];                                                                   \
        int r0 = ((b - tab.bstart[e]) * 4 + (threadIdx.x >> 5)) * R;                              \
        if (r0 >= rows) return;                                                                   \
        const u8* w = tab.w[e];                                                                   \
        long long dof = tab.d_off[e];                                                             \
        float* y = tab.y[e];                                                                      \
        switch (tab.fmt[e]) {                                                                     \
        case FMT_F32: mvc_body<FMT_F32, R, K, 1>(w, dof, rows, cols, XPlain{x}, cols, 0, 1, y, rows, r0); break; \
        case FMT_F16: mvc_body<FMT_F16, R, K, 1>(w, dof, rows, cols, XPlain{x}, cols, 0, 1, y, rows, r0); break; \
        case FMT_BF16: mvc_body<FMT_BF16, R, K, 1>(w, dof, rows, cols, XPlain{x}, cols, 0, 1, y, rows, r0); break; \
        default: mvc_body<FMT_Q8_0, R, K, 1>(w, dof, rows, cols, XPlain{x}, cols, 0, 1, y, rows, r0);     \
        }                                                                                         \
    }
MVM_KERNEL(1, 8)
MVM_KERNEL(2, 4)
MVM_KERNEL(4, 2)
MVM_KERNEL(8, 1)

// ---------------------------------------------------------------------------
// Routed-expert matrix × vector for one token per slot (decode): IQ2_XXS and
// Q2_K rows in their GGUF block layout. A warp owns R rows and issues every
// raw load of its J sub-blocks per row before decoding any, so R*J sub-blocks
// are in flight per lane; each x sub-block it loads serves R rows. Same
// arguments as `matvec` (ntok must be 1). Block scales are factored out of
// the sums: IQ2_XXS d*(0.5+s)/4 * sum(+-grid*x), Q2_K
// dl*sum(q*x) - ml*sum(x) per 16 weights, sum(x) shared by the R rows.
// ---------------------------------------------------------------------------
__device__ __forceinline__ u32 sign_bits(u32 i) { return i | ((__popc(i) & 1) << 7); }

// Row pointers (rows past the end clamped to the last, never written) and
// zeroed sums of a warp's R rows; the warp-reduced sums written back.
template <int R>
__device__ __forceinline__ void mvx_rows(const u8* base, long long rb, int r0, int rows,
                                         const u8** wr, float* acc) {
#pragma unroll
    for (int i = 0; i < R; i++) {
        wr[i] = base + (long long)min(r0 + i, rows - 1) * rb;
        acc[i] = 0.f;
    }
}
template <int R>
__device__ __forceinline__ void mvx_store(const float* acc, float* yb, int r0, int rows) {
    int lane = threadIdx.x & 31;
#pragma unroll
    for (int i = 0; i < R; i++) {
        float s = warp_sum(acc[i]);
        if (lane == 0 && r0 + i < rows) yb[r0 + i] = s;
    }
}

// x fetch of the mvx bodies: 16-byte chunk q (0..7) of 32-value sub-block g, from the
// global row or from the block's shared copy, whose chunks are XOR-swizzled within each
// sub-block so that the 8 lanes of a quarter-warp (8 consecutive sub-blocks) read 8
// distinct bank groups.
struct XGlobal {
    const float* x;
    __device__ __forceinline__ float4 operator()(int g, int q) const {
        return ((const float4*)(x + g * 32))[q];
    }
};
__device__ __forceinline__ int xswz(int g, int q) { return g * 8 + (q ^ (g & 7)); }
struct XShared {
    const float4* s;
    __device__ __forceinline__ float4 operator()(int g, int q) const { return s[xswz(g, q)]; }
};

// Per-lane partial sums of R rows (row pointers wr) into acc.
// SGN: the signs applied to the grid bytes (two's complement per byte, then
// biased by 128 for the exact byte-to-float conversion; smask: the 8 sign bits
// of each 7-bit index as 0x00/0xFF bytes) instead of to x: the same products,
// so the same bits, in fewer instructions.
template <int R, int J, bool SGN, class XF>
__device__ __forceinline__ void mvx_iq2_dot(const u8* const* wr, int cols, XF xf, float* acc,
                                            const u64* __restrict__ grid,
                                            const u64* __restrict__ smask) {
    int lane = threadIdx.x & 31;
    int nsub = cols / 32;
    for (int g0 = lane; g0 < nsub; g0 += 32 * J) {
        u32 a0[R][J], a1[R][J];
        float dd[R][J];
#pragma unroll
        for (int i = 0; i < R; i++)
#pragma unroll
            for (int j = 0; j < J; j++) {
                int g = min(g0 + 32 * j, nsub - 1);
                const u8* blk = wr[i] + (g >> 3) * 66;
                const u8* o = blk + 2 + 8 * (g & 7);
                dd[i][j] = h2f(ld16(blk));
                a0[i][j] = (u32)ld16(o) | ((u32)ld16(o + 2) << 16);
                a1[i][j] = (u32)ld16(o + 4) | ((u32)ld16(o + 6) << 16);
            }
#pragma unroll
        for (int j = 0; j < J; j++) {
            int g = g0 + 32 * j;
            if (g >= nsub) break;
            float xv[32];
#pragma unroll
            for (int q = 0; q < 8; q++) {
                float4 v = xf(g, q);
                xv[4 * q] = v.x; xv[4 * q + 1] = v.y; xv[4 * q + 2] = v.z; xv[4 * q + 3] = v.w;
            }
#pragma unroll
            for (int i = 0; i < R; i++) {
                u32 x0 = a0[i][j], x1 = a1[i][j];
                float sum = 0.f;
#pragma unroll
                for (int k = 0; k < 4; k++) {
                    u64 gv = grid[(x0 >> (8 * k)) & 0xff];
                    if (SGN) {
                        u64 sm = smask[(x1 >> (7 * k)) & 0x7f];
                        u32 m[2] = {(u32)sm, (u32)(sm >> 32)};
                        u32 g[2] = {(u32)gv, (u32)(gv >> 32)};
                        u32 b[2];
#pragma unroll
                        for (int h = 0; h < 2; h++)
                            b[h] = (g[h] ^ m[h] ^ 0x80808080u) + (m[h] & 0x01010101u);
#pragma unroll
                        for (int e = 0; e < 8; e++) {
                            float v = __int_as_float(__byte_perm(b[e >> 2], 0x4B000000u, 0x7540 + (e & 3))) -
                                      8388736.f;
                            sum = fmaf(v, xv[8 * k + e], sum);
                        }
                    } else {
                        u32 gw[2] = {(u32)gv, (u32)(gv >> 32)};
                        u32 sg = sign_bits((x1 >> (7 * k)) & 0x7f);
#pragma unroll
                        for (int e = 0; e < 8; e++) {
                            float v = byte_float(gw[e >> 2], e & 3);
                            float xs = __int_as_float(__float_as_int(xv[8 * k + e]) ^ ((sg << (31 - e)) & 0x80000000u));
                            sum = fmaf(v, xs, sum);
                        }
                    }
                }
                float db = dd[i][j] * (0.5f + (float)(x1 >> 28)) * 0.25f;
                acc[i] = fmaf(db, sum, acc[i]);
            }
        }
    }
}
template <int R, int J, bool SGN, class XF>
__device__ __forceinline__ void mvx_iq2_body(const u8* __restrict__ base, int rows, int cols,
                                             XF xf, float* __restrict__ yb, int r0,
                                             const u64* __restrict__ grid,
                                             const u64* __restrict__ smask) {
    const u8* wr[R];
    float acc[R];
    mvx_rows<R>(base, (long long)(cols / 256) * 66, r0, rows, wr, acc);
    mvx_iq2_dot<R, J, SGN>(wr, cols, xf, acc, grid, smask);
    mvx_store<R>(acc, yb, r0, rows);
}

template <int R, int J, class XF>
__device__ __forceinline__ void mvx_q2k_dot(const u8* const* wr, int cols, XF xf, float* acc) {
    int lane = threadIdx.x & 31;
    int nsub = cols / 32;
    for (int s0 = lane; s0 < nsub; s0 += 32 * J) {
        uint4 qa[R][J], qb[R][J];
        u32 sc[R][J], dm[R][J];
#pragma unroll
        for (int i = 0; i < R; i++)
#pragma unroll
            for (int j = 0; j < J; j++) {
                int sb = min(s0 + 32 * j, nsub - 1);
                const u8* blk = wr[i] + (sb >> 3) * 84;
                int s = sb & 7, n = s >> 2, jj = s & 3;
                const u32* qs = (const u32*)(blk + 16 + 32 * n);
                qa[i][j] = make_uint4(qs[0], qs[1], qs[2], qs[3]);
                qb[i][j] = make_uint4(qs[4], qs[5], qs[6], qs[7]);
                sc[i][j] = ld16(blk + 8 * n + 2 * jj);
                dm[i][j] = ld32(blk + 80);
            }
#pragma unroll
        for (int j = 0; j < J; j++) {
            int sb = s0 + 32 * j;
            if (sb >= nsub) break;
            int shift = 2 * (sb & 3);
            float xv[32];
#pragma unroll
            for (int q = 0; q < 8; q++) {
                float4 v = xf(sb, q);
                xv[4 * q] = v.x; xv[4 * q + 1] = v.y; xv[4 * q + 2] = v.z; xv[4 * q + 3] = v.w;
            }
            float sx0 = 0.f, sx1 = 0.f;
#pragma unroll
            for (int l = 0; l < 16; l++) { sx0 += xv[l]; sx1 += xv[16 + l]; }
#pragma unroll
            for (int i = 0; i < R; i++) {
                u32 w[8] = {qa[i][j].x, qa[i][j].y, qa[i][j].z, qa[i][j].w,
                            qb[i][j].x, qb[i][j].y, qb[i][j].z, qb[i][j].w};
                float s0v = 0.f, s1v = 0.f;
#pragma unroll
                for (int q = 0; q < 4; q++) {
                    u32 t0 = (w[q] >> shift) & 0x03030303u, t1 = (w[4 + q] >> shift) & 0x03030303u;
#pragma unroll
                    for (int b = 0; b < 4; b++) {
                        s0v = fmaf(byte_float(t0, b), xv[4 * q + b], s0v);
                        s1v = fmaf(byte_float(t1, b), xv[16 + 4 * q + b], s1v);
                    }
                }
                float d = h2f((u16)(dm[i][j] & 0xffff)), dmin = h2f((u16)(dm[i][j] >> 16));
                u32 c = sc[i][j];
                float r = d * (float)(c & 0xF) * s0v - dmin * (float)((c >> 4) & 0xF) * sx0;
                r += d * (float)((c >> 8) & 0xF) * s1v - dmin * (float)((c >> 12) & 0xF) * sx1;
                acc[i] += r;
            }
        }
    }
}
template <int R, int J, class XF>
__device__ __forceinline__ void mvx_q2k_body(const u8* __restrict__ base, int rows, int cols,
                                             XF xf, float* __restrict__ yb, int r0) {
    const u8* wr[R];
    float acc[R];
    mvx_rows<R>(base, (long long)(cols / 256) * 84, r0, rows, wr, acc);
    mvx_q2k_dot<R, J>(wr, cols, xf, acc);
    mvx_store<R>(acc, yb, r0, rows);
}

#define MVX_PROLOGUE(R)                                                                           \
    int r0 = (blockIdx.x * 4 + (threadIdx.x >> 5)) * R;                                          \
    const u8* base = W;                                                                           \
    const float* xb = x;                                                                          \
    float* yb = y;                                                                                \
    if (mat_ids) {                                                                                \
        int slot = blockIdx.y;                                                                    \
        base = W + (long long)mat_ids[slot] * mat_bytes;                                          \
        xb = x + (long long)(slot / x_div) * x_stride;                                            \
        yb = y + (long long)slot * y_stride;                                                      \
    }

extern "C" __global__ void __launch_bounds__(128) mvx_iq2(
    const u8* __restrict__ W, long long mat_bytes, const int* mat_ids, int rows, int cols,
    const float* __restrict__ x, long long x_stride, int x_div, float* __restrict__ y,
    long long y_stride) {
    __shared__ u64 grid[256];
    for (int i = threadIdx.x; i < 256; i += blockDim.x) grid[i] = g_iq2xxs_grid[i];
    __syncthreads();
    MVX_PROLOGUE(2)
    if (r0 >= rows) return;
    mvx_iq2_body<2, 4, false>(base, rows, cols, XGlobal{xb}, yb, r0, grid, grid);
}

extern "C" __global__ void __launch_bounds__(128) mvx_q2k(
    const u8* __restrict__ W, long long mat_bytes, const int* mat_ids, int rows, int cols,
    const float* __restrict__ x, long long x_stride, int x_div, float* __restrict__ y,
    long long y_stride) {
    MVX_PROLOGUE(2)
    if (r0 >= rows) return;
    mvx_q2k_body<2, 2>(base, rows, cols, XGlobal{xb}, yb, r0);
}

// Routed experts of decode slots in two launches. `mvs_gate_up`: a warp takes
// rows r, r+1 of the slot's gate and up matrices together (4 rows: the same
// sums in the same order as the per-matrix kernels) and writes
// weight * SwiGLU(gate, up) (the `swiglu` kernel's arithmetic) into mid
// [slots][rows]. `mvs_down`: the down projection of each slot's mid row. A block
// copies its slot's x row into shared memory once (`xswz` layout) and then owns
// `iters` groups of 8 rows (4 warps x 2 rows). IQ2_XXS or Q2_K rows (fmt), cols
// a multiple of 256; x row of slot s is s / k.
__device__ __forceinline__ void mvs_stage(const float* __restrict__ xr, int cols, float4* xs,
                                          int fmt, u64* grid, u64* smask) {
    for (int c = threadIdx.x; c < cols / 4; c += blockDim.x)
        xs[xswz(c >> 3, c & 7)] = ((const float4*)xr)[c];
    if (fmt == FMT_IQ2_XXS) {
        for (int i = threadIdx.x; i < 256; i += blockDim.x) grid[i] = g_iq2xxs_grid[i];
        for (int i = threadIdx.x; i < 128; i += blockDim.x) {
            u32 s8 = sign_bits(i);
            u64 m = 0;
            for (int e = 0; e < 8; e++)
                if ((s8 >> e) & 1) m |= 0xffull << (8 * e);
            smask[i] = m;
        }
    }
    __syncthreads();
}

extern "C" __global__ void __launch_bounds__(128) mvs_gate_up(
    int fmt, const u8* __restrict__ Wg, const u8* __restrict__ Wu, long long mat_bytes,
    const int* __restrict__ mat_ids, int rows, int cols, const float* __restrict__ x, int k,
    const float* __restrict__ wts, float limit, float* __restrict__ mid, int iters) {
    extern __shared__ float4 xs[];
    __shared__ u64 grid[256], smask[128];
    int s = blockIdx.y;
    mvs_stage(x + (long long)(s / k) * cols, cols, xs, fmt, grid, smask);
    long long off = (long long)mat_ids[s] * mat_bytes, rb = row_bytes_dev(fmt, cols);
    float wt = wts ? wts[s] : 1.f;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    for (int it = 0; it < iters; it++) {
        int r0 = ((blockIdx.x * iters + it) * 4 + warp) * 2;
        if (r0 >= rows) return;
        const u8* wr[4];
        float acc[4];
#pragma unroll
        for (int i = 0; i < 2; i++) {
            long long ro = off + (long long)min(r0 + i, rows - 1) * rb;
            wr[i] = Wg + ro;
            wr[2 + i] = Wu + ro;
        }
#pragma unroll
        for (int i = 0; i < 4; i++) acc[i] = 0.f;
        if (fmt == FMT_IQ2_XXS) mvx_iq2_dot<4, 2, true>(wr, cols, XShared{xs}, acc, grid, smask);
        else mvx_q2k_dot<4, 1>(wr, cols, XShared{xs}, acc);
#pragma unroll
        for (int i = 0; i < 4; i++) acc[i] = warp_sum(acc[i]);
        if (lane == 0)
#pragma unroll
            for (int i = 0; i < 2; i++) {
                if (r0 + i >= rows) break;
                float gc = fminf(acc[i], limit);
                float uc = fminf(fmaxf(acc[2 + i], -limit), limit);
                float sv = gc / (1.f + expf(-gc));
                mid[(long long)s * rows + r0 + i] = wt * (sv * uc);
            }
    }
}

extern "C" __global__ void __launch_bounds__(128) mvs_down(
    int fmt, const u8* __restrict__ W, long long mat_bytes, const int* __restrict__ mat_ids,
    int rows, int cols, const float* __restrict__ mid, float* __restrict__ y, int iters) {
    extern __shared__ float4 xs[];
    __shared__ u64 grid[256], smask[128];
    int s = blockIdx.y;
    mvs_stage(mid + (long long)s * cols, cols, xs, fmt, grid, smask);
    const u8* base = W + (long long)mat_ids[s] * mat_bytes;
    float* yb = y + (long long)s * rows;
    int warp = threadIdx.x >> 5;
    for (int it = 0; it < iters; it++) {
        int r0 = ((blockIdx.x * iters + it) * 4 + warp) * 2;
        if (r0 >= rows) return;
        if (fmt == FMT_IQ2_XXS)
            mvx_iq2_body<2, 4, true>(base, rows, cols, XShared{xs}, yb, r0, grid, smask);
        else mvx_q2k_body<2, 2>(base, rows, cols, XShared{xs}, yb, r0);
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

