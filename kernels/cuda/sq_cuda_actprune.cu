/* sq_cuda_actprune.cu — fused prune-and-pack into BSR (l2, random, and the
 * unstructured control as CSR), the CSR weight gradient and the BSR weight
 * gradient on tensor cores (see sq_cuda_actprune.h for the algorithms and
 * their guarantees; engine/sq_bsr.c holds the CPU references). */
#include "sq_cuda_internal.h"
#include "sq_cuda_actprune.h"

extern "C" {
#include "sq_select.h"
}

#include <limits.h>
#include <string.h>

#define FULL_MASK 0xffffffffu

/* ============================================================================
 * shared device helpers
 * ========================================================================== */

/* sq_select_key_f64 on the device: a > b <=> key(a) > key(b), NaN -> 0. */
__device__ __forceinline__ unsigned long long key_f64(double v)
{
    if (v != v) return 0ull;
    if (v == 0) v = 0.0;
    unsigned long long u = (unsigned long long)__double_as_longlong(v);
    return (u & 0x8000000000000000ull) ? ~u : (u | 0x8000000000000000ull);
}

/* Where a score stands against the selection boundary: 2 above the boundary
 * bucket (kept), 1 inside it (kept if among its first `need` by index),
 * 0 below.  shift 64 = no digit fixed yet: everything is in the bucket. */
__device__ __forceinline__ int classify(double s, int shift, unsigned long long prefix)
{
    if (shift >= 64) return 1;
    unsigned long long kb = key_f64(s) >> shift, pb = prefix >> shift;
    return kb > pb ? 2 : kb == pb ? 1 : 0;
}

/* Exclusive prefix sum of v over the CTA (blockDim.x a multiple of 32);
 * *total gets the CTA's sum.  sh: 32 ints of shared memory. */
__device__ __forceinline__ int block_exscan(int v, int *sh, int *total)
{
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    int inc = v;
    for (int o = 1; o < 32; o <<= 1) {
        int t = __shfl_up_sync(FULL_MASK, inc, o);
        if (lane >= o) inc += t;
    }
    __syncthreads(); /* sh may still be read by a previous call */
    if (lane == 31) sh[w] = inc;
    __syncthreads();
    if (w == 0) {
        int s = lane < nw ? sh[lane] : 0;
        for (int o = 1; o < 32; o <<= 1) {
            int t = __shfl_up_sync(FULL_MASK, s, o);
            if (lane >= o) s += t;
        }
        if (lane < nw) sh[lane] = s;
    }
    __syncthreads();
    *total = sh[nw - 1];
    return (w ? sh[w - 1] : 0) + inc - v;
}

/* ============================================================================
 * prune-and-pack
 * ========================================================================== */

#define SC_THREADS 128 /* columns per scoring CTA (rounded down to whole blocks) */

/* scores (nbr*nbc) float64: squared norm of block (i,j).  CTA (i, column
 * tile): each thread sums one column of the block row down its b rows
 * (coalesced across the warp), then one thread per block adds the block's
 * column sums in order, so equal blocks get equal scores wherever they are. */
__global__ void k_scores(double *__restrict__ scores, const float *__restrict__ x, int64_t R,
                         int64_t K, int64_t s0, int64_t s1, int b, int64_t nbc)
{
    __shared__ double col[SC_THREADS];
    const int bpt = SC_THREADS / b, tw = bpt * b; /* blocks and columns per tile */
    int64_t i = blockIdx.x, r0 = i * b;
    int64_t c = (int64_t)blockIdx.y * tw + threadIdx.x;
    int bh = (int)min((int64_t)b, R - r0);
    double s = 0;
    if (threadIdx.x < tw && c < K) {
        const float *p = x + r0 * s0 + c * s1;
        int r = 0;
        for (; r + 8 <= bh; r += 8) {
            float v[8];
#pragma unroll
            for (int u = 0; u < 8; u++) v[u] = p[(int64_t)(r + u) * s0];
#pragma unroll
            for (int u = 0; u < 8; u++) s = fma((double)v[u], (double)v[u], s);
        }
        for (; r < bh; r++) {
            double e = p[(int64_t)r * s0];
            s = fma(e, e, s);
        }
    }
    col[threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.x < bpt) {
        int64_t j = (int64_t)blockIdx.y * bpt + threadIdx.x;
        if (j < nbc) {
            double t = 0;
            for (int q = 0; q < b; q++) t += col[threadIdx.x * b + q];
            scores[i * nbc + j] = t;
        }
    }
}

/* scores (n) float64 for the random criterion: one uniform draw in [0,1)
 * (53 bits) per block from Philox4x32-10, key = the context's seed, counter
 * = (block index, the call's offset), so a draw depends only on the seed,
 * the offset and the block, never on the launch shape. */
__global__ void k_scores_random(double *__restrict__ scores, int64_t n, unsigned k0, unsigned k1,
                                unsigned o0, unsigned o1)
{
    SQ_GRID_LOOP(p, n) {
        unsigned ctr[4] = {(unsigned)p, (unsigned)((uint64_t)p >> 32), o0, o1}, key[2] = {k0, k1}, r[4];
        sq_philox4x32_10(ctr, key, r);
        unsigned long long u = (((unsigned long long)r[0] << 32) | r[1]) >> 11;
        scores[p] = (double)u * 0x1.0p-53;
    }
}

/* State of the whole-tensor radix select, in device memory so that the
 * digit picked by one launch steers the next without the host. */
typedef struct {
    unsigned long long prefix; /* digits fixed so far (bits >= shift) */
    long long need;            /* how many of the boundary bucket are kept */
    int shift;                 /* 64 = nothing fixed */
    int done;
    unsigned int arrive; /* CTAs finished with this pass */
    unsigned int hist[256];
} sel_state;

__global__ void k_sel_init(sel_state *st, long long k, long long n)
{
    st->hist[threadIdx.x] = 0;
    if (threadIdx.x == 0) {
        st->prefix = 0;
        st->need = k;
        st->shift = 64;
        st->done = k >= n;
        st->arrive = 0;
    }
}

/* Picks the digit holding the k-th largest key from a 256-bin histogram of
 * the current bucket (the CPU's select_range step). */
__device__ __forceinline__ void pick_digit(const unsigned int *h, unsigned long long *prefix,
                                           int *shift, long long *need, int *done)
{
    int nshift = *shift - 8, d = 255;
    long long nd = *need;
    while ((long long)h[d] < nd) nd -= h[d--];
    *prefix |= (unsigned long long)d << nshift;
    *shift = nshift;
    *need = nd;
    *done = (long long)h[d] == nd || nshift == 0;
}

/* One digit: histogram of the keys still in the bucket; the last CTA to
 * finish picks the digit and resets the histogram for the next launch. */
__global__ void __launch_bounds__(256) k_sel_pass(sel_state *st, const double *__restrict__ scores,
                                                  int64_t n)
{
    __shared__ unsigned int h[256];
    __shared__ int last;
    if (st->done) return; /* uniform: written by an earlier launch */
    const int shift = st->shift, nshift = shift - 8;
    const unsigned long long prefix = st->prefix;
    h[threadIdx.x] = 0;
    __syncthreads();
    for (int64_t p = (int64_t)blockIdx.x * 256 + threadIdx.x; p < n; p += (int64_t)gridDim.x * 256) {
        unsigned long long key = key_f64(scores[p]);
        if (shift < 64 && (key >> shift) != (prefix >> shift)) continue;
        atomicAdd(&h[(key >> nshift) & 0xff], 1u);
    }
    __syncthreads();
    if (h[threadIdx.x]) atomicAdd(&st->hist[threadIdx.x], h[threadIdx.x]);
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(&st->arrive, 1u) == gridDim.x - 1;
    __syncthreads();
    if (!last) return;
    __threadfence();
    h[threadIdx.x] = atomicExch(&st->hist[threadIdx.x], 0u);
    __syncthreads();
    if (threadIdx.x == 0) {
        unsigned long long pf = prefix;
        int sh = shift, dn = 0;
        long long nd = st->need;
        pick_digit(h, &pf, &sh, &nd, &dn);
        st->prefix = pf;
        st->shift = sh;
        st->need = nd;
        st->arrive = 0;
        st->done = dn;
    }
}

#define TILE_THREADS 256
#define TILE_ITEMS 4
#define TILE (TILE_THREADS * TILE_ITEMS)

/* Per tile of TILE scores (in block order): how many are in the boundary
 * bucket and how many above it. */
__global__ void __launch_bounds__(TILE_THREADS) k_tile_count(int *t_eq, int *t_gt,
                                                             const double *__restrict__ scores,
                                                             int64_t n, const sel_state *st)
{
    __shared__ int sh[32];
    const int shift = st->shift;
    const unsigned long long prefix = st->prefix;
    int64_t p0 = (int64_t)blockIdx.x * TILE + threadIdx.x * TILE_ITEMS;
    int e = 0, g = 0;
#pragma unroll
    for (int u = 0; u < TILE_ITEMS; u++)
        if (p0 + u < n) {
            int c = classify(scores[p0 + u], shift, prefix);
            e += c == 1;
            g += c == 2;
        }
    e = sq_block_sum(e, sh);
    g = sq_block_sum(g, sh);
    if (threadIdx.x == 0) {
        t_eq[blockIdx.x] = e;
        t_gt[blockIdx.x] = g;
    }
}

/* One CTA: exclusive scans over the tiles of the bucket counts (for the
 * tie-break by index) and of the kept counts (for the slots). */
__global__ void __launch_bounds__(1024) k_tile_scan(int *eq_base, int *kept_base,
                                                    const int *t_eq, const int *t_gt, int64_t T,
                                                    const sel_state *st, int64_t *row_ptr_end)
{
    __shared__ int sh[32];
    const long long need = st->need;
    long long ceq = 0, ck = 0;
    for (int64_t c0 = 0; c0 < T; c0 += blockDim.x) {
        int64_t t = c0 + threadIdx.x;
        int e = t < T ? t_eq[t] : 0, g = t < T ? t_gt[t] : 0, tot;
        long long eb = ceq + block_exscan(e, sh, &tot);
        long long room = need - eb;
        int kept = g + (int)(room <= 0 ? 0 : room >= e ? e : room);
        ceq += tot;
        int exk = block_exscan(kept, sh, &tot);
        if (t < T) {
            eq_base[t] = (int)eb;
            kept_base[t] = (int)(ck + exk);
        }
        ck += tot;
    }
    if (threadIdx.x == 0) *row_ptr_end = ck;
}

/* Per tile: decides every block, gives each kept block its slot (block
 * order), writes the slot map, the slot -> block map, col_idx and row_ptr. */
__global__ void __launch_bounds__(TILE_THREADS) k_tile_write(
    int *__restrict__ slotmap, int *__restrict__ blk_id, int32_t *__restrict__ col_idx,
    int64_t *__restrict__ row_ptr, const double *__restrict__ scores, int64_t n, int64_t nbc,
    const sel_state *st, const int *eq_base, const int *kept_base)
{
    __shared__ int sh[32];
    const int shift = st->shift;
    const unsigned long long prefix = st->prefix;
    const long long need = st->need;
    int64_t p0 = (int64_t)blockIdx.x * TILE + threadIdx.x * TILE_ITEMS;
    int cls[TILE_ITEMS], e = 0, tot;
#pragma unroll
    for (int u = 0; u < TILE_ITEMS; u++) {
        cls[u] = p0 + u < n ? classify(scores[p0 + u], shift, prefix) : 0;
        e += cls[u] == 1;
    }
    long long eqr = eq_base[blockIdx.x] + block_exscan(e, sh, &tot);
    int keep[TILE_ITEMS], k = 0;
#pragma unroll
    for (int u = 0; u < TILE_ITEMS; u++) {
        keep[u] = cls[u] == 2 || (cls[u] == 1 && eqr < need);
        eqr += cls[u] == 1;
        k += keep[u];
    }
    int pos = kept_base[blockIdx.x] + block_exscan(k, sh, &tot);
#pragma unroll
    for (int u = 0; u < TILE_ITEMS; u++) {
        int64_t p = p0 + u;
        if (p >= n) break;
        int64_t j = p % nbc;
        if (j == 0) row_ptr[p / nbc] = pos;
        if (keep[u]) {
            slotmap[p] = pos;
            blk_id[pos] = (int)p;
            col_idx[pos] = (int32_t)j;
            pos++;
        } else {
            slotmap[p] = -1;
        }
    }
}

