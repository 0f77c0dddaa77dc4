/* test_actprune.c — top-k selection (vs a full sort), BSR conversion and
 * exact byte counts, prune-and-pack (vs brute force), the BSR dW kernel, and
 * the pruned linear layer: exact forward / dx / db, dW at keep 1, SAVED bytes
 * equal to the BSR's, memory freed, config errors. */
#include "sq_actprune.h"
#include "sq_cpu.h"
#include "sq_gradcheck.h"
#include "sq_select.h"
#include "sq_test.h"

#include <stdlib.h>

/* ---- brute-force reference: stable sort descending, NaN lowest ----------- */

typedef struct { double v; int64_t i; } scored;

static int cmp_scored(const void *pa, const void *pb)
{
    const scored *a = pa, *b = pb;
    int an = a->v != a->v, bn = b->v != b->v;
    if (an != bn) return an - bn;                 /* NaN after numbers */
    if (!an && a->v != b->v) return a->v > b->v ? -1 : 1;
    return a->i < b->i ? -1 : a->i > b->i;       /* ties: lower index first */
}

static int cmp_i64(const void *pa, const void *pb)
{
    int64_t a = *(const int64_t *)pa, b = *(const int64_t *)pb;
    return a < b ? -1 : a > b;
}

/* idx (k) = the top-k of v[0..n) (plus base), ascending. */
static void ref_topk(const double *v, int64_t n, int64_t k, int64_t base, int64_t *idx)
{
    scored *s = malloc((size_t)(n ? n : 1) * sizeof *s);
    for (int64_t i = 0; i < n; i++) s[i] = (scored){v[i], i};
    qsort(s, (size_t)n, sizeof *s, cmp_scored);
    for (int64_t i = 0; i < k; i++) idx[i] = s[i].i + base;
    qsort(idx, (size_t)k, sizeof *idx, cmp_i64);
    free(s);
}

/* Random scores with many ties, NaNs, ±0 and infinities. */
static void fill_scores(sq_rng *r, double *v, int64_t n, int mode)
{
    for (int64_t i = 0; i < n; i++) {
        uint64_t u = sq_rng_below(r, 20);
        if (mode == 0) v[i] = sq_rng_normal(r);
        else v[i] = (double)((int64_t)sq_rng_below(r, 7) - 3); /* heavy ties */
        if (u == 0) v[i] = NAN;
        else if (u == 1) v[i] = -0.0;
        else if (u == 2) v[i] = 0.0;
        else if (u == 3) v[i] = (sq_rng_below(r, 2) ? INFINITY : -INFINITY);
    }
}

TEST(select_matches_full_sort)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 11);
    sq_rng r;
    sq_rng_seed(&r, 5);
    int64_t sizes[] = {1, 2, 7, 64, 257, 1000};
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
        int64_t n = sizes[si];
        double *v = malloc((size_t)n * sizeof *v);
        float *vf = malloc((size_t)n * sizeof *vf);
        int64_t *got = malloc((size_t)n * sizeof *got), *want = malloc((size_t)n * sizeof *want);
        uint8_t *mask = malloc((size_t)n);
        for (int mode = 0; mode < 2; mode++) {
            fill_scores(&r, v, n, mode);
            for (int64_t i = 0; i < n; i++) {
                vf[i] = (float)v[i];
                v[i] = (double)vf[i]; /* same values in both precisions */
            }
            int64_t ks[] = {0, 1, n / 3, n / 2, n - 1, n};
            for (size_t ki = 0; ki < sizeof ks / sizeof *ks; ki++) {
                int64_t k = ks[ki];
                if (k < 0) continue;
                ref_topk(v, n, k, 0, want);
                for (int dt = 0; dt < 2; dt++) {
                    CHECK_OK(&ctx, sq_select_topk(&ctx, dt ? SQ_F64 : SQ_F32, dt ? (void *)v : (void *)vf,
                                                  n, k, got, mask));
                    int same = memcmp(got, want, (size_t)k * sizeof *got) == 0, nm = 0;
                    for (int64_t i = 0; i < n; i++) nm += mask[i];
                    for (int64_t i = 0; i < k; i++) same &= mask[want[i]] == 1;
                    CHECK_MSG(same && nm == k, "n %lld k %lld mode %d %s: selection differs from sort",
                              (long long)n, (long long)k, mode, dt ? "f64" : "f32");
                }
            }
        }
        free(v);
        free(vf);
        free(got);
        free(want);
        free(mask);
    }
}

TEST(select_segments_match_sort)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 12);
    sq_rng r;
    sq_rng_seed(&r, 6);
    int64_t n = 103, seg = 10; /* ten full segments and a ragged one of 3 */
    double v[103];
    int64_t got[103], want[103];
    uint8_t mask[103];
    for (int mode = 0; mode < 2; mode++) {
        fill_scores(&r, v, n, mode);
        for (int64_t k = 0; k <= 11; k++) {
            int64_t nsel = -1, total = sq_select_segments_total(n, seg, k), w = 0;
            CHECK_OK(&ctx, sq_select_topk_segments(&ctx, SQ_F64, v, n, seg, k, got, &nsel, mask));
            for (int64_t s0 = 0; s0 < n; s0 += seg) {
                int64_t len = n - s0 < seg ? n - s0 : seg, ks = k < len ? k : len;
                ref_topk(v + s0, len, ks, s0, want + w);
                w += ks;
            }
            int nm = 0;
            for (int64_t i = 0; i < n; i++) nm += mask[i];
            CHECK_MSG(nsel == w && total == w && nm == w && memcmp(got, want, (size_t)w * sizeof *got) == 0,
                      "k %lld mode %d: per-segment selection differs (%lld vs %lld)", (long long)k, mode,
                      (long long)nsel, (long long)w);
        }
    }
}

