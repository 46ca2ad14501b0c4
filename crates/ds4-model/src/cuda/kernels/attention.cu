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

// Visible row j of query i (rows of the 512-wide kernels): the raw window
// first (this chunk's own kv rows, else the ring), then the compressed rows
// (all, or the indexer's selection). Sets *rf (f32) or *rh (f16); false for
// an empty selection slot (-1).
__device__ __forceinline__ bool att_row(int j, int nr, long long lo, long long p0, int row0,
                                        const float* kv, const void* raw, int raw_half,
                                        int window, const void* comp, int comp_half,
                                        int vis_mode, const int* sel, int k, int i, int hd,
                                        const float** rf, const u16** rh) {
    if (j < nr) {
        long long qq = lo + j;
        if (qq >= p0) *rf = kv + (long long)(row0 + (qq - p0)) * hd;
        else if (raw_half) *rh = (const u16*)raw + (qq % window) * hd;
        else *rf = (const float*)raw + (qq % window) * hd;
        return true;
    }
    int c = j - nr;
    if (vis_mode == 2) {
        c = sel[(long long)i * k + c];
        if (c < 0) return false;
    }
    if (comp_half) *rh = (const u16*)comp + (long long)c * hd;
    else *rf = (const float*)comp + (long long)c * hd;
    return true;
}

// Decode form (flash-decoding): block = (chunk c, token i, 8 heads); the block
// stages the chunk's visible rows [c*ch, (c+1)*ch) of token i into shared memory
// 16 at a time (each of the 8 warps loads two rows, all loads in flight
// together), then warp w = head 8*blockIdx.z + w runs its online softmax over
// them in row order. Chunk 0 starts from the sink. Writes the chunk's
// unnormalised (m, l, o) to part: o at ((i*heads + h)*nch + c)*512, then m and
// l after all o. The last block of each (token, head group) to finish merges
// the chunks into out (counters: zeroed, one per token and head group; the
// merging block resets its own).
#define ATT_STAGE 16
extern "C" __global__ void __launch_bounds__(256) attention512_split(
    float* part, const float* q, const float* kv, const void* raw, int raw_half, int window,
    const void* comp, int comp_half, int vis_mode, int ratio, const int* sel, int k,
    int row0, long long p0, int heads, const float* sinks, float scale, int ch, int nch,
    int n, float* out, int* counters) {
    const int hd = 512;
    __shared__ float4 rows_sh[ATT_STAGE][128];
    __shared__ int ok_sh[ATT_STAGE];
    __shared__ int last_sh;
    int c = blockIdx.x, i = blockIdx.y;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int h = blockIdx.z * 8 + warp;
    int t = row0 + i;
    long long p = p0 + i;
    long long lo = p + 1 - window;
    if (lo < 0) lo = 0;
    int nr = (int)(p - lo + 1);
    int nc = 0;
    if (vis_mode == 1) nc = (int)((p + 1) / ratio);
    else if (vis_mode == 2) nc = k;
    int j1 = min((c + 1) * ch, nr + nc);
    bool active = h < heads;
    float qv[16];
    if (active) load_row512(q + ((long long)t * heads + h) * hd, 0, qv, lane);
    float m = -INFINITY, l = 0.f;
    if (c == 0 && active) { m = sinks[h]; l = 1.f; }
    float o[16];
#pragma unroll
    for (int j = 0; j < 16; j++) o[j] = 0.f;
    for (int b0 = c * ch; b0 < j1; b0 += ATT_STAGE) {
        int nb = min(ATT_STAGE, j1 - b0);
#pragma unroll
        for (int u = 0; u < ATT_STAGE / 8; u++) {
            int jj = warp + 8 * u;
            const float* rf = 0;
            const u16* rh = 0;
            bool ok = jj < nb && att_row(b0 + jj, nr, lo, p0, row0, kv, raw, raw_half, window,
                                         comp, comp_half, vis_mode, sel, k, i, hd, &rf, &rh);
            if (ok) {
                float v[16];
                load_row512(rf, rh, v, lane);
#pragma unroll
                for (int cc = 0; cc < 4; cc++)
                    rows_sh[jj][cc * 32 + lane] =
                        make_float4(v[4 * cc], v[4 * cc + 1], v[4 * cc + 2], v[4 * cc + 3]);
            }
            if (lane == 0) ok_sh[jj] = ok;
        }
        __syncthreads();
        if (active) {
            for (int jj = 0; jj < nb; jj += 2) {
                float v[2][16], sc[2];
#pragma unroll
                for (int u = 0; u < 2; u++) {
                    int r = min(jj + u, ATT_STAGE - 1);
#pragma unroll
                    for (int cc = 0; cc < 4; cc++) {
                        float4 a = rows_sh[r][cc * 32 + lane];
                        v[u][4 * cc] = a.x; v[u][4 * cc + 1] = a.y;
                        v[u][4 * cc + 2] = a.z; v[u][4 * cc + 3] = a.w;
                    }
                    float d = 0.f;
#pragma unroll
                    for (int e = 0; e < 16; e++) d = fmaf(qv[e], v[u][e], d);
                    sc[u] = warp_sum(d) * scale;
                }
#pragma unroll
                for (int u = 0; u < 2; u++) {
                    if (jj + u >= nb || !ok_sh[jj + u]) continue;
                    float s = sc[u];
                    float mn = fmaxf(m, s);
                    float corr = (m == -INFINITY) ? 0.f : expf(m - mn);
                    float ps = expf(s - mn);
                    l = l * corr + ps;
#pragma unroll
                    for (int e = 0; e < 16; e++) o[e] = o[e] * corr + ps * v[u][e];
                    m = mn;
                }
            }
        }
        __syncthreads();
    }
    long long total = (long long)n * heads * nch;
    if (active) {
        long long slot = ((long long)i * heads + h) * nch + c;
        float* po = part + slot * hd;
#pragma unroll
        for (int cc = 0; cc < 4; cc++)
            *(float4*)(po + cc * 128 + lane * 4) =
                make_float4(o[4 * cc], o[4 * cc + 1], o[4 * cc + 2], o[4 * cc + 3]);
        if (lane == 0) {
            part[total * hd + slot] = m;
            part[total * hd + total + slot] = l;
        }
    }
    // the last block of (token i, head group) to finish merges the chunks in
    // order and resets its counter
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        int* cnt = counters + (long long)i * gridDim.z + blockIdx.z;
        int done = atomicAdd(cnt, 1);
        last_sh = done == nch - 1;
        if (last_sh) *cnt = 0;
    }
    __syncthreads();
    if (!last_sh || !active) return;
    __threadfence();
    long long s0 = ((long long)i * heads + h) * nch;
    const float* pm = part + total * hd + s0;
    const float* pl = part + total * hd + total + s0;
    float M = -INFINITY;
    for (int cc = 0; cc < nch; cc++) M = fmaxf(M, __ldcg(pm + cc));
    float L = 0.f;
    float acc[16];