/* Scope row, and the per-block-row budget of the unstructured control: the
 * n scores are consecutive segments of seglen (the last may be shorter);
 * one CTA per segment selects its min(kr, length) best (radix select in
 * shared memory, then the same ordered tie-break) and writes their slots.
 * The scores are a grid of ncols columns (seglen a multiple of ncols):
 * col_idx = p % ncols, row_ptr[p / ncols] = the slot of the first kept
 * entry at or after p for every row start p, row_ptr[n / ncols] = total.
 * Blocks (scope row): seglen = ncols = nbc.  CSR entries: seglen = b*K
 * (one block row of x), ncols = K. */
__global__ void __launch_bounds__(256) k_seg_select(int *__restrict__ slotmap,
                                                    int *__restrict__ blk_id,
                                                    int32_t *__restrict__ col_idx,
                                                    int64_t *__restrict__ row_ptr,
                                                    const double *__restrict__ scores, int64_t n,
                                                    int64_t seglen, int64_t ncols, int64_t kr,
                                                    int64_t total)
{
    __shared__ unsigned int h[256];
    __shared__ int sh[32];
    __shared__ unsigned long long s_prefix;
    __shared__ long long s_need;
    __shared__ int s_shift, s_done;
    const int64_t i = blockIdx.x, p0 = i * seglen;
    const int64_t len = min(seglen, n - p0);
    const double *s = scores + p0;
    const int64_t kk = kr < len ? kr : len;
    if (threadIdx.x == 0) {
        s_prefix = 0;
        s_need = kk;
        s_shift = 64;
        s_done = kr >= len;
    }
    for (;;) {
        __syncthreads();
        if (s_done) break;
        const int shift = s_shift, nshift = shift - 8;
        const unsigned long long prefix = s_prefix;
        h[threadIdx.x] = 0;
        __syncthreads();
        for (int64_t j = threadIdx.x; j < len; j += blockDim.x) {
            unsigned long long key = key_f64(s[j]);
            if (shift < 64 && (key >> shift) != (prefix >> shift)) continue;
            atomicAdd(&h[(key >> nshift) & 0xff], 1u);
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            unsigned long long pf = prefix;
            int shf = shift, dn = 0;
            long long nd = s_need;
            pick_digit(h, &pf, &shf, &nd, &dn);
            s_prefix = pf;
            s_shift = shf;
            s_need = nd;
            s_done = dn;
        }
    }
    const int shift = s_shift;
    const unsigned long long prefix = s_prefix;
    const long long need = s_need;
    /* every earlier segment is full length and kept min(kr, seglen) */
    const int64_t base = i * (kr < seglen ? kr : seglen);
    long long ceq = 0, ck = 0;
    for (int64_t c0 = 0; c0 < len; c0 += blockDim.x) {
        int64_t j = c0 + threadIdx.x;
        int c = j < len ? classify(s[j], shift, prefix) : 0, tot;
        long long eqr = ceq + block_exscan(c == 1, sh, &tot);
        int keep = c == 2 || (c == 1 && eqr < need);
        ceq += tot;
        int exk = block_exscan(keep, sh, &tot);
        if (j < len) {
            int64_t p = p0 + j, pos = base + ck + exk, col = p % ncols;
            if (col == 0) row_ptr[p / ncols] = pos;
            if (keep) {
                slotmap[p] = (int)pos;
                blk_id[pos] = (int)p;
                col_idx[pos] = (int32_t)col;
            } else {
                slotmap[p] = -1;
            }
        }
        ck += tot;
    }
    if (threadIdx.x == 0 && i == gridDim.x - 1) row_ptr[n / ncols] = total;
}

#define COL_THREADS 256
#define COL_ITEMS 4

/* Kept blocks per block column (one CTA per column). */
__global__ void __launch_bounds__(COL_THREADS) k_col_count(int *colcnt, const int *__restrict__ slotmap,
                                                           int64_t nbr, int64_t nbc)
{
    __shared__ int sh[32];
    const int64_t j = blockIdx.x;
    int c = 0;
    for (int64_t i = threadIdx.x; i < nbr; i += blockDim.x) c += slotmap[i * nbc + j] >= 0;
    c = sq_block_sum(c, sh);
    if (threadIdx.x == 0) colcnt[j] = c;
}

/* col_ptr (n+1) = exclusive prefix sums of cnt (n), col_ptr[n] = total. One CTA. */
__global__ void __launch_bounds__(1024) k_exscan_ptr(int64_t *col_ptr, const int *cnt, int64_t n)
{
    __shared__ int sh[32];
    long long carry = 0;
    for (int64_t c0 = 0; c0 < n; c0 += blockDim.x) {
        int64_t t = c0 + threadIdx.x;
        int tot, v = t < n ? cnt[t] : 0;
        int ex = block_exscan(v, sh, &tot);
        if (t < n) col_ptr[t] = carry + ex;
        carry += tot;
    }
    if (threadIdx.x == 0) col_ptr[n] = carry;
}

/* Transposed index: column j's kept blocks in ascending block row. */
__global__ void __launch_bounds__(COL_THREADS) k_col_fill(int32_t *__restrict__ t_row,
                                                          int32_t *__restrict__ t_blk,
                                                          const int64_t *__restrict__ col_ptr,
                                                          const int *__restrict__ slotmap,
                                                          int64_t nbr, int64_t nbc)
{
    __shared__ int sh[32];
    const int64_t j = blockIdx.x;
    int64_t q = col_ptr[j];
    for (int64_t c0 = 0; c0 < nbr; c0 += COL_THREADS * COL_ITEMS) {
        int64_t i0 = c0 + (int64_t)threadIdx.x * COL_ITEMS;
        int sl[COL_ITEMS], f = 0, tot;
#pragma unroll
        for (int u = 0; u < COL_ITEMS; u++) {
            sl[u] = i0 + u < nbr ? slotmap[(i0 + u) * nbc + j] : -1;
            f += sl[u] >= 0;
        }
        int64_t pos = q + block_exscan(f, sh, &tot);
#pragma unroll
        for (int u = 0; u < COL_ITEMS; u++)
            if (sl[u] >= 0) {
                t_row[pos] = (int32_t)(i0 + u);
                t_blk[pos] = sl[u];
                pos++;
            }
        q += tot;
    }
}

/* values (nnzb,b,b) <- the kept blocks of x, zero padding.  A CTA copies
 * `spc` consecutive slots; W = 4: 16-byte loads and stores (b % 4 == 0,
 * x rows 16-byte aligned), W = 1 otherwise. */
template <int W>
__global__ void __launch_bounds__(256) k_pack(float *__restrict__ values, const int *__restrict__ blk_id,
                                              int64_t nnzb, int spc, const float *__restrict__ x,
                                              int64_t R, int64_t K, int64_t s0, int64_t s1, int b,
                                              int64_t nbc)
{
    const int bb = b * b, cps = bb / W; /* chunks per slot */
    const int64_t first = (int64_t)blockIdx.x * spc;
    const int nsl = (int)min((int64_t)spc, nnzb - first);
    const int n = nsl * cps;
    constexpr int U = 4;
    for (int base = threadIdx.x; base < n; base += U * 256) {
        float v[U][W];
        int64_t dst[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            int lq = base + u * 256;
            dst[u] = -1;
            if (lq >= n) continue;
            int sl = lq / cps, w = (lq - sl * cps) * W, r = w / b, c = w - r * b;
            int64_t slot = first + sl, id = blk_id[slot], i = id / nbc, j = id - i * nbc;
            int64_t row = i * b + r, col = j * b + c;
            dst[u] = slot * bb + w;
            if (W == 4 && row < R && col + 3 < K) {
                float4 t = *reinterpret_cast<const float4 *>(x + row * s0 + col);
                v[u][0] = t.x;
                v[u][1] = t.y;
                v[u][2] = t.z;
                v[u][3] = t.w;
            } else {
#pragma unroll
                for (int e = 0; e < W; e++)
                    v[u][e] = row < R && col + e < K ? x[row * s0 + (col + e) * s1] : 0.0f;
            }
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            if (dst[u] < 0) continue;
            if (W == 4)
                *reinterpret_cast<float4 *>(values + dst[u]) =
                    make_float4(v[u][0], v[u][W > 1 ? 1 : 0], v[u][W > 2 ? 2 : 0], v[u][W > 3 ? 3 : 0]);
            else
                values[dst[u]] = v[u][0];
        }
    }
}

/* ---- host ------------------------------------------------------------------------------ */

static int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

extern "C" sq_status sq_cuda_bsr_shape(sq_ctx *ctx, int64_t R, int64_t K, int64_t b, double keep,
                                       sq_prune_scope scope, sq_cuda_bsr *m)
{
    memset(m, 0, sizeof *m);
    if (b < 1) return sq_fail(ctx, SQ_ERR_ARG, "bsr_shape: block size %lld must be >= 1", (long long)b);
    if (R < 0 || K < 0)
        return sq_fail(ctx, SQ_ERR_ARG, "bsr_shape: negative size %lldx%lld", (long long)R, (long long)K);
    if (!(keep > 0 && keep <= 1))
        return sq_fail(ctx, SQ_ERR_ARG, "bsr_shape: keep ratio %g must be in (0,1]", keep);
    if ((unsigned)scope >= SQ_PRUNE_NSCOPES)
        return sq_fail(ctx, SQ_ERR_ARG, "bsr_shape: unknown scope %d", (int)scope);
    int64_t nbr = cdiv(R, b), nbc = cdiv(K, b);
    if (nbr > INT32_MAX || nbc > INT32_MAX || (nbc > 0 && nbr > INT32_MAX / nbc))
        return sq_fail(ctx, SQ_ERR_ARG, "bsr_shape: a %lldx%lld block grid has more than 2^31-1 blocks",
                       (long long)nbr, (long long)nbc);
    m->rows = R;
    m->cols = K;
    m->b = b;
    m->nbr = nbr;
    m->nbc = nbc;
    m->nnzb = scope == SQ_PRUNE_SCOPE_TENSOR ? sq_select_count(keep, nbr * nbc)
                                             : nbr * sq_select_count(keep, nbc);
    return SQ_OK;
}

extern "C" sq_status sq_cuda_bsr_shape_crit(sq_ctx *ctx, int64_t R, int64_t K, int64_t b, double keep,
                                            sq_prune_criterion crit, sq_prune_scope scope, sq_cuda_bsr *m)
{
    if ((unsigned)crit >= SQ_PRUNE_NCRITERIA) {
        memset(m, 0, sizeof *m);
        return sq_fail(ctx, SQ_ERR_ARG, "bsr_shape: unknown criterion %d", (int)crit);
    }
    sq_cuda_bsr blk;
    SQ_TRY(sq_cuda_bsr_shape(ctx, R, K, b, keep, scope, &blk)); /* checks b, keep, scope */
    if (crit != SQ_PRUNE_TOPK_UNSTRUCTURED) {
        *m = blk;
        return SQ_OK;
    }
    /* CSR: the entries are the 1x1 blocks of the same matrix */
    SQ_TRY(sq_cuda_bsr_shape(ctx, R, K, 1, 1.0, SQ_PRUNE_SCOPE_TENSOR, m));
    const int64_t n = R * K;
    if (scope == SQ_PRUNE_SCOPE_TENSOR) {
        double e = (double)blk.nnzb * (double)b * (double)b;
        m->nnzb = e >= (double)n ? n : blk.nnzb * b * b;
    } else { /* a block row is b rows: b*K consecutive entries (one segment when b >= R) */
        int64_t seg = (b < R ? b : R) * K, kr;
        double e = (double)sq_select_count(keep, blk.nbc) * (double)b * (double)b;
        kr = e >= (double)seg ? seg : sq_select_count(keep, blk.nbc) * b * b;
        m->nnzb = sq_select_segments_total(n, seg, kr);
    }
    return SQ_OK;
}