TEST(select_count_and_errors)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 13);
    CHECK(sq_select_count(0.3, 10) == 3);  /* 0.3*10 = 3.0000000000000004 */
    CHECK(sq_select_count(0.7, 10) == 7);
    CHECK(sq_select_count(0.75, 4) == 3);
    CHECK(sq_select_count(0.5, 3) == 2);
    CHECK(sq_select_count(0.1, 1) == 1);
    CHECK(sq_select_count(1e-12, 10) == 1);
    CHECK(sq_select_count(1.0, 10) == 10);
    CHECK(sq_select_count(0.5, 0) == 0);
    CHECK(sq_select_key_f32(NAN) == 0 && sq_select_key_f32(-INFINITY) > 0);
    CHECK(sq_select_key_f32(-0.0f) == sq_select_key_f32(0.0f));
    CHECK(sq_select_key_f64(-1.0) < sq_select_key_f64(-0.5) && sq_select_key_f64(1e-300) > sq_select_key_f64(0.0));
    float v[4] = {1, 2, 3, 4};
    int64_t idx[4];
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "k = 5 > n = 4", sq_select_topk(&ctx, SQ_F32, v, 4, 5, idx, NULL));
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "negative", sq_select_topk(&ctx, SQ_F32, v, 4, -1, idx, NULL));
    CHECK_FAIL(&ctx, SQ_ERR_DTYPE, "float32 or float64", sq_select_topk(&ctx, SQ_I32, v, 4, 1, idx, NULL));
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "segment length 0", sq_select_topk_segments(&ctx, SQ_F32, v, 4, 0, 1, idx, NULL, NULL));
}

/* ---- BSR ------------------------------------------------------------------------ */

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* Expected bytes of a BSR: values + row pointers + column indices (+ transposed index). */
static int64_t bsr_bytes_formula(const sq_bsr *m, int with_t)
{
    int64_t es = (int64_t)sq_dtype_size(m->dtype);
    int64_t b = m->nnzb * m->b * m->b * es + (m->nbr + 1) * 8 + m->nnzb * 4;
    if (with_t) b += (m->nbc + 1) * 8 + m->nnzb * 8;
    return b;
}

static int tensors_equal(const sq_tensor *a, const sq_tensor *b)
{
    if (!sq_shape_equal(a, b) || a->dtype != b->dtype) return 0;
    for (int64_t i = 0; i < sq_tensor_numel(a); i++)
        if (sq_tensor_get_flat(a, i) != sq_tensor_get_flat(b, i)) return 0;
    return 1;
}

TEST(bsr_roundtrip_odd_sizes_and_bytes)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 21);
    struct { int64_t R, K, b; } cases[] = {{13, 29, 8}, {1, 1, 16}, {64, 48, 16}, {17, 9, 4}, {5, 70, 64}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        for (int dt = 0; dt < 2; dt++) {
            int64_t sh[2] = {cases[c].R, cases[c].K}, b = cases[c].b;
            sq_tensor *x = NULL, *back = NULL;
            CHECK_OK(&ctx, sq_tensor_randn(&ctx, dt ? SQ_F64 : SQ_F32, 2, sh, 0, 1, &x));
            /* zero every other block so from_dense drops some */
            for (int64_t r = 0; r < sh[0]; r++)
                for (int64_t k = 0; k < sh[1]; k++)
                    if (((r / b) + (k / b)) % 2) sq_tensor_set_flat(x, r * sh[1] + k, 0.0);
            int64_t saved0 = ctx.mem.cur[SQ_CPU][SQ_MEM_SAVED];
            sq_bsr *m = NULL;
            CHECK_OK(&ctx, sq_bsr_from_dense(&ctx, x, b, SQ_MEM_SAVED, &m));
            if (!m) continue;
            int64_t want_blocks = 0;
            for (int64_t i = 0; i < ceil_div(sh[0], b); i++)
                for (int64_t j = 0; j < ceil_div(sh[1], b); j++) want_blocks += (i + j) % 2 == 0;
            CHECK(m->nnzb == want_blocks && m->rows == sh[0] && m->cols == sh[1]);
            CHECK(sq_bsr_bytes(m) == bsr_bytes_formula(m, 0));
            CHECK(ctx.mem.cur[SQ_CPU][SQ_MEM_SAVED] - saved0 == sq_bsr_bytes(m));
            CHECK_OK(&ctx, sq_bsr_to_dense(&ctx, m, &back));
            CHECK_MSG(back && tensors_equal(x, back), "case %zu dt %d: roundtrip differs", c, dt);
            /* transposed index: every column lists its blocks, rows ascending */
            CHECK_OK(&ctx, sq_bsr_build_transpose(&ctx, m, SQ_MEM_SAVED));
            CHECK(sq_bsr_bytes(m) == bsr_bytes_formula(m, 1));
            CHECK(ctx.mem.cur[SQ_CPU][SQ_MEM_SAVED] - saved0 == sq_bsr_bytes(m));
            const int64_t *cp = sq_tensor_data(m->col_ptr), *rp = sq_tensor_data(m->row_ptr);
            const int32_t *tr = sq_tensor_data(m->t_row), *tb = sq_tensor_data(m->t_blk),
                          *ci = sq_tensor_data(m->col_idx);
            int ok = cp[m->nbc] == m->nnzb;
            for (int64_t j = 0; j < m->nbc; j++)
                for (int64_t p = cp[j]; p < cp[j + 1]; p++) {
                    ok &= ci[tb[p]] == j && tb[p] >= rp[tr[p]] && tb[p] < rp[tr[p] + 1];
                    if (p > cp[j]) ok &= tr[p] > tr[p - 1];
                }
            CHECK_MSG(ok, "case %zu: transposed index inconsistent", c);
            sq_bsr_free(m);
            CHECK(ctx.mem.cur[SQ_CPU][SQ_MEM_SAVED] == saved0);
            sq_tensor_release(back);
            sq_tensor_release(x);
        }
    }
    /* a non-contiguous input (a transposed view) converts the same */
    int64_t sh[2] = {11, 19};
    sq_tensor *x = NULL, *xt = NULL, *xtc = NULL, *back = NULL;
    sq_bsr *m = NULL;
    CHECK_OK(&ctx, sq_tensor_randn(&ctx, SQ_F32, 2, sh, 0, 1, &x));
    CHECK_OK(&ctx, sq_transpose(&ctx, x, 0, 1, &xt));
    CHECK_OK(&ctx, sq_tensor_clone(&ctx, xt, &xtc));
    CHECK_OK(&ctx, sq_bsr_from_dense(&ctx, xt, 8, SQ_MEM_OTHER, &m));
    CHECK_OK(&ctx, sq_bsr_to_dense(&ctx, m, &back));
    CHECK(back && tensors_equal(xtc, back));
    sq_bsr_free(m);
    sq_tensor_release(back);
    sq_tensor_release(xtc);
    sq_tensor_release(xt);
    sq_tensor_release(x);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

