/* test_cuda_linear_pruned.c — sq_linear_pruned and sq_actprune_dw_error on
 * the GPU against the same calls on the CPU and against sq_linear on the GPU.
 *
 * Each case draws fresh random inputs on the CPU (normal, never zero; odd
 * sizes: R, K, M not multiples of the block), copies them to the GPU and
 * runs, with the same upstream gradient everywhere:
 *   CPU  sq_linear_pruned           (the reference of the method)
 *   GPU  sq_linear_pruned           (what is tested)
 *   GPU  sq_linear                  (the reference of the exact parts)
 * for blocks 8/16/32/64, keep {1, .5, .1}, scopes tensor and row,
 * transpose_at_pack 0 and 1, 2-d and 3-d inputs, a non-contiguous
 * (transposed) input, with and without bias.
 *
 * Checks and tolerances:
 *   y:      bit-equal to GPU sq_linear's (the same cuBLASLt call), and
 *           within 1e-5 relative of the CPU's;
 *   dx, db: bit-equal to GPU sq_linear's (the same cuBLAS GEMM and column-sum
 *           kernel; x̂ never enters them);
 *   dW:     against the CPU sq_linear_pruned's (float32 sq_bsr_dw on the
 *           same kept blocks): 3xTF32 (TF32 flag off) <= 2e-5, TF32 (flag
 *           on) <= 4e-3 — each kernel is held to 1e-5 / 2e-3 against float64
 *           in test_cuda_actprune; at keep 1 also against GPU sq_linear's dW;
 *           transpose_at_pack 0 and 1 give bit-equal dW (the index rebuilt
 *           in backward equals the fused one);
 *   stats:  kept_blocks, total_blocks, saved_bytes, value_bytes, dense_bytes
 *           and dw_flops equal to the CPU's;
 *   memory: the SAVED bytes the forward adds equal the CPU's, and equal
 *           sq_linear's on the GPU minus the dense x plus saved_bytes (the
 *           dense x is let go, the BSR held); SAVED back to its level after
 *           backward; every GPU byte released at the end.
 *   controls: topk_unstructured runs every check above (its kept entries
 *           are the CPU's; dW by the GPU CSR kernel in float64 sums, held
 *           to the same tolerance; a CSR has no transposed index at pack).
 *           random keeps other blocks than the CPU (Philox, not ctx->rng), so
 *           its dW is checked against the CPU's float32 sq_bsr_dw on a host
 *           copy of the very BSR the GPU node kept (<= 2e-5 / 4e-3), its
 *           dw_flops against that BSR's, and reseeding the GPU stream
 *           reproduces it (transpose at pack: bit-equal dW).
 *   errors: float64 and mixed devices are refused on the GPU with a message
 *           naming them, leaking nothing.
 *   dw_error: GPU vs CPU sq_actprune_dw_error within 1e-4 absolute (both
 *           measure the same kept set; l2 and topk_unstructured), 0 to 1e-5
 *           at keep 1.
 *
 * Exit codes: 0 all passed, 1 a failure, 77 no usable GPU (ctest: skipped). */
#include "cuda/sq_cuda.h"
#include "sq_actprune.h"
#include "sq_autograd.h"
#include "sq_bsr.h"
#include "sq_device.h"
#include "sq_ops.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_test.h"

static sq_tensor *randn(tc *t, sq_dtype dt, int nd, const int64_t *shape, int grad)
{
    sq_tensor *x = NULL;
    if (sq_tensor_randn(&t->ctx, dt, nd, shape, 0.0, 1.0, &x) != SQ_OK) {
        printf("FATAL randn: %s\n", t->ctx.err);
        exit(1);
    }
    x->requires_grad = grad;
    return x;
}

/* A GPU copy that is a leaf of its own (requires_grad as given). */
static sq_tensor *to_gpu(tc *t, sq_tensor *x, int grad)
{
    sq_tensor *g = NULL;
    if (sq_tensor_to_device(&t->ctx, x, SQ_CUDA, &g) != SQ_OK) {
        printf("FATAL to cuda: %s\n", t->ctx.err);
        exit(1);
    }
    g->requires_grad = grad;
    return g;
}