/* the six buffers in one table, for alloc / free / bytes */
static void bsr_bufs(sq_cuda_bsr *m, void ***pp, size_t *bytes)
{
    pp[0] = (void **)&m->row_ptr;
    bytes[0] = (size_t)(m->nbr + 1) * 8;
    pp[1] = (void **)&m->col_idx;
    bytes[1] = (size_t)m->nnzb * 4;
    pp[2] = (void **)&m->values;
    bytes[2] = (size_t)m->nnzb * (size_t)(m->b * m->b) * 4;
    pp[3] = (void **)&m->col_ptr;
    bytes[3] = (size_t)(m->nbc + 1) * 8;
    pp[4] = (void **)&m->t_row;
    bytes[4] = (size_t)m->nnzb * 4;
    pp[5] = (void **)&m->t_blk;
    bytes[5] = (size_t)m->nnzb * 4;
}

extern "C" sq_status sq_cuda_bsr_alloc(sq_ctx *ctx, sq_cuda_bsr *m, sq_mem_cat cat)
{
    SQ_CUDA_ENTER(ctx, "bsr_alloc");
    if ((unsigned)cat >= SQ_MEM_NCAT)
        return sq_fail(ctx, SQ_ERR_ARG, "bsr_alloc: unknown memory category %d", (int)cat);
    void **pp[6];
    size_t bytes[6];
    bsr_bufs(m, pp, bytes);
    for (int q = 0; q < 6; q++) *pp[q] = NULL;
    m->cat = cat;
    for (int q = 0; q < 6; q++) {
        sq_status st = sq_cuda_alloc(ctx, bytes[q], pp[q]);
        if (st != SQ_OK) {
            for (int r = 0; r < q; r++) {
                sq_mem_sub(ctx, SQ_CUDA, cat, (int64_t)bytes[r]);
                sq_cuda_free_block(ctx, *pp[r]);
                *pp[r] = NULL;
            }
            return st;
        }
        sq_mem_add(ctx, SQ_CUDA, cat, (int64_t)bytes[q]);
    }
    return SQ_OK;
}

extern "C" void sq_cuda_bsr_free(sq_ctx *ctx, sq_cuda_bsr *m)
{
    if (!m || !ctx || !ctx->cuda) return;
    void **pp[6];
    size_t bytes[6];
    bsr_bufs(m, pp, bytes);
    for (int q = 0; q < 6; q++)
        if (*pp[q]) {
            sq_mem_sub(ctx, SQ_CUDA, m->cat, (int64_t)bytes[q]);
            sq_cuda_free_block(ctx, *pp[q]);
            *pp[q] = NULL;
        }
}

extern "C" int64_t sq_cuda_bsr_bytes(const sq_cuda_bsr *m)
{
    if (!m) return 0;
    sq_cuda_bsr c = *m;
    void **pp[6];
    size_t bytes[6];
    bsr_bufs(&c, pp, bytes);
    int64_t t = 0;
    for (int q = 0; q < 6; q++) t += (int64_t)bytes[q];
    return t;
}

/* need_t: 1 the transposed index must be there, 0 it may be absent (all
 * three of its buffers NULL) or there */
static sq_status need_bsr_t(sq_ctx *ctx, const char *fn, const sq_cuda_bsr *m, int need_t)
{
    if (!m) return sq_fail(ctx, SQ_ERR_ARG, "%s: matrix is missing", fn);
    int has_t = m->col_ptr || m->t_row || m->t_blk;
    if (!m->row_ptr || (m->nnzb > 0 && (!m->col_idx || !m->values)))
        return sq_fail(ctx, SQ_ERR_ARG, "%s: matrix buffers are not allocated (sq_cuda_bsr_alloc)", fn);
    if ((need_t || has_t) && (!m->col_ptr || (m->nnzb > 0 && (!m->t_row || !m->t_blk))))
        return sq_fail(ctx, SQ_ERR_ARG, "%s: the transposed index (col_ptr, t_row, t_blk) is %s", fn,
                       has_t ? "partly allocated" : "missing (sq_cuda_bsr_build_transpose)");
    if (m->b < 1 || m->nbr != cdiv(m->rows, m->b) || m->nbc != cdiv(m->cols, m->b) || m->nnzb < 0 ||
        m->nnzb > m->nbr * m->nbc)
        return sq_fail(ctx, SQ_ERR_ARG, "%s: inconsistent BSR sizes (rows %lld, cols %lld, b %lld, "
                       "%lldx%lld blocks, nnzb %lld)", fn, (long long)m->rows, (long long)m->cols,
                       (long long)m->b, (long long)m->nbr, (long long)m->nbc, (long long)m->nnzb);
    return SQ_OK;
}

static sq_status need_bsr(sq_ctx *ctx, const char *fn, const sq_cuda_bsr *m)
{
    return need_bsr_t(ctx, fn, m, 1);
}

/* aligned carving of one workspace block */
static void *carve(char **p, size_t bytes)
{
    void *r = *p;
    *p += (bytes + 255) & ~(size_t)255;
    return r;
}

extern "C" sq_status sq_cuda_bsr_prune_pack_crit(sq_ctx *ctx, sq_cuda_bsr *m, const float *x, int64_t s0,
                                                 int64_t s1, int64_t block, double keep,
                                                 sq_prune_criterion crit, sq_prune_scope scope)
{
    const char *fn = "bsr_prune_pack";
    SQ_CUDA_ENTER(ctx, fn);
    SQ_TRY(need_bsr_t(ctx, fn, m, 0));
    const int with_t = m->col_ptr != NULL; /* build the transposed index too */
    const int csr = crit == SQ_PRUNE_TOPK_UNSTRUCTURED;
    sq_cuda_bsr want;
    SQ_TRY(sq_cuda_bsr_shape_crit(ctx, m->rows, m->cols, block, keep, crit, scope, &want));
    if (want.b != m->b || want.nnzb != m->nnzb)
        return sq_fail(ctx, SQ_ERR_ARG, "%s: the matrix has b %lld and room for %lld %s, criterion %s at "
                       "keep %g (scope %s, block %lld) needs b %lld and %lld (shape it with "
                       "sq_cuda_bsr_shape_crit)", fn, (long long)m->b, (long long)m->nnzb,
                       csr ? "entries" : "blocks", sq_prune_criterion_name(crit), keep,
                       sq_prune_scope_name(scope), (long long)block, (long long)want.b, (long long)want.nnzb);
    /* b: the stored block edge (1 for CSR); block: the edge the budget counts in */
    const int64_t R = m->rows, K = m->cols, b = m->b, nbr = m->nbr, nbc = m->nbc, nb = nbr * nbc;
    if (b > SC_THREADS)
        return sq_fail(ctx, SQ_ERR_ARG, "%s: block size %lld > %d is not supported on the GPU", fn,
                       (long long)b, SC_THREADS);
    if (nb > 0 && (!x || s0 < 0 || s1 < 0))
        return sq_fail(ctx, SQ_ERR_ARG, "%s: x is missing or has negative strides", fn);
    sq_cuda_ctx *cu = ctx->cuda;
    cudaStream_t s = cu->stream;
    /* random: one Philox offset per call, as dropout (taken even when empty,
     * so the stream of offsets does not depend on the sizes) */
    const uint64_t rseed = cu->rng_seed, roff = crit == SQ_PRUNE_RANDOM ? cu->rng_offset++ : 0;
    if (nb == 0) { /* no blocks: empty row and column pointers */
        cudaMemsetAsync(m->row_ptr, 0, (size_t)(nbr + 1) * 8, s);
        if (with_t) cudaMemsetAsync(m->col_ptr, 0, (size_t)(nbc + 1) * 8, s);
        return sq_cuda_launched(ctx, fn, "empty %lldx%lld", (long long)R, (long long)K);
    }
    const int bpt = SC_THREADS / (int)b;
    if (cdiv(nbc, bpt) > 65535)
        return sq_fail(ctx, SQ_ERR_ARG, "%s: %lld columns in blocks of %lld: too many for the scoring grid",
                       fn, (long long)K, (long long)b);
    const int64_t T = cdiv(nb, TILE);
    size_t ws_bytes = 0;
    {
        size_t parts[] = {(size_t)nb * 8, (size_t)nb * 4, (size_t)m->nnzb * 4 + 4, (size_t)T * 16,
                          sizeof(sel_state), (size_t)nbc * 4};
        for (size_t q = 0; q < sizeof parts / sizeof *parts; q++) ws_bytes += (parts[q] + 255) & ~(size_t)255;
    }
    void *ws = NULL;
    SQ_TRY(sq_cuda_ws_alloc(ctx, ws_bytes, &ws));
    char *wp = (char *)ws;
    double *scores = (double *)carve(&wp, (size_t)nb * 8);
    int *slotmap = (int *)carve(&wp, (size_t)nb * 4);
    int *blk_id = (int *)carve(&wp, (size_t)m->nnzb * 4 + 4);
    int *t_eq = (int *)carve(&wp, (size_t)T * 16), *t_gt = t_eq + T, *eq_base = t_gt + T,
        *kept_base = eq_base + T;
    sel_state *sel = (sel_state *)carve(&wp, sizeof(sel_state));
    int *colcnt = (int *)carve(&wp, (size_t)nbc * 4);
    sq_status st = SQ_OK;

    /* 1. scores: the first pass over x (l2: squared block norms; CSR: x²
     * per entry, which is exact in float64 and ranks as |x| does, ties and
     * NaN included), or Philox draws (random, x not read) */
    if (crit == SQ_PRUNE_RANDOM) {
        k_scores_random<<<sq_cuda_grid(nb, 256), 256, 0, s>>>(scores, nb, (unsigned)rseed,
                                                              (unsigned)(rseed >> 32), (unsigned)roff,
                                                              (unsigned)(roff >> 32));
        st = sq_cuda_launched(ctx, "bsr_prune_pack/scores_random", "%lld blocks", (long long)nb);
    } else {
        k_scores<<<dim3((unsigned)nbr, (unsigned)cdiv(nbc, bpt)), SC_THREADS, 0, s>>>(scores, x, R, K, s0, s1,
                                                                                      (int)b, nbc);
        st = sq_cuda_launched(ctx, "bsr_prune_pack/scores", "R %lld, K %lld, b %lld", (long long)R,
                              (long long)K, (long long)b);
    }
    /* 2. select, slots, row_ptr, col_idx */
    if (st == SQ_OK && scope == SQ_PRUNE_SCOPE_TENSOR) {
        k_sel_init<<<1, 256, 0, s>>>(sel, (long long)m->nnzb, (long long)nb);
        int64_t g = cdiv(nb, 1024);
        unsigned grid = (unsigned)(g < 4 * cu->sm_count ? g : 4 * cu->sm_count);
        for (int pass = 0; pass < 8; pass++) k_sel_pass<<<grid, 256, 0, s>>>(sel, scores, nb);
        k_tile_count<<<(unsigned)T, TILE_THREADS, 0, s>>>(t_eq, t_gt, scores, nb, sel);
        k_tile_scan<<<1, 1024, 0, s>>>(eq_base, kept_base, t_eq, t_gt, T, sel, m->row_ptr + nbr);
        k_tile_write<<<(unsigned)T, TILE_THREADS, 0, s>>>(slotmap, blk_id, m->col_idx, m->row_ptr, scores, nb,
                                                          nbc, sel, eq_base, kept_base);
        st = sq_cuda_launched(ctx, "bsr_prune_pack/select", "%lld blocks, keep %lld", (long long)nb,
                              (long long)m->nnzb);
    } else if (st == SQ_OK) {
        /* segments: a block row of the grid, or for CSR a block row of x
         * (min(block, R) rows of K entries) with the budget in entries */
        int64_t kb = sq_select_count(keep, cdiv(K, block)), seg = nbc, kr = kb;
        if (csr) {
            seg = (block < R ? block : R) * K;
            kr = (double)kb * (double)block * (double)block >= (double)seg ? seg : kb * block * block;
        }
        k_seg_select<<<(unsigned)cdiv(nb, seg), 256, 0, s>>>(slotmap, blk_id, m->col_idx, m->row_ptr, scores, nb,
                                                             seg, nbc, kr, m->nnzb);
        st = sq_cuda_launched(ctx, "bsr_prune_pack/select_rows", "%lld segments of %lld, keep %lld per segment",
                              (long long)cdiv(nb, seg), (long long)seg, (long long)kr);
    }
    /* 3. transposed index (when the caller allocated it) */
    if (st == SQ_OK && with_t) {
        k_col_count<<<(unsigned)nbc, COL_THREADS, 0, s>>>(colcnt, slotmap, nbr, nbc);
        k_exscan_ptr<<<1, 1024, 0, s>>>(m->col_ptr, colcnt, nbc);
        k_col_fill<<<(unsigned)nbc, COL_THREADS, 0, s>>>(m->t_row, m->t_blk, m->col_ptr, slotmap, nbr, nbc);
        st = sq_cuda_launched(ctx, "bsr_prune_pack/transpose", "%lld x %lld blocks", (long long)nbr,
                              (long long)nbc);
    }
    /* 4. pack: the second pass over x, kept blocks only */
    if (st == SQ_OK && m->nnzb > 0) {
        int vec = s1 == 1 && s0 % 4 == 0 && b % 4 == 0 && ((uintptr_t)x & 15) == 0;
        int cps = (int)(b * b) / (vec ? 4 : 1);
        int spc = 2048 / cps > 1 ? 2048 / cps : 1;
        unsigned grid = (unsigned)cdiv(m->nnzb, spc);
        if (vec)
            k_pack<4><<<grid, 256, 0, s>>>(m->values, blk_id, m->nnzb, spc, x, R, K, s0, s1, (int)b, nbc);
        else
            k_pack<1><<<grid, 256, 0, s>>>(m->values, blk_id, m->nnzb, spc, x, R, K, s0, s1, (int)b, nbc);
        st = sq_cuda_launched(ctx, "bsr_prune_pack/pack", "%lld blocks of %lldx%lld%s", (long long)m->nnzb,
                              (long long)b, (long long)b, vec ? ", 16-byte" : "");
    }
    sq_cuda_ws_free(ctx, ws, ws_bytes); /* stream-ordered reuse: safe */
    return st;
}