/* Brute-force L2 block scores in float64, row-major inside the block. */
static void ref_block_scores(const sq_tensor *x, int64_t b, double *s)
{
    int64_t R = x->shape[0], K = x->shape[1], nbc = ceil_div(K, b);
    for (int64_t i = 0; i < ceil_div(R, b) * nbc; i++) s[i] = 0;
    for (int64_t r = 0; r < R; r++)
        for (int64_t k = 0; k < K; k++) {
            double e = sq_tensor_get_flat(x, r * K + k);
            s[(r / b) * nbc + k / b] += e * e;
        }
}

/* Flat block ids (i*nbc + j) of a BSR, in storage order. */
static void bsr_ids(const sq_bsr *m, int64_t *ids)
{
    const int64_t *rp = sq_tensor_data(m->row_ptr);
    const int32_t *ci = sq_tensor_data(m->col_idx);
    for (int64_t i = 0; i < m->nbr; i++)
        for (int64_t p = rp[i]; p < rp[i + 1]; p++) ids[p] = i * m->nbc + ci[p];
}

TEST(prune_pack_l2_selects_topk_blocks)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 31);
    struct { int64_t R, K, b; int ties; } cases[] = {{37, 45, 8, 0}, {64, 64, 16, 0}, {30, 27, 3, 1}, {9, 100, 32, 0}};
    double keeps[] = {1.0, 0.75, 0.5, 0.3, 0.1};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        int64_t sh[2] = {cases[c].R, cases[c].K}, b = cases[c].b;
        int64_t nbr = ceil_div(sh[0], b), nbc = ceil_div(sh[1], b), nb = nbr * nbc;
        sq_tensor *x = NULL;
        CHECK_OK(&ctx, sq_tensor_randn(&ctx, SQ_F32, 2, sh, 0, 1, &x));
        if (cases[c].ties) /* entries in {-1,0,1}: many blocks with equal norms */
            for (int64_t i = 0; i < sh[0] * sh[1]; i++)
                sq_tensor_set_flat(x, i, (double)((int64_t)sq_rng_below(&ctx.rng, 3) - 1));
        double *s = malloc((size_t)nb * sizeof *s), *api = malloc((size_t)nb * sizeof *api);
        int64_t *want = malloc((size_t)nb * sizeof *want), *got = malloc((size_t)nb * sizeof *got);
        ref_block_scores(x, b, s);
        sq_bsr_block_scores_l2(SQ_F32, sq_tensor_data(x), sh[0], sh[1], b, api);
        CHECK(memcmp(s, api, (size_t)nb * sizeof *s) == 0);
        for (size_t ki = 0; ki < sizeof keeps / sizeof *keeps; ki++) {
            /* scope tensor */
            sq_bsr *m = NULL;
            CHECK_OK(&ctx, sq_bsr_prune_pack(&ctx, x, b, keeps[ki], SQ_PRUNE_L2, SQ_PRUNE_SCOPE_TENSOR,
                                             SQ_MEM_OTHER, &m));
            if (!m) continue;
            int64_t k = (int64_t)ceil(keeps[ki] * (double)nb - 1e-9);
            ref_topk(s, nb, k, 0, want);
            bsr_ids(m, got);
            CHECK_MSG(m->nnzb == k && memcmp(got, want, (size_t)k * sizeof *got) == 0,
                      "case %zu keep %g: kept %lld blocks, want the top %lld", c, keeps[ki],
                      (long long)m->nnzb, (long long)k);
            /* kept blocks hold x's values exactly, the rest is zero */
            sq_tensor *d = NULL;
            CHECK_OK(&ctx, sq_bsr_to_dense(&ctx, m, &d));
            uint8_t *kept = calloc((size_t)nb, 1);
            for (int64_t p = 0; p < k; p++) kept[want[p]] = 1;
            int ok = 1;
            for (int64_t r = 0; r < sh[0]; r++)
                for (int64_t q = 0; q < sh[1]; q++) {
                    double e = kept[(r / b) * nbc + q / b] ? sq_tensor_get_flat(x, r * sh[1] + q) : 0.0;
                    ok &= sq_tensor_get_flat(d, r * sh[1] + q) == e;
                }
            CHECK_MSG(ok, "case %zu keep %g: packed values differ", c, keeps[ki]);
            free(kept);
            sq_tensor_release(d);
            sq_bsr_free(m);
            /* scope row: ceil(keep*nbc) in each block row, the top ones of that row */
            CHECK_OK(&ctx, sq_bsr_prune_pack(&ctx, x, b, keeps[ki], SQ_PRUNE_L2, SQ_PRUNE_SCOPE_ROW,
                                             SQ_MEM_OTHER, &m));
            if (!m) continue;
            int64_t kr = (int64_t)ceil(keeps[ki] * (double)nbc - 1e-9);
            const int64_t *rp = sq_tensor_data(m->row_ptr);
            bsr_ids(m, got);
            ok = m->nnzb == kr * nbr;
            for (int64_t i = 0; i < nbr && ok; i++) {
                ok &= rp[i + 1] - rp[i] == kr;
                ref_topk(s + i * nbc, nbc, kr, i * nbc, want);
                ok &= memcmp(got + rp[i], want, (size_t)kr * sizeof *got) == 0;
            }
            CHECK_MSG(ok, "case %zu keep %g: per-row scope does not keep the top %lld of each row", c,
                      keeps[ki], (long long)kr);
            sq_bsr_free(m);
        }
        free(s);
        free(api);
        free(want);
        free(got);
        sq_tensor_release(x);
    }
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