static sq_tensor *host(tc *t, sq_tensor *x)
{
    sq_tensor *h = NULL;
    if (sq_tensor_device(x) == SQ_CPU) {
        sq_tensor_retain(x);
        return x;
    }
    if (sq_tensor_to_device(&t->ctx, x, SQ_CPU, &h) != SQ_OK) return NULL;
    return h;
}

/* ||got - ref|| / ||ref|| on the host; -1 on a shape mismatch or a
 * non-finite entry; exact = 1: -1 unless every entry is bit-equal */
static double rel_err(tc *t, sq_tensor *got, sq_tensor *ref, int exact)
{
    sq_tensor *g = got ? host(t, got) : NULL, *r = ref ? host(t, ref) : NULL;
    double err = -1;
    if (!g || !r || !sq_shape_equal(g, r) || g->dtype != r->dtype) goto out;
    double num = 0, den = 0;
    int64_t n = sq_tensor_numel(r);
    err = 0;
    for (int64_t i = 0; i < n; i++) {
        double a = sq_tensor_get_flat(g, i), b = sq_tensor_get_flat(r, i);
        if (!isfinite(a) || !isfinite(b) || (exact && memcmp(&a, &b, sizeof a) != 0)) {
            err = -1;
            break;
        }
        num += (a - b) * (a - b);
        den += b * b;
    }
    if (err == 0) err = den > 0 ? sqrt(num / den) : sqrt(num);
out:
    sq_tensor_release(g);
    sq_tensor_release(r);
    return err;
}

static int64_t saved_now(tc *t, sq_device d) { return t->ctx.mem.cur[d][SQ_MEM_SAVED]; }

typedef struct {
    int nd;
    int64_t shape[3]; /* x's shape (last = K) */
    int64_t M;
    int bias, transposed; /* transposed: x is the transpose view of a (K,R) tensor (2-d only) */
} lp_shape;