extern "C" sq_status sq_cuda_bsr_prune_pack(sq_ctx *ctx, sq_cuda_bsr *m, const float *x, int64_t s0,
                                            int64_t s1, double keep, sq_prune_scope scope)
{
    if (!m) return sq_fail(ctx, SQ_ERR_ARG, "bsr_prune_pack: matrix is missing");
    return sq_cuda_bsr_prune_pack_crit(ctx, m, x, s0, s1, m->b, keep, SQ_PRUNE_L2, scope);
}

/* slotmap[i*nbc + col_idx[p]] = p for every stored block p of block row i
 * (one CTA per block row; slotmap preset to -1): what the fused path's
 * selection leaves behind, rebuilt from the BSR itself. */
__global__ void k_slot_scatter(int *__restrict__ slotmap, const int64_t *__restrict__ row_ptr,
                               const int32_t *__restrict__ col_idx, int64_t nbc)
{
    const int64_t i = blockIdx.x;
    for (int64_t p = row_ptr[i] + threadIdx.x; p < row_ptr[i + 1]; p += blockDim.x)
        slotmap[i * nbc + col_idx[p]] = (int)p;
}

extern "C" sq_status sq_cuda_bsr_build_transpose(sq_ctx *ctx, sq_cuda_bsr *m)
{
    const char *fn = "bsr_build_transpose";
    SQ_CUDA_ENTER(ctx, fn);
    SQ_TRY(need_bsr(ctx, fn, m));
    const int64_t nbr = m->nbr, nbc = m->nbc, nb = nbr * nbc;
    cudaStream_t s = ctx->cuda->stream;
    if (nb == 0) {
        cudaMemsetAsync(m->col_ptr, 0, (size_t)(nbc + 1) * 8, s);
        return sq_cuda_launched(ctx, fn, "empty %lldx%lld", (long long)m->rows, (long long)m->cols);
    }
    size_t ws_bytes = (((size_t)nb * 4 + 255) & ~(size_t)255) + (size_t)nbc * 4;
    void *ws = NULL;
    SQ_TRY(sq_cuda_ws_alloc(ctx, ws_bytes, &ws));
    char *wp = (char *)ws;
    int *slotmap = (int *)carve(&wp, (size_t)nb * 4);
    int *colcnt = (int *)carve(&wp, (size_t)nbc * 4);
    cudaMemsetAsync(slotmap, 0xff, (size_t)nb * 4, s); /* -1: no block */
    k_slot_scatter<<<(unsigned)nbr, 128, 0, s>>>(slotmap, m->row_ptr, m->col_idx, nbc);
    k_col_count<<<(unsigned)nbc, COL_THREADS, 0, s>>>(colcnt, slotmap, nbr, nbc);
    k_exscan_ptr<<<1, 1024, 0, s>>>(m->col_ptr, colcnt, nbc);
    k_col_fill<<<(unsigned)nbc, COL_THREADS, 0, s>>>(m->t_row, m->t_blk, m->col_ptr, slotmap, nbr, nbc);
    sq_status st = sq_cuda_launched(ctx, fn, "%lld x %lld blocks, %lld stored", (long long)nbr,
                                    (long long)nbc, (long long)m->nnzb);
    sq_cuda_ws_free(ctx, ws, ws_bytes);
    return st;
}

/* *out += the real (unpadded) entries of the stored blocks of the rows
 * this CTA takes: bh(i) * bw(col_idx[p]) summed in integers (exact, any order). */
__global__ void k_entries(unsigned long long *out, const int64_t *__restrict__ row_ptr,
                          const int32_t *__restrict__ col_idx, int64_t R, int64_t K, int b, int64_t nbr)
{
    __shared__ unsigned long long sh[32];
    unsigned long long e = 0;
    for (int64_t i = blockIdx.x; i < nbr; i += gridDim.x) {
        int64_t bh = min((int64_t)b, R - i * b);
        for (int64_t p = row_ptr[i] + threadIdx.x; p < row_ptr[i + 1]; p += blockDim.x)
            e += (unsigned long long)(bh * min((int64_t)b, K - (int64_t)col_idx[p] * b));
    }
    e = sq_block_sum(e, sh);
    if (threadIdx.x == 0 && e) atomicAdd(out, e);
}

extern "C" sq_status sq_cuda_bsr_entries(sq_ctx *ctx, const sq_cuda_bsr *m, int64_t *entries)
{
    const char *fn = "bsr_entries";
    *entries = 0;
    SQ_CUDA_ENTER(ctx, fn);
    SQ_TRY(need_bsr_t(ctx, fn, m, 0));
    const int64_t b = m->b;
    if (m->nnzb == 0) return SQ_OK;
    if (m->rows % b == 0 && m->cols % b == 0) { /* no padded block: nothing to read */
        *entries = m->nnzb * b * b;
        return SQ_OK;
    }
    unsigned long long *d = NULL, h = 0;
    SQ_TRY(sq_cuda_ws_alloc(ctx, sizeof *d, (void **)&d));
    cudaStream_t s = ctx->cuda->stream;
    cudaMemsetAsync(d, 0, sizeof *d, s);
    unsigned grid = (unsigned)(m->nbr < 1024 ? m->nbr : 1024);
    k_entries<<<grid, 256, 0, s>>>(d, m->row_ptr, m->col_idx, m->rows, m->cols, (int)b, m->nbr);
    sq_status st = sq_cuda_launched(ctx, fn, "%lld blocks", (long long)m->nnzb);
    if (st == SQ_OK) st = sq_cuda_copy_d2h(ctx, &h, d, sizeof h);
    sq_cuda_ws_free(ctx, d, sizeof *d);
    if (st == SQ_OK) *entries = (int64_t)h;
    return st;
}

/* x (R,K) <- m: one CTA per block row scatters its blocks (x zeroed first). */
__global__ void k_to_dense(float *__restrict__ x, const int64_t *__restrict__ row_ptr,
                           const int32_t *__restrict__ col_idx, const float *__restrict__ values,
                           int64_t R, int64_t K, int b)
{
    const int64_t i = blockIdx.x;
    const int bb = b * b;
    for (int64_t p = row_ptr[i]; p < row_ptr[i + 1]; p++) {
        int64_t j = col_idx[p];
        for (int w = threadIdx.x; w < bb; w += blockDim.x) {
            int r = w / b, c = w - r * b;
            int64_t row = i * b + r, col = j * b + c;
            if (row < R && col < K) x[row * K + col] = values[p * bb + w];
        }
    }
}

extern "C" sq_status sq_cuda_bsr_to_dense(sq_ctx *ctx, float *x, const sq_cuda_bsr *m)
{
    SQ_CUDA_ENTER(ctx, "bsr_to_dense");
    SQ_TRY(need_bsr_t(ctx, "bsr_to_dense", m, 0));
    if (m->rows * m->cols == 0) return SQ_OK;
    if (!x) return sq_fail(ctx, SQ_ERR_ARG, "bsr_to_dense: output is missing");
    cudaStream_t s = ctx->cuda->stream;
    cudaMemsetAsync(x, 0, (size_t)(m->rows * m->cols) * 4, s);
    k_to_dense<<<(unsigned)m->nbr, 256, 0, s>>>(x, m->row_ptr, m->col_idx, m->values, m->rows, m->cols,
                                                (int)m->b);
    return sq_cuda_launched(ctx, "bsr_to_dense", "%lldx%lld, b %lld", (long long)m->rows,
                            (long long)m->cols, (long long)m->b);
}

/* ============================================================================
 * CSR weight gradient (b = 1, the unstructured control): dW (M,K) = dyᵀ · x̂
 * ========================================================================== */

#define CSR_JT 32  /* dW columns per CTA: 8 warps x 4 */
#define CSR_QT 128 /* dW rows per CTA: 32 lanes x 4 */

/* CTA (column tile, row tile): warp w sums columns j0+4w..j0+4w+3 over their
 * kept entries (transposed index: rows ascending), lane l rows q0+l+32u;
 * products and sums in float64, one rounding to float32 at the end, in a
 * fixed order (deterministic, no atomics).  The tile goes through shared
 * memory so that the stores run along dW's rows. */