TEST(prune_pack_random_is_seeded)
{
    int64_t sh[2] = {40, 56}, b = 8, nb = 5 * 7;
    int64_t ids[3][35];
    for (int run = 0; run < 3; run++) {
        sq_ctx ctx;
        sq_ctx_init(&ctx, run < 2 ? 77 : 78);
        sq_tensor *x = NULL;
        sq_bsr *m = NULL;
        CHECK_OK(&ctx, sq_tensor_full(&ctx, SQ_F32, 2, sh, 1.0, &x));
        CHECK_OK(&ctx, sq_bsr_prune_pack(&ctx, x, b, 0.3, SQ_PRUNE_RANDOM, SQ_PRUNE_SCOPE_TENSOR,
                                         SQ_MEM_OTHER, &m));
        CHECK(m && m->nnzb == sq_select_count(0.3, nb));
        if (m) bsr_ids(m, ids[run]);
        sq_bsr_free(m);
        sq_tensor_release(x);
        CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
    }
    CHECK(memcmp(ids[0], ids[1], 11 * sizeof(int64_t)) == 0);  /* same seed, same blocks */
    CHECK(memcmp(ids[0], ids[2], 11 * sizeof(int64_t)) != 0);  /* another seed, others */
}

TEST(prune_pack_unstructured_keeps_largest_entries_as_csr)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 41);
    int64_t sh[2] = {21, 35}, b = 8, n = 21 * 35;
    int64_t nb = ceil_div(21, b) * ceil_div(35, b);
    sq_tensor *x = NULL;
    CHECK_OK(&ctx, sq_tensor_randn(&ctx, SQ_F64, 2, sh, 0, 1, &x));
    double *a = malloc((size_t)n * sizeof *a);
    int64_t *want = malloc((size_t)n * sizeof *want), *got = malloc((size_t)n * sizeof *got);
    for (int64_t i = 0; i < n; i++) a[i] = fabs(sq_tensor_get_flat(x, i));
    double keeps[] = {0.5, 0.1};
    for (int ki = 0; ki < 2; ki++) {
        sq_bsr *m = NULL;
        CHECK_OK(&ctx, sq_bsr_prune_pack(&ctx, x, b, keeps[ki], SQ_PRUNE_TOPK_UNSTRUCTURED,
                                         SQ_PRUNE_SCOPE_TENSOR, SQ_MEM_OTHER, &m));
        if (!m) continue;
        int64_t k = sq_select_count(keeps[ki], nb) * b * b;
        if (k > n) k = n;
        ref_topk(a, n, k, 0, want);
        bsr_ids(m, got);
        CHECK(m->b == 1 && m->nnzb == k && memcmp(got, want, (size_t)k * sizeof *got) == 0);
        /* CSR bytes: nnz*(8 + 4) + (R+1)*8 */
        CHECK(sq_bsr_bytes(m) == k * 12 + (sh[0] + 1) * 8);
        sq_bsr_free(m);
        /* per block row: k_row*b*b entries inside each b-row band (the last band is short) */
        CHECK_OK(&ctx, sq_bsr_prune_pack(&ctx, x, b, keeps[ki], SQ_PRUNE_TOPK_UNSTRUCTURED,
                                         SQ_PRUNE_SCOPE_ROW, SQ_MEM_OTHER, &m));
        if (!m) continue;
        int64_t kr = sq_select_count(keeps[ki], ceil_div(sh[1], b)) * b * b, w = 0;
        for (int64_t s0 = 0; s0 < n; s0 += b * sh[1]) {
            int64_t len = n - s0 < b * sh[1] ? n - s0 : b * sh[1], ks = kr < len ? kr : len;
            ref_topk(a + s0, len, ks, s0, want + w);
            w += ks;
        }
        bsr_ids(m, got);
        CHECK(m->nnzb == w && memcmp(got, want, (size_t)w * sizeof *got) == 0);
        sq_bsr_free(m);
    }
    free(a);
    free(want);
    free(got);
    sq_tensor_release(x);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

/* dW = dyᵀ·x̂ from the BSR kernel vs a dense GEMM on the densified x̂. */
TEST(bsr_dw_matches_dense_on_pruned_input)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 51);
    struct { int64_t R, K, M, b; sq_prune_criterion c; } cases[] = {
        {37, 45, 13, 8, SQ_PRUNE_L2}, {64, 96, 32, 32, SQ_PRUNE_L2}, {29, 33, 7, 16, SQ_PRUNE_RANDOM},
        {23, 31, 11, 8, SQ_PRUNE_TOPK_UNSTRUCTURED}, {70, 20, 5, 64, SQ_PRUNE_L2}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        int64_t R = cases[c].R, K = cases[c].K, M = cases[c].M;
        int64_t xs[2] = {R, K}, gs[2] = {R, M}, ws[2] = {M, K};
        sq_tensor *x = NULL, *dy = NULL, *xh = NULL, *dw = NULL, *ref = NULL;
        sq_bsr *m = NULL;
        CHECK_OK(&ctx, sq_tensor_randn(&ctx, SQ_F64, 2, xs, 0, 1, &x));
        CHECK_OK(&ctx, sq_tensor_randn(&ctx, SQ_F64, 2, gs, 0, 1, &dy));
        CHECK_OK(&ctx, sq_bsr_prune_pack(&ctx, x, cases[c].b, 0.4, cases[c].c, SQ_PRUNE_SCOPE_TENSOR,
                                         SQ_MEM_OTHER, &m));
        CHECK_OK(&ctx, sq_bsr_to_dense(&ctx, m, &xh));
        CHECK_OK(&ctx, sq_tensor_full(&ctx, SQ_F64, 2, ws, NAN, &dw)); /* must be overwritten */
        CHECK_OK(&ctx, sq_tensor_empty(&ctx, SQ_F64, 2, ws, &ref));
        sq_cpu_gemm(&ctx.stats, SQ_F64, 1, 0, M, K, R, 1.0, sq_tensor_data(dy), M, sq_tensor_data(xh), K,
                    0.0, sq_tensor_data(ref), K);
        double flops0 = ctx.stats.gemm_flops;
        CHECK_OK(&ctx, sq_bsr_dw(&ctx, dy, m, dw));
        CHECK_NEAR(ctx.stats.gemm_flops - flops0, sq_bsr_dw_flops(m, M), 0.5);
        double worst = 0;
        for (int64_t i = 0; i < M * K; i++) {
            double e = fabs(sq_tensor_get_flat(dw, i) - sq_tensor_get_flat(ref, i));
            if (!(e <= worst)) worst = e;
        }
        CHECK_MSG(worst < 1e-12, "case %zu: BSR dW off by %g", c, worst);
        /* the same with the transposed index held (no temporary) */
        CHECK_OK(&ctx, sq_bsr_build_transpose(&ctx, m, SQ_MEM_OTHER));
        CHECK_OK(&ctx, sq_bsr_dw(&ctx, dy, m, dw));
        worst = 0;
        for (int64_t i = 0; i < M * K; i++) {
            double e = fabs(sq_tensor_get_flat(dw, i) - sq_tensor_get_flat(ref, i));
            if (!(e <= worst)) worst = e;
        }
        CHECK(worst < 1e-12);
        sq_bsr_free(m);
        sq_tensor_release(x);
        sq_tensor_release(dy);
        sq_tensor_release(xh);
        sq_tensor_release(dw);
        sq_tensor_release(ref);
    }
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