#pragma unroll
    for (int e = 0; e < 16; e++) acc[e] = 0.f;
    for (int cc = 0; cc < nch; cc++) {
        float mc = __ldcg(pm + cc);
        if (mc == -INFINITY) continue;
        float f = expf(mc - M);
        L += __ldcg(pl + cc) * f;
        const float* pc = part + (s0 + cc) * hd;
#pragma unroll
        for (int q4 = 0; q4 < 4; q4++) {
            float4 v = __ldcg((const float4*)(pc + q4 * 128 + lane * 4));
            acc[4 * q4] += v.x * f; acc[4 * q4 + 1] += v.y * f;
            acc[4 * q4 + 2] += v.z * f; acc[4 * q4 + 3] += v.w * f;
        }
    }
    float* oh = out + ((long long)(row0 + i) * heads + h) * hd;
#pragma unroll
    for (int q4 = 0; q4 < 4; q4++)
        *(float4*)(oh + q4 * 128 + lane * 4) = make_float4(acc[4 * q4] / L, acc[4 * q4 + 1] / L,
                                                          acc[4 * q4 + 2] / L, acc[4 * q4 + 3] / L);
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
        if (!att_row(j, nr, lo, p0, row0, kv, raw, raw_half, window, comp, comp_half, vis_mode,
                     sel, k, i, hd, &rf, &rh))
            continue;
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