__global__ void __launch_bounds__(256) k_csr_dw(float *__restrict__ dw, int64_t ldw,
                                                const float *__restrict__ dy, int64_t ldy, int64_t M,
                                                int64_t K, const int64_t *__restrict__ col_ptr,
                                                const int32_t *__restrict__ t_row,
                                                const int32_t *__restrict__ t_blk,
                                                const float *__restrict__ values)
{
    __shared__ float tile[CSR_JT][CSR_QT + 1];
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const int64_t j0 = (int64_t)blockIdx.x * CSR_JT, q0 = (int64_t)blockIdx.y * CSR_QT;
#pragma unroll
    for (int c = 0; c < 4; c++) {
        const int jl = w * 4 + c;
        const int64_t j = j0 + jl;
        double acc[4] = {0, 0, 0, 0};
        if (j < K)
            for (int64_t p = col_ptr[j]; p < col_ptr[j + 1]; p++) {
                const double v = values[t_blk[p]];
                const float *g = dy + (int64_t)t_row[p] * ldy + q0 + lane;
#pragma unroll
                for (int u = 0; u < 4; u++)
                    if (q0 + lane + 32 * u < M) acc[u] = fma(v, (double)g[32 * u], acc[u]);
            }
#pragma unroll
        for (int u = 0; u < 4; u++) tile[jl][lane + 32 * u] = (float)acc[u];
    }
    __syncthreads();
    for (int e = threadIdx.x; e < CSR_JT * CSR_QT; e += 256) {
        const int ql = e / CSR_JT, jl = e - ql * CSR_JT;
        const int64_t q = q0 + ql, j = j0 + jl;
        if (q < M && j < K) dw[q * ldw + j] = tile[jl][ql];
    }
}

extern "C" sq_status sq_cuda_csr_dw(sq_ctx *ctx, float *dw, int64_t ldw, const float *dy, int64_t ldy,
                                    int64_t M, const sq_cuda_bsr *m)
{
    const char *fn = "csr_dw";
    SQ_CUDA_ENTER(ctx, fn);
    SQ_TRY(need_bsr(ctx, fn, m));
    if (m->b != 1)
        return sq_fail(ctx, SQ_ERR_ARG, "%s: the matrix has %lldx%lld blocks, not single entries (b = 1: "
                       "the topk_unstructured CSR); use sq_cuda_bsr_dw", fn, (long long)m->b, (long long)m->b);
    const int64_t R = m->rows, K = m->cols;
    if (M < 0 || ldw < K || ldy < M)
        return sq_fail(ctx, SQ_ERR_ARG, "%s: M %lld, ldw %lld (need >= K = %lld), ldy %lld (need >= M)", fn,
                       (long long)M, (long long)ldw, (long long)K, (long long)ldy);
    if (M == 0 || K == 0) return SQ_OK;
    if ((!dw) || (R > 0 && !dy)) return sq_fail(ctx, SQ_ERR_ARG, "%s: dw or dy is missing", fn);
    if (cdiv(M, CSR_QT) > 65535)
        return sq_fail(ctx, SQ_ERR_ARG, "%s: M %lld is too large for the grid (at most %d)", fn, (long long)M,
                       65535 * CSR_QT);
    dim3 grid((unsigned)cdiv(K, CSR_JT), (unsigned)cdiv(M, CSR_QT));
    k_csr_dw<<<grid, 256, 0, ctx->cuda->stream>>>(dw, ldw, dy, ldy, M, K, m->col_ptr, m->t_row, m->t_blk,
                                                  m->values);
    sq_status st = sq_cuda_launched(ctx, fn, "M %lld, K %lld, R %lld, %lld entries", (long long)M, (long long)K,
                                    (long long)R, (long long)m->nnzb);
    if (st == SQ_OK) { /* one SpMM, counted like the GEMM it replaces (as sq_bsr_dw) */
        ctx->stats.gemm_calls++;
        ctx->stats.gemm_flops += 2.0 * (double)M * (double)m->nnzb;
    }
    return st;
}

/* ============================================================================
 * BSR weight gradient: dW (M,K) = dyᵀ (M,R) · x̂ (R,K)
 * ========================================================================== */

/* CTA tile: MT dW rows (128, 192 or 256: 64 per warp row, four warp
 * columns, 2·MT threads) × DW_NT dW columns.  The wide tiles read 1.3–1.5×
 * fewer bytes from L2 per MMA, which is what bounds the 128-row tile; they
 * run one CTA per SM with a deeper pipeline, the 128-row tile two. */
#define DW_NT 128 /* dW columns per CTA: a group of 128/b block columns */
#define DW_LD (128 + 8) /* shared row pitch of x̂: 8 (mod 32) words, so fragment loads hit 32 banks */
template <int MT> struct dw_cfg {
    static constexpr int THREADS = 2 * MT;
    static constexpr int STAGES = MT == 128 ? 3 : 4;
    static constexpr int RING = STAGES + 1; /* stage descriptors live STAGES+1 iterations */
    static constexpr int LDA = MT + 8;      /* shared row pitch of dy, also 8 (mod 32) */
    static constexpr int MIN_CTAS = MT == 128 ? 2 : 1;
};