/* One configuration on the three paths; tf32: the context's flag for the GPU runs. */
static void check_case(tc *t, const lp_shape *sh, const sq_actprune_cfg *cfg, int tf32)
{
    sq_ctx *ctx = &t->ctx;
    int64_t K = sh->shape[sh->nd - 1], M = sh->M, R = 1;
    for (int i = 0; i < sh->nd - 1; i++) R *= sh->shape[i];
    char tag[160];
    snprintf(tag, sizeof tag, "%s%sR %lld K %lld M %lld%s%s b %lld keep %.1f %s%s%s",
             cfg->criterion == SQ_PRUNE_L2 ? "" : sq_prune_criterion_name(cfg->criterion),
             cfg->criterion == SQ_PRUNE_L2 ? "" : " ", (long long)R,
             (long long)K, (long long)M, sh->bias ? " bias" : "", sh->transposed ? " xT" : "",
             (long long)cfg->block, cfg->keep, sq_prune_scope_name(cfg->scope),
             cfg->transpose_at_pack ? " t@pack" : "", tf32 ? " tf32" : "");
    sq_tensor *xc = NULL, *xbase = NULL, *wc = NULL, *bc = NULL, *gy = NULL;
    sq_tensor *xg = NULL, *xgbase = NULL, *wg = NULL, *bg = NULL, *gyg = NULL;
    sq_tensor *xr = NULL, *xrbase = NULL, *wr = NULL, *br = NULL;
    sq_tensor *yc = NULL, *yg = NULL, *yr = NULL, *gy2 = NULL, *dwref = NULL;
    sq_bsr *hm = NULL; /* random: host copy of the GPU node's BSR */
    sq_actprune_stats sc, sg;
    int64_t ws[2] = {M, K}, bs[1] = {M};
    if (sh->transposed) { /* x = transpose of a contiguous (K,R) tensor, on each path */
        int64_t ts[2] = {K, R};
        xbase = randn(t, SQ_F32, 2, ts, 0);
        xgbase = to_gpu(t, xbase, 0);
        xrbase = to_gpu(t, xbase, 0);
        MUST(t, sq_transpose(ctx, xbase, 0, 1, &xc));
        MUST(t, sq_transpose(ctx, xgbase, 0, 1, &xg));
        MUST(t, sq_transpose(ctx, xrbase, 0, 1, &xr));
        /* views of leaves that need no gradient: dx is checked on the others */
    } else {
        xc = randn(t, SQ_F32, sh->nd, sh->shape, 1);
        xg = to_gpu(t, xc, 1);
        xr = to_gpu(t, xc, 1);
    }
    wc = randn(t, SQ_F32, 2, ws, 1);
    wg = to_gpu(t, wc, 1);
    wr = to_gpu(t, wc, 1);
    if (sh->bias) {
        bc = randn(t, SQ_F32, 1, bs, 1);
        bg = to_gpu(t, bc, 1);
        br = to_gpu(t, bc, 1);
    }

    /* forward, with the SAVED bytes each adds */
    sq_cuda_set_tf32(ctx, 0);
    int64_t s0 = saved_now(t, SQ_CPU);
    MUST(t, sq_linear_pruned(ctx, xc, wc, bc, cfg, &yc, &sc));
    int64_t dsc = saved_now(t, SQ_CPU) - s0;
    sq_cuda_set_tf32(ctx, tf32);
    const int rnd = cfg->criterion == SQ_PRUNE_RANDOM;
    if (rnd) sq_cuda_rng_seed(ctx, 99); /* the tail below replays the same draw */
    int64_t g0 = saved_now(t, SQ_CUDA);
    MUST(t, sq_linear_pruned(ctx, xg, wg, bg, cfg, &yg, &sg));
    int64_t dsg = saved_now(t, SQ_CUDA) - g0;
    if (rnd) { /* a host copy of the BSR the GPU node keeps: the reference of its dW */
        const sq_bsr *m = yg->grad_fn ? yg->grad_fn->extra : NULL;
        if (!m) {
            report(t, 0, "%s: no BSR on the GPU node", tag);
            goto out;
        }
        MUST(t, sq_bsr_new(ctx, SQ_F32, m->rows, m->cols, m->b, m->nnzb, SQ_MEM_OTHER, &hm));
        sq_tensor *src[3] = {m->row_ptr, m->col_idx, m->values}, *dst[3] = {hm->row_ptr, hm->col_idx, hm->values};
        for (int q = 0; q < 3; q++) {
            sq_tensor *h = host(t, src[q]);
            if (!h) {
                report(t, 0, "%s: BSR to host: %s", tag, ctx->err);
                goto out;
            }
            memcpy(sq_tensor_data(dst[q]), sq_tensor_data(h), (size_t)sq_tensor_numel(h) * sq_dtype_size(h->dtype));
            sq_tensor_release(h);
        }
    }
    int64_t r0 = saved_now(t, SQ_CUDA);
    MUST(t, sq_linear(ctx, xr, wr, br, &yr));
    int64_t dsr = saved_now(t, SQ_CUDA) - r0;

    report(t, sq_tensor_device(yg) == SQ_CUDA && yg->grad_fn != NULL, "%s: y on cuda with a node", tag);
    double e = rel_err(t, yg, yr, 1);
    report(t, e == 0, "%s: y bit-equal to GPU sq_linear", tag);
    e = rel_err(t, yg, yc, 0);
    report(t, e >= 0 && e <= (tf32 ? 5e-3 : 1e-5), "%s: y vs CPU rel %.2e (tol %.0e)", tag, e, tf32 ? 5e-3 : 1e-5);
    /* random: the same counts, its own blocks (dw_flops of the padded ones) */
    double want_flops = rnd ? sq_bsr_dw_flops(hm, M) : sc.dw_flops;
    int stats_eq = sg.pruned == 1 && sc.pruned == 1 && sg.kept_blocks == sc.kept_blocks &&
                   sg.total_blocks == sc.total_blocks && sg.saved_bytes == sc.saved_bytes &&
                   sg.value_bytes == sc.value_bytes && sg.dense_bytes == sc.dense_bytes &&
                   sg.dw_flops == want_flops && sg.dense_dw_flops == sc.dense_dw_flops;
    report(t, stats_eq, "%s: stats equal the CPU's (kept %lld/%lld, saved %lld B, dw_flops %.0f vs %.0f)",
           tag, (long long)sg.kept_blocks, (long long)sg.total_blocks, (long long)sg.saved_bytes,
           sg.dw_flops, sc.dw_flops);
    report(t, dsg == dsc && dsg == dsr - sg.dense_bytes + sg.saved_bytes && sg.compress_s >= 0,
           "%s: SAVED +%lld B on cuda, +%lld B on cpu; dense linear +%lld B - x %lld + BSR %lld", tag,
           (long long)dsg, (long long)dsc, (long long)dsr, (long long)sg.dense_bytes,
           (long long)sg.saved_bytes);

    /* backward: the same upstream gradient everywhere */
    gy = randn(t, SQ_F32, yc->ndim, yc->shape, 0);
    gyg = to_gpu(t, gy, 0);
    sq_cuda_set_tf32(ctx, 0);
    MUST(t, sq_backward(ctx, yc, gy));
    sq_cuda_set_tf32(ctx, tf32);
    MUST(t, sq_backward(ctx, yg, gyg));
    MUST(t, sq_backward(ctx, yr, gyg));
    report(t, saved_now(t, SQ_CUDA) == g0 && saved_now(t, SQ_CPU) == s0,
           "%s: SAVED back to its level after backward (cuda %lld, cpu %lld B over)", tag,
           (long long)(saved_now(t, SQ_CUDA) - g0), (long long)(saved_now(t, SQ_CPU) - s0));
    if (!sh->transposed) {
        e = rel_err(t, xg->grad, xr->grad, 1);
        report(t, e == 0, "%s: dx bit-equal to GPU sq_linear", tag);
    }
    if (sh->bias) {
        e = rel_err(t, bg->grad, br->grad, 1);
        report(t, e == 0, "%s: db bit-equal to GPU sq_linear", tag);
    }
    double tol = tf32 && cfg->criterion != SQ_PRUNE_TOPK_UNSTRUCTURED ? 4e-3 : 2e-5;
    if (rnd) { /* CPU float32 sq_bsr_dw on the GPU's own kept blocks */
        int64_t gs2[2] = {R, M}, ws2[2] = {M, K};
        MUST(t, sq_tensor_empty(ctx, SQ_F32, 2, gs2, &gy2));
        MUST(t, sq_tensor_empty(ctx, SQ_F32, 2, ws2, &dwref));
        memcpy(sq_tensor_data(gy2), sq_tensor_data(gy), (size_t)(R * M) * 4);
        MUST(t, sq_bsr_dw(ctx, gy2, hm, dwref));
        e = rel_err(t, wg->grad, dwref, 0);
        report(t, e >= 0 && e <= tol && sq_tensor_device(wg->grad) == SQ_CUDA,
               "%s: dW vs CPU sq_bsr_dw on the GPU's kept blocks rel %.2e (tol %.0e)", tag, e, tol);
    } else {
        e = rel_err(t, wg->grad, wc->grad, 0);
        report(t, e >= 0 && e <= tol && sq_tensor_device(wg->grad) == SQ_CUDA,
               "%s: dW vs CPU linear_pruned rel %.2e (tol %.0e)", tag, e, tol);
    }
    if (cfg->keep == 1) { /* sq_linear's dW follows the TF32 flag whatever the criterion */
        double tl = tf32 ? 4e-3 : 2e-5;
        e = rel_err(t, wg->grad, wr->grad, 0);
        report(t, e >= 0 && e <= tl, "%s: keep 1: dW vs GPU sq_linear rel %.2e (tol %.0e)", tag, e, tl);
    }
    if (!cfg->transpose_at_pack && !tf32) { /* the index rebuilt in backward = the fused one */
        sq_actprune_cfg c2 = *cfg;
        c2.transpose_at_pack = 1;
        sq_tensor *w2 = to_gpu(t, wc, 1), *y2 = NULL;
        sq_actprune_stats s2;
        if (rnd) sq_cuda_rng_seed(ctx, 99);
        sq_status st = sq_linear_pruned(ctx, xg, w2, bg ? bg : NULL, &c2, &y2, &s2);
        if (st == SQ_OK) st = sq_backward(ctx, y2, gyg);
        int64_t nbc = (K + cfg->block - 1) / cfg->block;
        /* a CSR keeps no transposed index (its dW builds one as workspace) */
        int64_t idx = cfg->criterion == SQ_PRUNE_TOPK_UNSTRUCTURED ? 0 : (nbc + 1) * 8 + 8 * sg.kept_blocks;
        e = st == SQ_OK ? rel_err(t, w2->grad, wg->grad, 1) : -1;
        report(t, e == 0 && s2.saved_bytes == sg.saved_bytes + idx,
               "%s: transpose at pack: dW bit-equal, saved %lld = %lld + index", tag,
               (long long)s2.saved_bytes, (long long)sg.saved_bytes);
        sq_tensor_release(y2);
        sq_tensor_release(w2);
    }
out:
    sq_cuda_set_tf32(ctx, 0);
    sq_bsr_free(hm);
    sq_tensor *all[] = {xc, xbase, wc, bc, gy, xg, xgbase, wg, bg, gyg, xr, xrbase, wr, br, yc, yg, yr, gy2, dwref};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) sq_tensor_release(all[i]);
}