/* ---- the pruned linear layer -------------------------------------------------------- */

typedef struct {
    sq_tensor *y, *dx, *dw, *db;
    sq_actprune_stats st;
    int64_t saved_after_fwd;
} run_out;

static void run_free(run_out *o)
{
    sq_tensor_release(o->y);
    sq_tensor_release(o->dx);
    sq_tensor_release(o->dw);
    sq_tensor_release(o->db);
}

/* Forward + backward of one layer (pruned when cfg, else sq_linear) with fresh
 * leaves copied from x0, w0, b0, and a fixed cotangent g. */
static sq_status run_layer(sq_ctx *ctx, sq_tensor *x0, sq_tensor *w0, sq_tensor *b0, sq_tensor *g,
                           const sq_actprune_cfg *cfg, run_out *o)
{
    memset(o, 0, sizeof *o);
    sq_tensor *x = NULL, *w = NULL, *b = NULL;
    sq_status st;
    SQ_CHECK(sq_tensor_clone(ctx, x0, &x));
    SQ_CHECK(sq_tensor_clone(ctx, w0, &w));
    SQ_CHECK(sq_tensor_clone(ctx, b0, &b));
    x->requires_grad = w->requires_grad = b->requires_grad = 1;
    sq_storage_set_category(w->storage, SQ_MEM_PARAM); /* saved parameters cost nothing extra */
    sq_storage_set_category(b->storage, SQ_MEM_PARAM);
    int64_t s0 = ctx->mem.cur[SQ_CPU][SQ_MEM_SAVED];
    if (cfg) SQ_CHECK(sq_linear_pruned(ctx, x, w, b, cfg, &o->y, &o->st));
    else SQ_CHECK(sq_linear(ctx, x, w, b, &o->y));
    o->saved_after_fwd = ctx->mem.cur[SQ_CPU][SQ_MEM_SAVED] - s0;
    SQ_CHECK(sq_backward(ctx, o->y, g));
    o->dx = x->grad;
    o->dw = w->grad;
    o->db = b->grad;
    x->grad = w->grad = b->grad = NULL;
done:
    sq_tensor_release(x);
    sq_tensor_release(w);
    sq_tensor_release(b);
    return st;
}

static int same_bytes(const sq_tensor *a, const sq_tensor *b)
{
    return a && b && sq_shape_equal(a, b) && a->dtype == b->dtype &&
           memcmp(sq_tensor_data(a), sq_tensor_data(b),
                  (size_t)sq_tensor_numel(a) * sq_dtype_size(a->dtype)) == 0;
}

static double rel_diff(const sq_tensor *a, const sq_tensor *b)
{
    double num = 0, den = 0;
    for (int64_t i = 0; i < sq_tensor_numel(a); i++) {
        double d = sq_tensor_get_flat(a, i) - sq_tensor_get_flat(b, i);
        num += d * d;
        den += sq_tensor_get_flat(a, i) * sq_tensor_get_flat(a, i);
    }
    return sqrt(num / den);
}

/* x (3,23,40) -> R = 69 rows (not a multiple of any block), K = 40, M = 24. */
static void make_layer(sq_ctx *ctx, sq_dtype dt, sq_tensor **x, sq_tensor **w, sq_tensor **b,
                       sq_tensor **g)
{
    int64_t xs[3] = {3, 23, 40}, ws[2] = {24, 40}, bs[1] = {24}, gs[3] = {3, 23, 24};
    sq_tensor_randn(ctx, dt, 3, xs, 0, 1, x);
    sq_tensor_randn(ctx, dt, 2, ws, 0, 0.2, w);
    sq_tensor_randn(ctx, dt, 1, bs, 0, 1, b);
    sq_storage_set_category((*w)->storage, SQ_MEM_PARAM);
    sq_storage_set_category((*b)->storage, SQ_MEM_PARAM);
    sq_tensor_randn(ctx, dt, 3, gs, 0, 1, g);
}