__device__ __forceinline__ void cp_async16(void *smem, const void *gmem, int src_bytes)
{
    unsigned sa = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(sa), "l"(gmem), "r"(src_bytes)
                 : "memory");
}
__device__ __forceinline__ void cp_async4(void *smem, const void *gmem, int src_bytes)
{
    unsigned sa = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(sa), "l"(gmem), "r"(src_bytes)
                 : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_async_wait()
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

/* TF32 operands without cvt: the tensor cores read only the top 19 bits of
 * a .tf32 register, so adding half a TF32 ulp (0x1000) to the fp32 bits
 * rounds to nearest, ties away (cvt.rna's result for finite values) in one
 * integer add (CUTLASS's round_half_ulp_truncate).  An infinity comes out
 * as a NaN pattern: the product is non-finite either way.  tf32_hi also
 * clears the low bits when the value must be exact for the 3xTF32 split. */
__device__ __forceinline__ unsigned tf32_rn(float f) { return __float_as_uint(f) + 0x1000u; }
__device__ __forceinline__ unsigned tf32_hi(float f, bool exact)
{
    return exact ? (__float_as_uint(f) + 0x1000u) & 0xffffe000u : __float_as_uint(f) + 0x1000u;
}

/* d (16x8) += a (16x8, row) · b (8x8, col), TF32 inputs, fp32 accumulation */
__device__ __forceinline__ void mma_tf32(float *d, const unsigned *a, const unsigned *b)
{
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
                 "{%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

/* One stage: chunk `chunk` (KC rows) of block row `row` for the present
 * block columns of the group.  row < 0: no more stages. */
template <int G> struct dw_desc {
    int row;
    unsigned mask;
    int chunk;
    int blk[G];
};

/* Warp 0's walk over the union of a group's kept blocks inside the CTA's
 * block-row range [ib, ie): lane g < G follows column grp*G+g's list in the
 * transposed index (rows ascending); each step takes the smallest head row,
 * the mask of the lanes sitting on it, and their block ids, and emits one
 * stage descriptor per KC-row chunk of that block row.  The entry after a
 * lane's head is loaded one step early (nrow/nblk), so the list reads are
 * off the walk's critical path.  Shared by the mma.sync and wgmma kernels. */
template <int G, int CPB> struct dw_walk {
    int cur, end, head, hblk, nrow, nblk, chunk, myblk, crow;
    unsigned cmask;

    __device__ void init(int lane, int grp, const int64_t *__restrict__ col_ptr, const int32_t *__restrict__ t_row,
                         const int32_t *__restrict__ t_blk, int64_t nbc, int64_t ib, int64_t ie)
    {
        cur = end = 0, head = nrow = INT_MAX, hblk = nblk = 0, chunk = 0, myblk = 0, crow = -1, cmask = 0;
        const int64_t j = (int64_t)grp * G + lane;
        if (lane < G && j < nbc) {
            int64_t lo = col_ptr[j], hi = col_ptr[j + 1];
            /* first position with t_row >= ib, then >= ie */
            int64_t a = lo, z = hi;
            while (a < z) {
                int64_t md = (a + z) >> 1;
                if (t_row[md] < ib) a = md + 1;
                else z = md;
            }
            cur = (int)a;
            z = hi;
            while (a < z) {
                int64_t md = (a + z) >> 1;
                if (t_row[md] < ie) a = md + 1;
                else z = md;
            }
            end = (int)a;
            if (cur < end) head = t_row[cur], hblk = t_blk[cur];
            if (cur + 1 < end) nrow = t_row[cur + 1], nblk = t_blk[cur + 1];
        }
    }
    /* the next stage's descriptor into d (all 32 lanes of warp 0) */
    template <class D> __device__ void next(int lane, const int32_t *__restrict__ t_row,
                                            const int32_t *__restrict__ t_blk, D &d)
    {
        if (chunk == 0) {
            const int mn = __reduce_min_sync(FULL_MASK, head);
            if (mn == INT_MAX) {
                crow = -1;
                cmask = 0;
            } else {
                cmask = __ballot_sync(FULL_MASK, head == mn);
                crow = mn;
                if (head == mn) { /* advance; prefetch the entry after the new head */
                    myblk = hblk;
                    cur++;
                    head = nrow, hblk = nblk;
                    if (cur + 1 < end) nrow = t_row[cur + 1], nblk = t_blk[cur + 1];
                    else nrow = INT_MAX;
                }
            }
        }
        if (lane < G) d.blk[lane] = myblk;
        if (lane == 0) {
            d.row = crow;
            d.mask = cmask;
            d.chunk = chunk;
        }
        if (crow >= 0) chunk = chunk + 1 == CPB ? 0 : chunk + 1;
    }
};

/* Grid: linear over (split, m tile, group), group fastest so that CTAs
 * running together read the same rows of dy.  Writes the (M,K) tile either
 * into dw (splits == 1) or into partial tile `split` of out (ld K). */
template <int B, int MT, bool X3, bool VEC>
__global__ void __launch_bounds__(dw_cfg<MT>::THREADS, dw_cfg<MT>::MIN_CTAS)
    k_bsr_dw(float *__restrict__ out, int64_t ldo, int64_t split_stride, const float *__restrict__ dy,
             int64_t ldy, const float *__restrict__ vals, const int64_t *__restrict__ col_ptr,
             const int32_t *__restrict__ t_row, const int32_t *__restrict__ t_blk, int64_t R, int64_t M,
             int64_t K, int64_t nbr, int64_t nbc, int groups, int mtiles, int splits)
{
    constexpr int G = DW_NT / B;          /* block columns per CTA */
    constexpr int KC = B < 32 ? B : 32;   /* rows of a block per stage */
    constexpr int CPB = B / KC;           /* stages per block row */
    constexpr int NTH = dw_cfg<MT>::THREADS, DW_STAGES = dw_cfg<MT>::STAGES, DW_RING = dw_cfg<MT>::RING;
    constexpr int LDA = dw_cfg<MT>::LDA;
    constexpr int STAGE_A = KC * LDA, STAGE_B = KC * DW_LD; /* floats per operand per stage */
    extern __shared__ __align__(128) float smem[];
    float *sA = smem;                       /* [STAGES][KC][LDA]: dy rows, m contiguous */
    float *sB = smem + DW_STAGES * STAGE_A; /* [STAGES][KC][DW_LD]: block rows, n contiguous */
    __shared__ dw_desc<G> desc[DW_RING];

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int64_t lin = blockIdx.x;
    const int grp = (int)(lin % groups);
    const int mt = (int)((lin / groups) % mtiles);
    const int split = (int)(lin / ((int64_t)groups * mtiles));
    const int64_t m0 = (int64_t)mt * MT, n0 = (int64_t)grp * DW_NT;
    const int64_t ib = nbr * split / splits, ie = nbr * (split + 1) / splits;

    /* warp 0 walks the group's column lists: lane g < G owns column grp*G+g */
    dw_walk<G, CPB> walk;
    if (warp == 0) walk.init(lane, grp, col_ptr, t_row, t_blk, nbc, ib, ie);
    auto make_desc = [&](int slot) { walk.next(lane, t_row, t_blk, desc[slot]); };

    /* Per-thread load geometry, fixed for the whole walk (the loads ran ~40
     * and ~58 instructions per 16-byte copy when recomputed per stage).
     * dy: a pass covers ARW = NTH / (MT/4) = 8 rows of the tile, KC/8 passes;
     * this thread copies 16 bytes at (row a_r + 8p, column a_c). */
    constexpr int ACH = MT / 4, ARW = NTH / ACH, APASS = KC / ARW;
    static_assert(ARW * ACH == NTH && APASS * ARW == KC, "dy passes");
    const int a_r = tid / ACH, a_c = (tid - a_r * ACH) * 4;
    const bool a_cok = m0 + a_c < M;
    const float *a_g = dy + (int64_t)a_r * ldy + (m0 + a_c);
    const int a_s = a_r * LDA + a_c;
    constexpr int CPBLK = KC * B / 4; /* 16-byte chunks of one block per stage */
    constexpr int BPASS = (G * CPBLK + NTH - 1) / NTH;

    auto load_stage = [&](int st, const dw_desc<G> &d) {
        float *a = sA + st * STAGE_A, *bm = sB + st * STAGE_B;
        const int row = d.row, chunk = d.chunk;
        const unsigned mask = d.mask;
        const int64_t r0 = (int64_t)row * B + chunk * KC;
        if (VEC) {
            const float *src = a_g + r0 * ldy;
            const int64_t rl = R - r0 - a_r; /* rows of this thread's column still inside R */
#pragma unroll
            for (int p = 0; p < APASS; p++) {
                const bool ok = a_cok && p * ARW < rl;
                cp_async16(a + a_s + p * ARW * LDA, ok ? src + (int64_t)p * ARW * ldy : dy, ok ? 16 : 0);
            }
        } else {
#pragma unroll 4
            for (int q = tid; q < KC * MT; q += NTH) {
                int kk = q / MT, mq = q - kk * MT;
                int64_t r = r0 + kk, mm = m0 + mq;
                bool ok = r < R && mm < M;
                cp_async4(a + kk * LDA + mq, ok ? dy + r * ldy + mm : dy, ok ? 4 : 0);
            }
        }
        /* x̂: chunk q = tid + p*NTH of the group's G blocks (all powers of two:
         * shifts and masks), block base pointers from the stage descriptor */
        const float *vrow = vals + (int64_t)chunk * KC * B;
#pragma unroll
        for (int p = 0; p < BPASS; p++) {
            const int q = tid + p * NTH;
            if (G * CPBLK % NTH != 0 && q >= G * CPBLK) break;
            const int g = q / CPBLK, w = q % CPBLK;
            if (!((mask >> g) & 1u)) continue;
            const int kk = w / (B / 4), n = (w % (B / 4)) * 4;
            cp_async16(bm + kk * DW_LD + g * B + n, vrow + (int64_t)d.blk[g] * (B * B) + kk * B + n, 16);
        }
    };

    /* warp tile 64 (m) x 32 (n): MT/64 x 4 warps.  Which dW element a fragment
     * slot holds is permuted so that a thread's operands sit side by side in
     * shared memory and load as float4 (A) and float4/float2 (B), conflict
     * free with the 8 (mod 32) word pitch, instead of one word per load:
     *   A: m16 tile mi, row r (half h = r / 8, g = r % 8)
     *        -> m = wm0 + (c / 4) * 32 + g * 4 + c % 4,  c = 2 mi + h
     *   B: n8 tile ni, column j
     *        -> n = wn0 + (ni / P) * 8P + j * P + ni % P
     * with P = min(4, B / 8) consecutive n8 tiles inside one block, so a
     * tile whose block is pruned is still skipped whole. */
    constexpr int P = B >= 32 ? 4 : B / 8;
    const int wm0 = (warp % (MT / 64)) * 64, wn0 = (warp / (MT / 64)) * 32;
    const int gid = lane >> 2, tig = lane & 3;
    float acc[4][4][4];
#pragma unroll
    for (int mi = 0; mi < 4; mi++)
#pragma unroll
        for (int ni = 0; ni < 4; ni++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[mi][ni][e] = 0.f;

    /* prologue: descriptors for stages 0..STAGES-1, loads for 0..STAGES-2 */
    if (warp == 0)
        for (int q = 0; q < DW_STAGES; q++) make_desc(q);
    __syncthreads();
#pragma unroll
    for (int q = 0; q < DW_STAGES - 1; q++) {
        if (desc[q].row >= 0) load_stage(q, desc[q]);
        cp_async_commit();
    }

    for (int it = 0;; it++) {
        cp_async_wait<DW_STAGES - 2>();
        __syncthreads();
        const int row = desc[it % DW_RING].row;
        if (row < 0) break; /* uniform */
        const unsigned mask = desc[it % DW_RING].mask;
        {
            const int nx = it + DW_STAGES - 1;
            const dw_desc<G> &dn = desc[nx % DW_RING];
            if (dn.row >= 0) load_stage(nx % DW_STAGES, dn);
            cp_async_commit();
        }
        /* slot (it+STAGES) % RING held stage it-1, consumed before the barrier above */
        if (warp == 0) make_desc((it + DW_STAGES) % DW_RING);

        /* which of this warp's four n8 tiles have a kept block */
        unsigned pres = 0;
#pragma unroll
        for (int ni = 0; ni < 4; ni++) pres |= ((mask >> ((wn0 + (ni / P) * 8 * P) / B)) & 1u) << ni;
        if (pres) {
            const float *a = sA + (it % DW_STAGES) * STAGE_A, *bm = sB + (it % DW_STAGES) * STAGE_B;
#pragma unroll
            for (int k8 = 0; k8 < KC / 8; k8++) {
                /* av[kh][c]: k = k8*8 + tig + 4 kh, slot c as above */
                float av[2][8], bv[2][4];
#pragma unroll
                for (int kh = 0; kh < 2; kh++) {
                    const float *ar = a + (k8 * 8 + tig + 4 * kh) * LDA + wm0 + gid * 4;
                    const float4 lo = *reinterpret_cast<const float4 *>(ar);
                    const float4 hi = *reinterpret_cast<const float4 *>(ar + 32);
                    av[kh][0] = lo.x, av[kh][1] = lo.y, av[kh][2] = lo.z, av[kh][3] = lo.w;
                    av[kh][4] = hi.x, av[kh][5] = hi.y, av[kh][6] = hi.z, av[kh][7] = hi.w;
                    const float *br = bm + (k8 * 8 + tig + 4 * kh) * DW_LD + wn0;
                    if (P == 4) {
                        const float4 v = *reinterpret_cast<const float4 *>(br + gid * 4);
                        bv[kh][0] = v.x, bv[kh][1] = v.y, bv[kh][2] = v.z, bv[kh][3] = v.w;
                    } else if (P == 2) {
                        const float2 v0 = *reinterpret_cast<const float2 *>(br + gid * 2);
                        const float2 v1 = *reinterpret_cast<const float2 *>(br + 16 + gid * 2);
                        bv[kh][0] = v0.x, bv[kh][1] = v0.y, bv[kh][2] = v1.x, bv[kh][3] = v1.y;
                    } else {
#pragma unroll
                        for (int ni = 0; ni < 4; ni++) bv[kh][ni] = br[ni * 8 + gid];
                    }
                }
                unsigned ah[4][4], al[4][4];
#pragma unroll
                for (int mi = 0; mi < 4; mi++) {
                    const float f[4] = {av[0][2 * mi], av[0][2 * mi + 1], av[1][2 * mi], av[1][2 * mi + 1]};
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        ah[mi][e] = tf32_hi(f[e], X3);
                        if (X3) al[mi][e] = tf32_rn(f[e] - __uint_as_float(ah[mi][e]));
                    }
                }
#pragma unroll
                for (int ni = 0; ni < 4; ni++) {
                    if (!((pres >> ni) & 1u)) continue;
                    const float f0 = bv[0][ni], f1 = bv[1][ni];
                    unsigned bh[2] = {tf32_hi(f0, X3), tf32_hi(f1, X3)};
                    if (X3) {
                        /* the three products go into a fresh fragment that is
                         * added to acc with IEEE fp32 adds: the tensor cores'
                         * accumulation truncates, and over a long chain of k8
                         * steps that bias alone grows to ~1e-5 */
                        unsigned bl[2] = {tf32_rn(f0 - __uint_as_float(bh[0])),
                                          tf32_rn(f1 - __uint_as_float(bh[1]))};
#pragma unroll
                        for (int mi = 0; mi < 4; mi++) {
                            float t[4] = {0.f, 0.f, 0.f, 0.f};
                            mma_tf32(t, al[mi], bh);
                            mma_tf32(t, ah[mi], bl);
                            mma_tf32(t, ah[mi], bh);
#pragma unroll
                            for (int e = 0; e < 4; e++) acc[mi][ni][e] += t[e];
                        }
                    } else {
#pragma unroll
                        for (int mi = 0; mi < 4; mi++) mma_tf32(acc[mi][ni], ah[mi], bh);
                    }
                }
            }
        }
    }

    /* epilogue: every element of the tile inside (M,K) is written (zeros
     * where the group holds no kept block) */
    float *o = out + (int64_t)split * split_stride;
#pragma unroll
    for (int mi = 0; mi < 4; mi++)
#pragma unroll
        for (int ni = 0; ni < 4; ni++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int c = 2 * mi + (e >> 1), j = tig * 2 + (e & 1);
                int64_t mm = m0 + wm0 + (c / 4) * 32 + gid * 4 + c % 4;
                int64_t nn = n0 + wn0 + (ni / P) * 8 * P + j * P + ni % P;
                if (mm < M && nn < K) o[mm * ldo + nn] = acc[mi][ni][e];
            }
}

/* dw (M,K) = sum over splits of part (splits, M, K), in split order */
__global__ void k_split_sum(float *__restrict__ dw, int64_t ldw, const float *__restrict__ part,
                            int splits, int64_t M, int64_t K)
{
    const int64_t n = M * K;
    SQ_GRID_LOOP(e, n)
    {
        float s = 0.f;
        for (int q = 0; q < splits; q++) s += part[q * n + e];
        int64_t mm = e / K;
        dw[mm * ldw + (e - mm * K)] = s;
    }
}

/* Both dW kernels (mma.sync k_bsr_dw, wgmma k_bsr_dw_wg) take these arguments. */
typedef void (*dw_kernel)(float *, int64_t, int64_t, const float *, int64_t, const float *, const int64_t *,
                          const int32_t *, const int32_t *, int64_t, int64_t, int64_t, int64_t, int64_t, int, int,
                          int);

/* Gives kern smem bytes of dynamic shared memory (all of L1 as shared
 * memory, so that two 128-row CTAs fit on an SM) and launches it. */
static sq_status launch_dw_kernel(sq_ctx *ctx, dw_kernel kern, int threads, size_t smem, unsigned grid,
                                  float *out, int64_t ldo, int64_t sstride, const float *dy, int64_t ldy,
                                  const sq_cuda_bsr *m, int64_t M, int groups, int mtiles, int splits)
{
    cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e == cudaSuccess)
        e = cudaFuncSetAttribute(kern, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return sq_fail(ctx, SQ_ERR_DEVICE, "bsr_dw: cannot give the kernel %zu bytes of shared memory: %s",
                       smem, cudaGetErrorString(e));
    }
    kern<<<grid, threads, smem, ctx->cuda->stream>>>(out, ldo, sstride, dy, ldy, m->values, m->col_ptr, m->t_row,
                                                     m->t_blk, m->rows, M, m->cols, m->nbr, m->nbc, groups, mtiles,
                                                     splits);
    return SQ_OK;
}

template <int B, int MT, bool X3, bool VEC>
static sq_status launch_dw(sq_ctx *ctx, unsigned grid, float *out, int64_t ldo, int64_t sstride,
                           const float *dy, int64_t ldy, const sq_cuda_bsr *m, int64_t M, int groups,
                           int mtiles, int splits)
{
    typedef dw_cfg<MT> C;
    constexpr int KC = B < 32 ? B : 32;
    const size_t smem = (size_t)C::STAGES * KC * (C::LDA + DW_LD) * sizeof(float);
    return launch_dw_kernel(ctx, k_bsr_dw<B, MT, X3, VEC>, C::THREADS, smem, grid, out, ldo, sstride, dy, ldy, m,
                            M, groups, mtiles, splits);
}

/* the wide tiles exist only with 16-byte dy loads (the scalar path is for
 * odd M or strides, where 128 rows serve) */
template <int B>
static sq_status launch_dw_b(sq_ctx *ctx, int mt, int x3, int vec, unsigned grid, float *out, int64_t ldo,
                             int64_t sstride, const float *dy, int64_t ldy, const sq_cuda_bsr *m,
                             int64_t M, int groups, int mtiles, int splits)
{
#define SQ_DW_GO(MT_, X3_, VEC_) \
    launch_dw<B, MT_, X3_, VEC_>(ctx, grid, out, ldo, sstride, dy, ldy, m, M, groups, mtiles, splits)
    if (!vec) return x3 ? SQ_DW_GO(128, true, false) : SQ_DW_GO(128, false, false);
    switch (mt) {
    case 256: return x3 ? SQ_DW_GO(256, true, true) : SQ_DW_GO(256, false, true);
    case 192: return x3 ? SQ_DW_GO(192, true, true) : SQ_DW_GO(192, false, true);
    default: return x3 ? SQ_DW_GO(128, true, true) : SQ_DW_GO(128, false, true);
    }
#undef SQ_DW_GO
}


/* ----------------------------------------------------------------------------
 * Hopper path (TF32, b = 32 or 64): the same walk over the group's union of
 * kept blocks, but the MMAs are warpgroup MMAs (wgmma.mma_async m64nBk8), one
 * per kept block and k8 step, issued asynchronously: dy comes from registers
 * (loaded from shared memory with the row permutation below), x̂ from shared
 * memory through a matrix descriptor.  TF32 wgmma reads shared operands only
 * K-major, so x̂'s block rows are transposed on their way in (4-byte
 * cp.async into the "interleave" core-matrix layout: 8 columns x 4 rows of
 * 16 bytes per 128-byte core matrix, LBO 128 along k, SBO 256 along n).
 * Needs sm_90a (CMAKE_CUDA_ARCHITECTURES 90a, the default); elsewhere the
 * mma.sync kernel above runs.
 * -------------------------------------------------------------------------- */

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define SQ_WG_BODY 1
#endif

__device__ __forceinline__ void wgmma_n64(float *d, const unsigned *a, uint64_t desc)
{
    asm volatile("wgmma.mma_async.sync.aligned.m64n64k8.f32.tf32.tf32 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
                 "{%32, %33, %34, %35}, %36, 1, 1, 1;\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc));
}
__device__ __forceinline__ void wgmma_n32(float *d, const unsigned *a, uint64_t desc)
{
    asm volatile("wgmma.mma_async.sync.aligned.m64n32k8.f32.tf32.tf32 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, "
                 "{%16, %17, %18, %19}, %20, 1, 1, 1;\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc));
}

/* pins a register for the wgmma sequence (CUTLASS's warpgroup_fence_operand):
 * without it the compiler may move accumulators between the asynchronous
 * MMAs and then has to serialise them (ptxas C7519) */
__device__ __forceinline__ void reg_fence(float &r) { asm volatile("" : "+f"(r)::"memory"); }
__device__ __forceinline__ void reg_fence(unsigned &r) { asm volatile("" : "+r"(r)::"memory"); }
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_wait0() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_wait1() { asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory"); }
__device__ __forceinline__ void fence_proxy_async()
{
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
/* K-major, no swizzle: LBO (next core matrix along k) 128 B, SBO (along n) 256 B */
__device__ __forceinline__ uint64_t wg_desc(const void *smem)
{
    const uint64_t a = (uint64_t)__cvta_generic_to_shared(smem);
    return ((a & 0x3FFFF) >> 4) | ((uint64_t)(128 >> 4) << 16) | ((uint64_t)(256 >> 4) << 32);
}

#define WG_BSTAGE (32 * DW_NT) /* floats of x̂ per stage: 32 rows x 128 columns */

/* 4 stages, loads 2 ahead: the buffer a load refills was read by the
 * wgmmas of two iterations back, which wgmma.wait_group 1 has retired; one
 * CTA per SM */
template <int MT> struct wg_cfg {
    static constexpr int THREADS = 2 * MT, STAGES = 4, AHEAD = 2, RING = STAGES + 1, LDA = MT + 8;
};

template <int B, int MT>
__global__ void __launch_bounds__(wg_cfg<MT>::THREADS, 1)
    k_bsr_dw_wg(float *__restrict__ out, int64_t ldo, int64_t split_stride, const float *__restrict__ dy,
                int64_t ldy, const float *__restrict__ vals, const int64_t *__restrict__ col_ptr,
                const int32_t *__restrict__ t_row, const int32_t *__restrict__ t_blk, int64_t R, int64_t M,
                int64_t K, int64_t nbr, int64_t nbc, int groups, int mtiles, int splits)
{
#ifdef SQ_WG_BODY
    static_assert(B == 32 || B == 64, "wgmma path: b 32 or 64");
    constexpr int G = DW_NT / B, KC = 32, CPB = B / KC;
    constexpr int NTH = wg_cfg<MT>::THREADS, DW_STAGES = wg_cfg<MT>::STAGES, DW_RING = wg_cfg<MT>::RING;
    constexpr int LDA = wg_cfg<MT>::LDA, AHEAD = wg_cfg<MT>::AHEAD;
    constexpr int STAGE_A = KC * LDA;
    extern __shared__ __align__(128) float smem[];
    float *sB = smem;                       /* [STAGES][32*128]: x̂, core-matrix layout (aligned) */
    float *sA = smem + DW_STAGES * WG_BSTAGE; /* [STAGES][KC][LDA]: dy rows, m contiguous */
    __shared__ dw_desc<G> desc[DW_RING];

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wg = warp >> 2, wq = warp & 3; /* warpgroup, warp in it */
    const int64_t lin = blockIdx.x;
    const int grp = (int)(lin % groups);
    const int mt = (int)((lin / groups) % mtiles);
    const int split = (int)(lin / ((int64_t)groups * mtiles));
    const int64_t m0 = (int64_t)mt * MT, n0 = (int64_t)grp * DW_NT;
    const int64_t ib = nbr * split / splits, ie = nbr * (split + 1) / splits;

    dw_walk<G, CPB> walk;
    if (warp == 0) walk.init(lane, grp, col_ptr, t_row, t_blk, nbc, ib, ie);
    auto make_desc = [&](int slot) { walk.next(lane, t_row, t_blk, desc[slot]); };

    auto load_stage = [&](int st, const dw_desc<G> &d) {
        float *a = sA + st * STAGE_A;
        char *bm = reinterpret_cast<char *>(sB + st * WG_BSTAGE);
        const int64_t r0 = (int64_t)d.row * B + d.chunk * KC;
#pragma unroll
        for (int q = tid; q < KC * (MT / 4); q += NTH) {
            int kk = q / (MT / 4), mq = (q - kk * (MT / 4)) * 4;
            int64_t r = r0 + kk, mm = m0 + mq;
            bool ok = r < R && mm < M;
            cp_async16(a + kk * LDA + mq, ok ? dy + r * ldy + mm : dy, ok ? 16 : 0);
        }
        /* x̂: element (k, n = g*B + c) of the stage to byte
         * (k/8)*4096 + (n/8)*256 + ((k/4)%2)*128 + (n%8)*16 + (k%4)*4;
         * a warp covers (k%4, n%8) = 32 distinct banks */
#pragma unroll 4
        for (int q = tid; q < KC * DW_NT; q += NTH) {
            const int e = q & 31, k4 = e & 3, n8 = e >> 2;
            int rest = q >> 5;
            const int nq = rest % (B / 8);
            rest /= B / 8;
            const int kq = rest % (KC / 4), g = rest / (KC / 4);
            if (!((d.mask >> g) & 1u)) continue;
            const int k = kq * 4 + k4, c = nq * 8 + n8, n = g * B + c;
            const float *src = vals + (int64_t)d.blk[g] * (B * B) + (int64_t)(d.chunk * KC + k) * B + c;
            cp_async4(bm + (k >> 3) * 4096 + (n >> 3) * 256 + ((k >> 2) & 1) * 128 + (n & 7) * 16 + (k & 3) * 4,
                      src, 4);
        }
    };

    const int gid = lane >> 2, tig = lane & 3;
    /* fragment row gid of this warp -> m = wg*64 + wq*16 + 2*gid, row gid+8 -> m + 1 */
    const int am = wg * 64 + wq * 16 + 2 * gid;
    float acc[G][B / 2];
#pragma unroll
    for (int g = 0; g < G; g++)
#pragma unroll
        for (int i = 0; i < B / 2; i++) acc[g][i] = 0.f;

    if (warp == 0)
        for (int q = 0; q < DW_STAGES; q++) make_desc(q);
    __syncthreads();
#pragma unroll
    for (int q = 0; q < AHEAD; q++) {
        if (desc[q].row >= 0) load_stage(q, desc[q]);
        cp_async_commit();
    }

    unsigned af[2][KC / 8][4]; /* two sets: the wgmmas in flight still read the other */
    for (int it = 0;; it++) {
        cp_async_wait<AHEAD - 1>();
        fence_proxy_async(); /* this thread's cp.async writes, visible to the wgmma (async proxy) */
        __syncthreads();
        const int row = desc[it % DW_RING].row;
        if (row < 0) break; /* uniform */
        const unsigned mask = desc[it % DW_RING].mask;
        {
            const int nx = it + AHEAD;
            const dw_desc<G> &dn = desc[nx % DW_RING];
            if (dn.row >= 0) load_stage(nx % DW_STAGES, dn);
            cp_async_commit();
        }
        if (warp == 0) make_desc((it + DW_STAGES) % DW_RING);

        const float *a = sA + (it % DW_STAGES) * STAGE_A;
        const float *bst = sB + (it % DW_STAGES) * WG_BSTAGE;
        unsigned(&A)[KC / 8][4] = af[it & 1];
#pragma unroll
        for (int s8 = 0; s8 < KC / 8; s8++) {
            const float2 lo = *reinterpret_cast<const float2 *>(a + (s8 * 8 + tig) * LDA + am);
            const float2 hi = *reinterpret_cast<const float2 *>(a + (s8 * 8 + tig + 4) * LDA + am);
            A[s8][0] = tf32_rn(lo.x), A[s8][1] = tf32_rn(lo.y);
            A[s8][2] = tf32_rn(hi.x), A[s8][3] = tf32_rn(hi.y);
        }
#pragma unroll
        for (int g = 0; g < G; g++)
#pragma unroll
            for (int i = 0; i < B / 2; i++) reg_fence(acc[g][i]);
#pragma unroll
        for (int s8 = 0; s8 < KC / 8; s8++)
#pragma unroll
            for (int e = 0; e < 4; e++) reg_fence(A[s8][e]);
        wgmma_fence();
        /* block by block (the branch is uniform), its four k8 steps back to back */
#pragma unroll
        for (int g = 0; g < G; g++) {
            if (!((mask >> g) & 1u)) continue;
#pragma unroll
            for (int s8 = 0; s8 < KC / 8; s8++) {
                const uint64_t dsc = wg_desc(reinterpret_cast<const char *>(bst) + s8 * 4096 + g * (B / 8) * 256);
                if (B == 64) wgmma_n64(acc[g], A[s8], dsc);
                else wgmma_n32(acc[g], A[s8], dsc);
            }
        }
        wgmma_commit();
#pragma unroll
        for (int g = 0; g < G; g++)
#pragma unroll
            for (int i = 0; i < B / 2; i++) reg_fence(acc[g][i]);
        wgmma_wait1(); /* this iteration's group may run on; the previous one is done */
    }
    wgmma_wait0();

    float *o = out + (int64_t)split * split_stride;
#pragma unroll
    for (int g = 0; g < G; g++)
#pragma unroll
        for (int i = 0; i < B / 2; i++) {
            const int64_t mm = m0 + am + ((i >> 1) & 1);
            const int64_t nn = n0 + g * B + 8 * (i >> 2) + 2 * tig + (i & 1);
            if (mm < M && nn < K) o[mm * ldo + nn] = acc[g][i];
        }
#else
    /* built without sm_90a: never write nothing silently (the host only
     * launches this when sq_cuda_bsr_dw_has_wgmma, so this is a build/arch
     * mismatch, reported as a launch failure) */
    __trap();
#endif
}

template <int B, int MT>
static sq_status launch_dw_wg(sq_ctx *ctx, unsigned grid, float *out, int64_t ldo, int64_t sstride,
                              const float *dy, int64_t ldy, const sq_cuda_bsr *m, int64_t M, int groups,
                              int mtiles, int splits)
{
    typedef wg_cfg<MT> C;
    const size_t smem = (size_t)C::STAGES * (WG_BSTAGE + 32 * C::LDA) * sizeof(float);
    return launch_dw_kernel(ctx, k_bsr_dw_wg<B, MT>, C::THREADS, smem, grid, out, ldo, sstride, dy, ldy, m, M,
                            groups, mtiles, splits);
}

static sq_status launch_wg(sq_ctx *ctx, int b, int mt, unsigned grid, float *out, int64_t ldo, int64_t sstride,
                           const float *dy, int64_t ldy, const sq_cuda_bsr *m, int64_t M, int groups, int mtiles,
                           int splits)
{
#define SQ_WG_GO(B_, MT_) \
    launch_dw_wg<B_, MT_>(ctx, grid, out, ldo, sstride, dy, ldy, m, M, groups, mtiles, splits)
    if (b == 64) return mt == 256 ? SQ_WG_GO(64, 256) : mt == 192 ? SQ_WG_GO(64, 192) : SQ_WG_GO(64, 128);
    return mt == 256 ? SQ_WG_GO(32, 256) : mt == 192 ? SQ_WG_GO(32, 192) : SQ_WG_GO(32, 128);
#undef SQ_WG_GO
}

/* rows per CTA tile for M dW rows: the widest of 256 / 192 that wastes at
 * most 1/16 of the rows in the last tile, else 128 */
static int dw_pick_mtile(int64_t M)
{
    const int cand[2] = {256, 192};
    for (int q = 0; q < 2; q++)
        if (M >= cand[q] && (cdiv(M, cand[q]) * cand[q] - M) * 16 <= M) return cand[q];
    return 128;
}

/* block-row splits: the count with the least modelled time, i.e. whole
 * waves of CTAs (time ∝ ceil(CTAs / slots) / S) plus the partial tiles'
 * round trip through memory (S·8·M·K bytes, costed against the MMA work at
 * ~150 TFLOP/s vs ~3 TB/s), with at least 8 block rows per split */
static int64_t dw_pick_splits(int64_t tiles, int64_t slots, int64_t nbr, int64_t K, double work)
{
    int64_t smax = nbr / 8 < 64 ? nbr / 8 : 64, best = 1;
    double best_t = 0;
    for (int64_t S = 1; S <= (smax > 1 ? smax : 1); S++) {
        double waves = (double)cdiv(tiles * S, slots) / (double)S;
        double t = waves / ((double)tiles / (double)slots) + (double)S * 8.0 * (double)K * 50.0 / (work > 1 ? work : 1);
        if (S == 1 || t < best_t * 0.995) best = S, best_t = t;
    }
    return best;
}

extern "C" sq_status sq_cuda_bsr_dw(sq_ctx *ctx, float *dw, int64_t ldw, const float *dy, int64_t ldy,
                                    int64_t M, const sq_cuda_bsr *m, sq_cuda_dw_prec prec, int splits)
{
    return sq_cuda_bsr_dw_tile(ctx, dw, ldw, dy, ldy, M, m, prec, splits, 0, SQ_CUDA_DW_AUTO);
}

extern "C" int sq_cuda_bsr_dw_has_wgmma(const sq_ctx *ctx)
{
#ifdef SQ_CUDA_SM90A
    return ctx->cuda && ctx->cuda->cc_major == 9 && ctx->cuda->cc_minor == 0;
#else
    (void)ctx;
    return 0;
#endif
}

extern "C" sq_status sq_cuda_bsr_dw_tile(sq_ctx *ctx, float *dw, int64_t ldw, const float *dy, int64_t ldy,
                                         int64_t M, const sq_cuda_bsr *m, sq_cuda_dw_prec prec, int splits,
                                         int mtile, sq_cuda_dw_kernel kernel)
{
    const char *fn = "bsr_dw";
    SQ_CUDA_ENTER(ctx, fn);
    SQ_TRY(need_bsr(ctx, fn, m));
    const int64_t R = m->rows, K = m->cols, b = m->b;
    if (b != 8 && b != 16 && b != 32 && b != 64)
        return sq_fail(ctx, SQ_ERR_ARG, "%s: block size %lld: the GPU kernel takes 8, 16, 32 or 64", fn,
                       (long long)b);
    if (prec != SQ_CUDA_DW_TF32 && prec != SQ_CUDA_DW_3XTF32)
        return sq_fail(ctx, SQ_ERR_ARG, "%s: unknown precision %d", fn, (int)prec);
    if (mtile != 0 && mtile != 128 && mtile != 192 && mtile != 256)
        return sq_fail(ctx, SQ_ERR_ARG, "%s: tile of %d rows: 0 (automatic), 128, 192 or 256", fn, mtile);
    if (kernel != SQ_CUDA_DW_AUTO && kernel != SQ_CUDA_DW_MMA && kernel != SQ_CUDA_DW_WGMMA)
        return sq_fail(ctx, SQ_ERR_ARG, "%s: unknown kernel %d", fn, (int)kernel);
    if (M < 0 || splits < 0)
        return sq_fail(ctx, SQ_ERR_ARG, "%s: M = %lld and splits = %d must be >= 0", fn, (long long)M, splits);
    if (ldy < (M > 1 ? M : 1) || ldw < (K > 1 ? K : 1))
        return sq_fail(ctx, SQ_ERR_ARG, "%s: row strides too small (ldy %lld for M %lld, ldw %lld for K %lld)",
                       fn, (long long)ldy, (long long)M, (long long)ldw, (long long)K);
    if (M == 0 || K == 0) return SQ_OK;
    if (!dw || (R > 0 && !dy)) return sq_fail(ctx, SQ_ERR_ARG, "%s: dw or dy is missing", fn);
    if (((uintptr_t)m->values & 15) != 0)
        return sq_fail(ctx, SQ_ERR_ARG, "%s: BSR values must be 16-byte aligned", fn);
    const int vec = M % 4 == 0 && ldy % 4 == 0 && ((uintptr_t)dy & 15) == 0;
    const int MT = !vec ? 128 : mtile ? mtile : dw_pick_mtile(M);
    /* the wgmma kernel: TF32, b 32/64, 16-byte dy loads, an sm_90a build on sm_90 */
    const int wg_ok = prec == SQ_CUDA_DW_TF32 && (b == 32 || b == 64) && vec && sq_cuda_bsr_dw_has_wgmma(ctx);
    if (kernel == SQ_CUDA_DW_WGMMA && !wg_ok)
        return sq_fail(ctx, SQ_ERR_ARG, "%s: the wgmma kernel needs TF32, b 32 or 64, M and ldy multiples of 4, "
                       "a build for sm_90a (CMAKE_CUDA_ARCHITECTURES 90a) and an sm_90 GPU", fn);
    /* measured on the H100 (results/reports/actprune_dw.md): the wgmma
     * kernel reaches 80-98 TFLOP/s with every block kept against mma.sync's
     * 122-129, so the automatic choice stays mma.sync */
    const int use_wg = kernel == SQ_CUDA_DW_WGMMA;
    const int G = DW_NT / (int)b;
    const int64_t mtiles = cdiv(M, MT), groups = cdiv(m->nbc, G);
    const int64_t tiles = mtiles * groups;
    int64_t S = splits;
    if (S == 0)
        S = dw_pick_splits(tiles, (int64_t)ctx->cuda->sm_count * (MT == 128 ? 2 : 1), m->nbr, K,
                           2.0 * (double)M * (double)m->nnzb * (double)(b * b) / (double)M);
    if (S > m->nbr) S = m->nbr;
    if (S < 1) S = 1;
    if (tiles * S > INT_MAX || mtiles > INT_MAX || groups > INT_MAX)
        return sq_fail(ctx, SQ_ERR_ARG, "%s: %lld x %lld tiles are too many", fn, (long long)M, (long long)K);
    const int x3 = prec == SQ_CUDA_DW_3XTF32;
    float *part = NULL;
    size_t part_bytes = 0;
    if (S > 1) {
        part_bytes = (size_t)S * (size_t)(M * K) * sizeof(float);
        SQ_TRY(sq_cuda_ws_alloc(ctx, part_bytes, (void **)&part));
    }
    float *out = S > 1 ? part : dw;
    int64_t ldo = S > 1 ? K : ldw, sstride = M * K;
    unsigned grid = (unsigned)(tiles * S);
    sq_status st;
    if (use_wg) {
        st = launch_wg(ctx, (int)b, MT, grid, out, ldo, sstride, dy, ldy, m, M, (int)groups, (int)mtiles, (int)S);
    } else {
        switch (b) {
        case 8: st = launch_dw_b<8>(ctx, MT, x3, vec, grid, out, ldo, sstride, dy, ldy, m, M, (int)groups, (int)mtiles, (int)S); break;
        case 16: st = launch_dw_b<16>(ctx, MT, x3, vec, grid, out, ldo, sstride, dy, ldy, m, M, (int)groups, (int)mtiles, (int)S); break;
        case 32: st = launch_dw_b<32>(ctx, MT, x3, vec, grid, out, ldo, sstride, dy, ldy, m, M, (int)groups, (int)mtiles, (int)S); break;
        default: st = launch_dw_b<64>(ctx, MT, x3, vec, grid, out, ldo, sstride, dy, ldy, m, M, (int)groups, (int)mtiles, (int)S); break;
        }
    }
    if (st == SQ_OK)
        st = sq_cuda_launched(ctx, "bsr_dw", "M %lld, K %lld, R %lld, b %lld, %lld blocks, %s, %d-row tiles, %lld splits, %s%s",
                              (long long)M, (long long)K, (long long)R, (long long)b, (long long)m->nnzb,
                              use_wg ? "wgmma" : "mma.sync", MT, (long long)S, x3 ? "3xtf32" : "tf32", vec ? "" : ", scalar dy loads");
    if (st == SQ_OK && S > 1) {
        k_split_sum<<<sq_cuda_grid(M * K, 256), 256, 0, ctx->cuda->stream>>>(dw, ldw, part, (int)S, M, K);
        st = sq_cuda_launched(ctx, "bsr_dw/split_sum", "M %lld, K %lld, %lld splits", (long long)M,
                              (long long)K, (long long)S);
    }
    if (part) sq_cuda_ws_free(ctx, part, part_bytes);
    if (st == SQ_OK) {
        ctx->stats.gemm_calls++;
        ctx->stats.gemm_flops += 2.0 * (double)M * (double)m->nnzb * (double)(b * b);
    }
    return st;
}
