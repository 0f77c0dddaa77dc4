/* sq_select.c — radix top-k selection on float keys (see sq_select.h). */
#include "sq_select.h"

#include <math.h>
#include <string.h>

int64_t sq_select_count(double frac, int64_t n)
{
    if (n <= 0 || !(frac > 0)) return 0;
    if (frac >= 1) return n;
    double p = frac * (double)n;
    /* relative slack far above double rounding, far below 1/n for any real n */
    int64_t k = (int64_t)ceil(p - 1e-9 * fmax(1.0, p));
    if (k < 1) k = 1;
    if (k > n) k = n;
    return k;
}

uint32_t sq_select_key_f32(float v)
{
    if (v != v) return 0;  /* NaN */
    if (v == 0) v = 0.0f;  /* -0 == +0 */
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    /* negatives: flip all bits (more negative -> smaller); positives: set
     * the sign bit so they sort above.  No number maps to 0: that would be
     * the all-ones pattern, a NaN. */
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

uint64_t sq_select_key_f64(double v)
{
    if (v != v) return 0;
    if (v == 0) v = 0.0;
    uint64_t u;
    memcpy(&u, &v, sizeof u);
    return (u & 0x8000000000000000ull) ? ~u : (u | 0x8000000000000000ull);
}

static inline uint64_t key_at(sq_dtype dt, const void *s, int64_t i)
{
    return dt == SQ_F32 ? (uint64_t)sq_select_key_f32(((const float *)s)[i])
                        : sq_select_key_f64(((const double *)s)[i]);
}

/* Selection on one contiguous range s[0..n); indices written as base + i. */
static void select_range(sq_dtype dt, const void *s, int64_t n, int64_t k, int64_t base,
                         int64_t *idx, uint8_t *mask)
{
    if (n <= 0) return;
    if (mask) memset(mask, 0, (size_t)n);
    if (k <= 0) return;
    if (k >= n) {
        for (int64_t i = 0; i < n; i++) {
            if (idx) idx[i] = base + i;
            if (mask) mask[i] = 1;
        }
        return;
    }
    const int bits = dt == SQ_F32 ? 32 : 64;
    /* Invariant: the wanted boundary lies in the bucket of keys whose bits
     * above `shift` equal prefix >> shift; `need` of that bucket are kept
     * and every key in a higher bucket is kept. */
    uint64_t prefix = 0;
    int shift = bits;
    int64_t need = k;
    while (shift > 0) {
        int nshift = shift - 8;
        int64_t hist[256] = {0};
        for (int64_t i = 0; i < n; i++) {
            uint64_t key = key_at(dt, s, i);
            if (shift < 64 && (key >> shift) != (prefix >> shift)) continue;
            hist[(key >> nshift) & 0xff]++;
        }
        int d = 255;
        while (hist[d] < need) need -= hist[d--];
        prefix |= (uint64_t)d << nshift;
        shift = nshift;
        if (hist[d] == need) break; /* the whole bucket is kept: no tie to break */
    }
    /* keys above the bucket are kept; within it, the lowest indices */
    int64_t out = 0, taken_eq = 0;
    uint64_t pb = shift < 64 ? prefix >> shift : 0;
    for (int64_t i = 0; i < n; i++) {
        uint64_t kb = key_at(dt, s, i) >> shift;
        int keep = kb > pb || (kb == pb && taken_eq++ < need);
        if (keep) {
            if (idx) idx[out] = base + i;
            out++;
        }
        if (mask) mask[i] = (uint8_t)keep;
    }
}

static sq_status check_args(sq_ctx *ctx, const char *fn, sq_dtype dt, const void *scores,
                            int64_t n, int64_t k)
{
    if (dt != SQ_F32 && dt != SQ_F64)
        return sq_fail(ctx, SQ_ERR_DTYPE, "%s: scores must be float32 or float64, got %s", fn,
                       sq_dtype_name(dt));
    if (n < 0) return sq_fail(ctx, SQ_ERR_ARG, "%s: negative count %lld", fn, (long long)n);
    if (n > 0 && !scores) return sq_fail(ctx, SQ_ERR_ARG, "%s: scores are missing", fn);
    if (k < 0) return sq_fail(ctx, SQ_ERR_ARG, "%s: k = %lld is negative", fn, (long long)k);
    return SQ_OK;
}

sq_status sq_select_topk(sq_ctx *ctx, sq_dtype dt, const void *scores, int64_t n, int64_t k,
                         int64_t *idx, uint8_t *mask)
{
    SQ_TRY(check_args(ctx, "select_topk", dt, scores, n, k));
    if (k > n)
        return sq_fail(ctx, SQ_ERR_ARG, "select_topk: k = %lld > n = %lld", (long long)k,
                       (long long)n);
    select_range(dt, scores, n, k, 0, idx, mask);
    return SQ_OK;
}

int64_t sq_select_segments_total(int64_t n, int64_t seglen, int64_t k)
{
    if (n <= 0 || seglen <= 0 || k <= 0) return 0;
    int64_t full = n / seglen, rest = n % seglen;
    return full * (k < seglen ? k : seglen) + (k < rest ? k : rest);
}

sq_status sq_select_topk_segments(sq_ctx *ctx, sq_dtype dt, const void *scores, int64_t n,
                                  int64_t seglen, int64_t k, int64_t *idx, int64_t *nsel,
                                  uint8_t *mask)
{
    if (nsel) *nsel = 0;
    SQ_TRY(check_args(ctx, "select_topk_segments", dt, scores, n, k));
    if (seglen <= 0)
        return sq_fail(ctx, SQ_ERR_ARG, "select_topk_segments: segment length %lld must be > 0",
                       (long long)seglen);
    size_t es = sq_dtype_size(dt);
    int64_t out = 0;
    for (int64_t s0 = 0; s0 < n; s0 += seglen) {
        int64_t len = n - s0 < seglen ? n - s0 : seglen, ks = k < len ? k : len;
        select_range(dt, (const char *)scores + s0 * (int64_t)es, len, ks, s0,
                     idx ? idx + out : NULL, mask ? mask + s0 : NULL);
        out += ks;
    }
    if (nsel) *nsel = out;
    return SQ_OK;
}