TEST(keep_one_matches_dense_layer)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 61);
    for (int dt = 0; dt < 2; dt++) {
        sq_tensor *x, *w, *b, *g;
        make_layer(&ctx, dt ? SQ_F64 : SQ_F32, &x, &w, &b, &g);
        int64_t blocks[] = {8, 16, 32, 64};
        for (int bi = 0; bi < 4; bi++) {
            sq_actprune_cfg cfg;
            sq_actprune_cfg_default(&cfg);
            cfg.block = blocks[bi];
            cfg.keep = 1.0;
            run_out d, p;
            CHECK_OK(&ctx, run_layer(&ctx, x, w, b, g, NULL, &d));
            CHECK_OK(&ctx, run_layer(&ctx, x, w, b, g, &cfg, &p));
            CHECK(same_bytes(d.y, p.y) && same_bytes(d.dx, p.dx) && same_bytes(d.db, p.db));
            /* dW: the BSR kernel sums the R rows block by block instead of in
             * one GEMM, so it equals the dense dW up to summation order:
             * ~1e-7 relative in float32, ~1e-16 in float64. */
            double e = p.dw ? rel_diff(d.dw, p.dw) : INFINITY;
            CHECK_MSG(e < (dt ? 1e-13 : 1e-6), "%s block %lld: keep 1 dW relative error %g",
                      dt ? "f64" : "f32", (long long)blocks[bi], e);
            CHECK(p.st.pruned && p.st.kept_blocks == p.st.total_blocks);
            run_free(&d);
            run_free(&p);
        }
        sq_tensor_release(x);
        sq_tensor_release(w);
        sq_tensor_release(b);
        sq_tensor_release(g);
    }
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

TEST(dx_db_exact_and_saved_bytes_at_any_keep)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 62);
    sq_tensor *x, *w, *b, *g;
    make_layer(&ctx, SQ_F32, &x, &w, &b, &g);
    run_out d;
    CHECK_OK(&ctx, run_layer(&ctx, x, w, b, g, NULL, &d));
    CHECK(d.saved_after_fwd == 69 * 40 * 4); /* sq_linear holds x dense (W is not charged) */
    double keeps[] = {1.0, 0.75, 0.5, 0.3, 0.1};
    int64_t blocks[] = {8, 16, 32, 64};
    for (int crit = 0; crit < SQ_PRUNE_NCRITERIA; crit++)
        for (int scope = 0; scope < SQ_PRUNE_NSCOPES; scope++)
            for (int bi = 0; bi < 4; bi++)
                for (int ki = 0; ki < 5; ki++) {
                    sq_actprune_cfg cfg = {blocks[bi], keeps[ki], (sq_prune_criterion)crit,
                                           (sq_prune_scope)scope, (bi + ki) % 2, 1};
                    run_out p;
                    CHECK_OK(&ctx, run_layer(&ctx, x, w, b, g, &cfg, &p));
                    CHECK_MSG(same_bytes(d.y, p.y) && same_bytes(d.dx, p.dx) && same_bytes(d.db, p.db),
                              "%s/%s b %lld keep %g: y, dx or db not bit-identical to sq_linear",
                              sq_prune_criterion_name(crit), sq_prune_scope_name(scope),
                              (long long)blocks[bi], keeps[ki]);
                    /* what autograd holds for x is exactly the BSR */
                    int64_t bb = blocks[bi], nbr = ceil_div(69, bb), nbc = ceil_div(40, bb);
                    int64_t k, index_bytes, vb;
                    if (crit == SQ_PRUNE_TOPK_UNSTRUCTURED) {
                        k = scope ? 0 : sq_select_count(keeps[ki], nbr * nbc) * bb * bb;
                        if (scope) /* per b-row band, clamped to the band's entries */
                            for (int64_t r0 = 0; r0 < 69; r0 += bb) {
                                int64_t band = (69 - r0 < bb ? 69 - r0 : bb) * 40,
                                        kr = sq_select_count(keeps[ki], nbc) * bb * bb;
                                k += kr < band ? kr : band;
                            }
                        if (k > 69 * 40) k = 69 * 40;
                        vb = k * 4;
                        index_bytes = (69 + 1) * 8 + k * 4;
                    } else {
                        k = scope ? nbr * sq_select_count(keeps[ki], nbc)
                                  : sq_select_count(keeps[ki], nbr * nbc);
                        vb = k * bb * bb * 4;
                        index_bytes = (nbr + 1) * 8 + k * 4 + (cfg.transpose_at_pack ? (nbc + 1) * 8 + k * 8 : 0);
                    }
                    CHECK_MSG(p.st.kept_blocks == k && p.st.value_bytes == vb &&
                                  p.st.saved_bytes == vb + index_bytes && p.saved_after_fwd == p.st.saved_bytes,
                              "%s/%s b %lld keep %g: kept %lld (want %lld), saved %lld, counted %lld, want %lld",
                              sq_prune_criterion_name(crit), sq_prune_scope_name(scope), (long long)bb,
                              keeps[ki], (long long)p.st.kept_blocks, (long long)k,
                              (long long)p.st.saved_bytes, (long long)p.saved_after_fwd,
                              (long long)(vb + index_bytes));
                    CHECK(p.st.dense_bytes == 69 * 40 * 4);
                    sq_tensor_release(p.dw);
                    p.dw = NULL;
                    run_free(&p);
                }
    run_free(&d);
    sq_tensor_release(x);
    sq_tensor_release(w);
    sq_tensor_release(b);
    sq_tensor_release(g);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