static void test_cases(tc *t)
{
    static const lp_shape shapes[] = {
        {3, {3, 37, 45}, 29, 1, 0},   /* R 111, K 45: every edge padded */
        {2, {200, 130}, 70, 0, 0},    /* R 200 (b 64: padded), K 130 */
        {2, {513, 257}, 33, 1, 0},    /* one more row / column than a multiple of b */
        {2, {96, 128}, 40, 1, 0},     /* no padded block at b 8..32 */
        {2, {150, 77}, 51, 1, 1},     /* non-contiguous x */
    };
    static const int64_t blocks[] = {8, 16, 32, 64};
    static const double keeps[] = {1.0, 0.5, 0.1};
    int n = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (size_t bi = 0; bi < 4; bi++)
            for (size_t ki = 0; ki < 3; ki++) {
                sq_actprune_cfg cfg;
                sq_actprune_cfg_default(&cfg);
                cfg.block = blocks[bi];
                cfg.keep = keeps[ki];
                cfg.scope = (n % 3 == 2) ? SQ_PRUNE_SCOPE_ROW : SQ_PRUNE_SCOPE_TENSOR;
                cfg.transpose_at_pack = n % 4 == 3;
                check_case(t, &shapes[s], &cfg, 0);
                n++;
            }
    /* TF32 on: the BSR dW follows the flag */
    sq_actprune_cfg cfg;
    sq_actprune_cfg_default(&cfg);
    for (size_t s = 0; s < 3; s++) check_case(t, &shapes[s], &cfg, 1);
    /* the controls: every shape, blocks 8 and 32, both scopes */
    static const sq_prune_criterion crits[] = {SQ_PRUNE_RANDOM, SQ_PRUNE_TOPK_UNSTRUCTURED};
    n = 0;
    for (int ci = 0; ci < 2; ci++)
        for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
            for (size_t ki = 0; ki < 3; ki++) {
                sq_actprune_cfg_default(&cfg);
                cfg.criterion = crits[ci];
                cfg.block = n % 2 ? 32 : 8;
                cfg.keep = keeps[ki];
                cfg.scope = n % 3 == 1 ? SQ_PRUNE_SCOPE_ROW : SQ_PRUNE_SCOPE_TENSOR;
                cfg.transpose_at_pack = n % 4 == 3;
                check_case(t, &shapes[s], &cfg, n % 5 == 4);
                n++;
            }
}