/* A layer whose sizes are multiples of b: saved ≈ keep x dense + index overhead. */
TEST(saved_bytes_scale_with_keep_and_dense_x_is_freed)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 63);
    int64_t xs[2] = {256, 512}, ws[2] = {128, 512}, dense = 256 * 512 * 4;
    sq_tensor *w = NULL;
    CHECK_OK(&ctx, sq_tensor_randn(&ctx, SQ_F32, 2, ws, 0, 0.05, &w));
    sq_storage_set_category(w->storage, SQ_MEM_PARAM);
    w->requires_grad = 1;
    double keeps[] = {0.75, 0.5, 0.3, 0.1};
    for (int ki = 0; ki < 4; ki++) {
        sq_actprune_cfg cfg;
        sq_actprune_cfg_default(&cfg);
        cfg.block = 16;
        cfg.keep = keeps[ki];
        sq_tensor *x = NULL, *y = NULL;
        sq_actprune_stats st;
        CHECK_OK(&ctx, sq_tensor_randn(&ctx, SQ_F32, 2, xs, 0, 1, &x));
        int64_t other0 = ctx.mem.cur[SQ_CPU][SQ_MEM_OTHER];
        CHECK_OK(&ctx, sq_linear_pruned(&ctx, x, w, NULL, &cfg, &y, &st));
        int64_t kept = sq_select_count(keeps[ki], 16 * 32);
        int64_t idx = 17 * 8 + kept * 4;
        CHECK(st.saved_bytes == kept * 16 * 16 * 4 + idx);
        CHECK(ctx.mem.cur[SQ_CPU][SQ_MEM_SAVED] == st.saved_bytes);
        double ratio = (double)st.value_bytes / (double)dense;
        CHECK_MSG(fabs(ratio - keeps[ki]) <= 1.0 / 512 + 1e-12, "keep %g: values are %g of dense",
                  keeps[ki], ratio);
        CHECK((double)idx / (double)st.value_bytes < 0.02); /* 4 bytes per 1 KiB block + pointers */
        /* the caller drops x: its dense bytes leave memory although the graph lives on */
        int64_t total0 = ctx.mem.total_cur[SQ_CPU];
        sq_tensor_release(x);
        CHECK(ctx.mem.total_cur[SQ_CPU] == total0 - dense);
        CHECK(ctx.mem.cur[SQ_CPU][SQ_MEM_OTHER] == other0 - dense + 256 * 128 * 4); /* y remains */
        CHECK(ctx.mem.cur[SQ_CPU][SQ_MEM_SAVED] == st.saved_bytes);
        sq_tensor_release(y); /* frees the graph and the BSR */
        CHECK(ctx.mem.cur[SQ_CPU][SQ_MEM_SAVED] == 0);
    }
    /* for comparison, sq_linear keeps the dense x alive after the caller drops it */
    sq_tensor *x = NULL, *y = NULL;
    CHECK_OK(&ctx, sq_tensor_randn(&ctx, SQ_F32, 2, xs, 0, 1, &x));
    CHECK_OK(&ctx, sq_linear(&ctx, x, w, NULL, &y));
    sq_tensor_release(x);
    CHECK(ctx.mem.cur[SQ_CPU][SQ_MEM_SAVED] == dense);
    sq_tensor_release(y);
    sq_tensor_release(w);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

TEST(backward_frees_the_bsr_and_frozen_weight_saves_nothing)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 64);
    sq_tensor *x, *w, *b, *g, *y = NULL;
    make_layer(&ctx, SQ_F32, &x, &w, &b, &g);
    sq_actprune_cfg cfg;
    sq_actprune_cfg_default(&cfg);
    cfg.block = 8;
    w->requires_grad = 1;
    sq_actprune_stats st;
    CHECK_OK(&ctx, sq_linear_pruned(&ctx, x, w, b, &cfg, &y, &st));
    CHECK(st.pruned && ctx.mem.cur[SQ_CPU][SQ_MEM_SAVED] == st.saved_bytes);
    double wg0 = (double)ctx.stats.weight_grad_gemms;
    CHECK_OK(&ctx, sq_backward(&ctx, y, g));
    CHECK(ctx.mem.cur[SQ_CPU][SQ_MEM_SAVED] == 0);
    CHECK((double)ctx.stats.weight_grad_gemms == wg0 + 1);
    CHECK_FAIL(&ctx, SQ_ERR_STATE, "already used", sq_backward(&ctx, y, g));
    sq_tensor_release(y);
    sq_tensor_release(w->grad);
    w->grad = NULL;
    /* frozen W, x needs a gradient: x is not saved, nothing to prune */
    w->requires_grad = 0;
    x->requires_grad = 1;
    CHECK_OK(&ctx, sq_linear_pruned(&ctx, x, w, NULL, &cfg, &y, &st));
    CHECK(!st.pruned && st.saved_bytes == 0 && ctx.mem.cur[SQ_CPU][SQ_MEM_SAVED] == 0);
    CHECK_OK(&ctx, sq_backward(&ctx, y, g));
    CHECK(x->grad != NULL);
    sq_tensor_release(y);
    /* no grad at all: plain forward */
    x->requires_grad = 0;
    CHECK_OK(&ctx, sq_linear_pruned(&ctx, x, w, b, &cfg, &y, &st));
    CHECK(!st.pruned && y->grad_fn == NULL);
    sq_tensor_release(y);
    sq_tensor_release(x);
    sq_tensor_release(w);
    sq_tensor_release(b);
    sq_tensor_release(g);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

static sq_status f_pruned(sq_ctx *ctx, sq_tensor **in, void *arg, sq_tensor **out)
{
    return sq_linear_pruned(ctx, in[0], in[1], in[2], arg, out, NULL);
}

/* At keep 1 the layer is an exact linear layer: finite differences agree. */
TEST(keep_one_gradcheck)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 65);
    int64_t xs[3] = {2, 5, 9}, ws[2] = {4, 9}, bs[1] = {4};
    sq_tensor *in[3] = {sq_gc_input(&ctx, 3, xs), sq_gc_input(&ctx, 2, ws), sq_gc_input(&ctx, 1, bs)};
    sq_actprune_cfg cfg;
    sq_actprune_cfg_default(&cfg);
    cfg.block = 8;
    cfg.keep = 1.0;
    double err = sq_gradcheck(&ctx, f_pruned, 3, in, &cfg, 1e-6);
    CHECK_MSG(err < 1e-7, "gradcheck error %g", err);
    for (int i = 0; i < 3; i++) sq_tensor_release(in[i]);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