static void test_errors(tc *t)
{
    sq_ctx *ctx = &t->ctx;
    int64_t xs[2] = {40, 24}, ws[2] = {8, 24};
    sq_tensor *x = randn(t, SQ_F32, 2, xs, 0), *w = randn(t, SQ_F32, 2, ws, 1), *x64 = NULL, *w64 = NULL;
    sq_tensor *xg = to_gpu(t, x, 0), *wg = to_gpu(t, w, 1), *xg64 = NULL, *wg64 = NULL, *y = NULL;
    int64_t before = t->ctx.mem.total_cur[SQ_CUDA];
    MUST(t, sq_tensor_to_dtype(ctx, x, SQ_F64, &x64));
    MUST(t, sq_tensor_to_dtype(ctx, w, SQ_F64, &w64));
    xg64 = to_gpu(t, x64, 0);
    wg64 = to_gpu(t, w64, 1);
    sq_actprune_cfg cfg;
    sq_actprune_cfg_default(&cfg);
    before = t->ctx.mem.total_cur[SQ_CUDA];
    sq_status st = sq_linear_pruned(ctx, xg64, wg64, NULL, &cfg, &y, NULL);
    report(t, st == SQ_ERR_DTYPE && y == NULL && strstr(ctx->err, "float64"),
           "float64 on the GPU refused: \"%s\"", ctx->err);
    st = sq_linear_pruned(ctx, xg, w, NULL, &cfg, &y, NULL);
    report(t, st == SQ_ERR_DEVICE && y == NULL, "input on cuda, weight on cpu refused: \"%s\"", ctx->err);
    report(t, t->ctx.mem.total_cur[SQ_CUDA] == before, "refused calls leave no GPU bytes (%lld)",
           (long long)(t->ctx.mem.total_cur[SQ_CUDA] - before));
out:;
    sq_tensor *all[] = {x, w, x64, w64, xg, wg, xg64, wg64, y};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) sq_tensor_release(all[i]);
}

static void test_dw_error(tc *t)
{
    sq_ctx *ctx = &t->ctx;
    static const int64_t shapes[][3] = {{300, 96, 40}, {257, 130, 77}}; /* R, K, M */
    static const double keeps[] = {1.0, 0.5, 0.1};
    for (int s = 0; s < 2; s++)
        for (int ki = 0; ki < 3; ki++) {
            int64_t xs[2] = {shapes[s][0], shapes[s][1]}, gs[2] = {shapes[s][0], shapes[s][2]};
            sq_tensor *x = randn(t, SQ_F32, 2, xs, 0), *g = randn(t, SQ_F32, 2, gs, 0);
            sq_tensor *xg = to_gpu(t, x, 0), *gg = to_gpu(t, g, 0);
            for (int u = 0; u < 2; u++) {
                sq_actprune_cfg cfg;
                sq_actprune_cfg_default(&cfg);
                cfg.block = s ? 16 : 32;
                cfg.keep = keeps[ki];
                if (u) cfg.criterion = SQ_PRUNE_TOPK_UNSTRUCTURED;
                double ec = -1, eg = -1;
                MUST(t, sq_actprune_dw_error(ctx, x, g, &cfg, &ec));
                MUST(t, sq_actprune_dw_error(ctx, xg, gg, &cfg, &eg));
                int ok = fabs(eg - ec) <= 1e-4 && (keeps[ki] < 1 || eg <= 1e-5);
                report(t, ok, "dw_error %s R %lld K %lld M %lld b %lld keep %.1f: cuda %.6f cpu %.6f",
                       sq_prune_criterion_name(cfg.criterion), (long long)xs[0], (long long)xs[1], (long long)gs[1],
                       (long long)cfg.block, cfg.keep, eg, ec);
            }
        out:
            sq_tensor_release(x);
            sq_tensor_release(g);
            sq_tensor_release(xg);
            sq_tensor_release(gg);
        }
}

int main(void)
{
    tc T;
    memset(&T, 0, sizeof T);
    tc *t = &T;
    if (tc_open_gpu(t, 20261124) != 0) return 77;
    sq_cuda_set_sync_launches(&t->ctx, 1); /* an execution error is blamed on its own call */
    printf("== linear_pruned: GPU vs CPU vs GPU sq_linear\n");
    test_cases(t);
    printf("== errors\n");
    test_errors(t);
    printf("== actprune_dw_error\n");
    test_dw_error(t);
    int64_t left = t->ctx.mem.total_cur[SQ_CUDA];
    report(t, left == 0, "every GPU byte of the test context released (%lld left)", (long long)left);
    sq_device_release_all(&t->ctx);
    printf("%d passed, %d failed\n", t->passed, t->failed);
    return t->failed ? 1 : 0;
}