TEST(dw_error_metric)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 66);
    sq_tensor *x, *w, *b, *g;
    make_layer(&ctx, SQ_F64, &x, &w, &b, &g);
    sq_actprune_cfg cfg;
    sq_actprune_cfg_default(&cfg);
    cfg.block = 8;
    cfg.keep = 1.0;
    double e1 = -1, e5 = -1, e1r = -1;
    CHECK_OK(&ctx, sq_actprune_dw_error(&ctx, x, g, &cfg, &e1));
    CHECK(e1 >= 0 && e1 < 1e-13);
    cfg.keep = 0.5;
    CHECK_OK(&ctx, sq_actprune_dw_error(&ctx, x, g, &cfg, &e5));
    /* the same number from the layer's own backward */
    run_out d, p;
    CHECK_OK(&ctx, run_layer(&ctx, x, w, b, g, NULL, &d));
    CHECK_OK(&ctx, run_layer(&ctx, x, w, b, g, &cfg, &p));
    CHECK_NEAR(e5, rel_diff(d.dw, p.dw), 1e-12);
    CHECK(e5 > 0 && e5 < 1);
    cfg.criterion = SQ_PRUNE_RANDOM;
    CHECK_OK(&ctx, sq_actprune_dw_error(&ctx, x, g, &cfg, &e1r));
    CHECK_MSG(e1r > e5, "random blocks (%g) should lose more than the largest ones (%g)", e1r, e5);
    run_free(&d);
    run_free(&p);
    CHECK_FAIL(&ctx, SQ_ERR_SHAPE, "same leading elements", sq_actprune_dw_error(&ctx, x, w, &cfg, &e1));
    sq_tensor_release(x);
    sq_tensor_release(w);
    sq_tensor_release(b);
    sq_tensor_release(g);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

TEST(bad_config_is_a_clear_error)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 67);
    int64_t xs[2] = {8, 6}, ws[2] = {4, 7};
    sq_tensor *x = NULL, *w = NULL, *y = (sq_tensor *)&ctx;
    CHECK_OK(&ctx, sq_tensor_randn(&ctx, SQ_F32, 2, xs, 0, 1, &x));
    CHECK_OK(&ctx, sq_tensor_randn(&ctx, SQ_F32, 2, ws, 0, 1, &w));
    w->requires_grad = 1;
    sq_actprune_cfg cfg;
    sq_actprune_cfg_default(&cfg);
    cfg.block = 0;
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "linear_pruned: block size 0 is not one of 8, 16, 32, 64",
               sq_linear_pruned(&ctx, x, w, NULL, &cfg, &y, NULL));
    CHECK(y == NULL);
    cfg.block = 12;
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "block size 12", sq_linear_pruned(&ctx, x, w, NULL, &cfg, &y, NULL));
    cfg.block = 8;
    cfg.keep = 0;
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "keep ratio 0 must be in (0,1]", sq_linear_pruned(&ctx, x, w, NULL, &cfg, &y, NULL));
    cfg.keep = 1.5;
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "keep ratio 1.5 must be in (0,1]", sq_linear_pruned(&ctx, x, w, NULL, &cfg, &y, NULL));
    cfg.keep = NAN;
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "keep ratio", sq_linear_pruned(&ctx, x, w, NULL, &cfg, &y, NULL));
    cfg.keep = 0.5;
    cfg.criterion = (sq_prune_criterion)7;
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "unknown criterion 7", sq_linear_pruned(&ctx, x, w, NULL, &cfg, &y, NULL));
    cfg.criterion = SQ_PRUNE_L2;
    cfg.scope = (sq_prune_scope)3;
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "unknown scope 3", sq_linear_pruned(&ctx, x, w, NULL, &cfg, &y, NULL));
    cfg.scope = SQ_PRUNE_SCOPE_ROW;
    CHECK_FAIL(&ctx, SQ_ERR_SHAPE, "linear_pruned: input 8x6 does not match weight 4x7",
               sq_linear_pruned(&ctx, x, w, NULL, &cfg, &y, NULL));
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "config is missing", sq_linear_pruned(&ctx, x, w, NULL, NULL, &y, NULL));
    CHECK(sq_prune_criterion_parse("l2") == SQ_PRUNE_L2 && sq_prune_criterion_parse("L1") == -1);
    CHECK(sq_prune_scope_parse("row") == SQ_PRUNE_SCOPE_ROW && sq_prune_scope_parse(NULL) == -1);
    sq_bsr *m = NULL;
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "bsr_prune_pack: block size 0", sq_bsr_prune_pack(&ctx, x, 0, 0.5, SQ_PRUNE_L2, SQ_PRUNE_SCOPE_TENSOR, SQ_MEM_OTHER, &m));
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "keep ratio 0 must be", sq_bsr_prune_pack(&ctx, x, 8, 0, SQ_PRUNE_L2, SQ_PRUNE_SCOPE_TENSOR, SQ_MEM_OTHER, &m));
    int64_t s3[3] = {2, 8, 6};
    sq_tensor *x3 = NULL;
    CHECK_OK(&ctx, sq_tensor_zeros(&ctx, SQ_F32, 3, s3, &x3));
    CHECK_FAIL(&ctx, SQ_ERR_SHAPE, "bsr_prune_pack: input must be 2-d (R,K), got 2x8x6",
               sq_bsr_prune_pack(&ctx, x3, 8, 0.5, SQ_PRUNE_L2, SQ_PRUNE_SCOPE_TENSOR, SQ_MEM_OTHER, &m));
    CHECK(m == NULL);
    sq_tensor_release(x3);
    sq_tensor_release(x);
    sq_tensor_release(w);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

SQ_TEST_MAIN_BEGIN
    RUN(select_matches_full_sort);
    RUN(select_segments_match_sort);
    RUN(select_count_and_errors);
    RUN(bsr_roundtrip_odd_sizes_and_bytes);
    RUN(prune_pack_l2_selects_topk_blocks);
    RUN(prune_pack_random_is_seeded);
    RUN(prune_pack_unstructured_keeps_largest_entries_as_csr);
    RUN(bsr_dw_matches_dense_on_pruned_input);
    RUN(keep_one_matches_dense_layer);
    RUN(dx_db_exact_and_saved_bytes_at_any_keep);
    RUN(saved_bytes_scale_with_keep_and_dense_x_is_freed);
    RUN(backward_frees_the_bsr_and_frozen_weight_saves_nothing);
    RUN(keep_one_gradcheck);
    RUN(dw_error_metric);
    RUN(bad_config_is_a_clear_error);
SQ_TEST_MAIN_END
