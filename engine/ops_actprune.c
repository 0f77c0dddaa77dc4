/* ops_actprune.c — linear layer whose saved input is a pruned BSR copy
 * (structured activation pruning, methods.md §1; see sq_actprune.h).
 *
 * The forward and the exact parts of the backward are sq_linear's own code
 * (sq_linear_record / sq_linear_backward_with in ops_linalg.c); this file
 * only swaps what the node keeps for dW and how dW is computed. */
#include "sq_actprune.h"
#include "sq_ops_internal.h"
#include "sq_proc.h" /* sq_proc_monotonic: the engine's one monotonic clock */

#include <math.h>

void sq_actprune_cfg_default(sq_actprune_cfg *cfg)
{
    cfg->block = 32;
    cfg->keep = 0.5;
    cfg->criterion = SQ_PRUNE_L2;
    cfg->scope = SQ_PRUNE_SCOPE_TENSOR;
    cfg->transpose_at_pack = 0;
}

sq_status sq_actprune_cfg_check(sq_ctx *ctx, const char *fn, const sq_actprune_cfg *cfg)
{
    if (!cfg) return sq_fail(ctx, SQ_ERR_ARG, "%s: config is missing", fn);
    int64_t b = cfg->block;
    if (b != 8 && b != 16 && b != 32 && b != 64)
        return sq_fail(ctx, SQ_ERR_ARG, "%s: block size %lld is not one of 8, 16, 32, 64", fn,
                       (long long)b);
    if (!(cfg->keep > 0 && cfg->keep <= 1))
        return sq_fail(ctx, SQ_ERR_ARG, "%s: keep ratio %g must be in (0,1]", fn, cfg->keep);
    if ((unsigned)cfg->criterion >= SQ_PRUNE_NCRITERIA)
        return sq_fail(ctx, SQ_ERR_ARG, "%s: unknown criterion %d (l2, random, topk_unstructured)",
                       fn, (int)cfg->criterion);
    if ((unsigned)cfg->scope >= SQ_PRUNE_NSCOPES)
        return sq_fail(ctx, SQ_ERR_ARG, "%s: unknown scope %d (tensor, row)", fn, (int)cfg->scope);
    return SQ_OK;
}

static void free_bsr_extra(void *p) { sq_bsr_free(p); }

/* dW (M,K) = dyᵀ · x̂ from the BSR the node holds as extra. */
static sq_status pruned_dw(sq_ctx *ctx, sq_node *node, sq_tensor *g, sq_tensor **dw)
{
    sq_bsr *m = node->extra;
    int64_t R = node->iarg[0], K = node->iarg[1], M = node->iarg[2];
    if (!m)
        return sq_fail(ctx, SQ_ERR_STATE, "linear_pruned: saved input was released before backward");
    sq_tensor *g2 = NULL;
    int64_t gs[2] = {R, M}, gst[2] = {M, 1}, ws[2] = {M, K};
    sq_status st;
    SQ_CHECK(sq_view_raw(ctx, g, 2, gs, gst, g->offset, &g2)); /* g is contiguous (...,M) */
    SQ_CHECK(sq_tensor_empty(ctx, g->dtype, 2, ws, dw));
    st = sq_bsr_dw(ctx, g2, m, *dw);
    if (st != SQ_OK) {
        sq_tensor_release(*dw);
        *dw = NULL;
    }
done:
    sq_tensor_release(g2);
    return st;
}

static sq_status linear_pruned_backward(sq_ctx *ctx, sq_node *node, sq_tensor *gout,
                                        sq_tensor **gin)
{
    return sq_linear_backward_with(ctx, node, gout, gin, pruned_dw);
}

sq_status sq_linear_pruned(sq_ctx *ctx, sq_tensor *x, sq_tensor *w, sq_tensor *b,
                           const sq_actprune_cfg *cfg, sq_tensor **y, sq_actprune_stats *stats)
{
    *y = NULL;
    if (stats) *stats = (sq_actprune_stats){0};
    SQ_TRY(sq_actprune_cfg_check(ctx, "linear_pruned", cfg));
    sq_tensor *out = NULL;
    sq_bsr *m = NULL;
    sq_status st;
    SQ_CHECK(sq_linear_record(ctx, "linear_pruned", linear_pruned_backward, x, w, b, &out));
    sq_node *n = out->grad_fn; /* out is new: a grad_fn is the node just recorded */
    if (n && n->need[1] && n->saved[0]) {
        sq_tensor *xs = n->saved[0]; /* x as (R,K), contiguous */
        double t0 = sq_proc_monotonic();
        SQ_CHECK(sq_bsr_prune_pack(ctx, xs, cfg->block, cfg->keep, cfg->criterion, cfg->scope,
                                   SQ_MEM_SAVED, &m));
        /* CSR (topk_unstructured) has a row-wise kernel and needs no transposed index */
        if (cfg->transpose_at_pack && m->b > 1) SQ_CHECK(sq_bsr_build_transpose(ctx, m, SQ_MEM_SAVED));
        double t1 = sq_proc_monotonic();
        if (stats) {
            int64_t R = xs->shape[0], K = xs->shape[1], bb = cfg->block;
            int unstructured = cfg->criterion == SQ_PRUNE_TOPK_UNSTRUCTURED;
            stats->pruned = 1;
            stats->kept_blocks = m->nnzb;
            stats->total_blocks = unstructured ? R * K : ((R + bb - 1) / bb) * ((K + bb - 1) / bb);
            stats->saved_bytes = sq_bsr_bytes(m);
            stats->value_bytes = sq_bsr_value_bytes(m);
            stats->dense_bytes = R * K * (int64_t)sq_dtype_size(xs->dtype);
            stats->compress_s = t1 - t0;
            stats->dw_flops = sq_bsr_dw_flops(m, w->shape[0]);
            stats->dense_dw_flops = 2.0 * (double)w->shape[0] * (double)R * (double)K;
        }
        /* The node lets go of the dense x; the BSR's buffers are SAVED tensors
         * of their own, so the extra is charged 0 bytes (no double count). */
        sq_node_replace_saved(n, 0, NULL);
        sq_node_set_extra(ctx, n, m, free_bsr_extra, 0);
        m = NULL;
    }
    *y = out;
    out = NULL;
done:
    sq_bsr_free(m);
    sq_tensor_release(out);
    return st;
}

sq_status sq_actprune_dw_error(sq_ctx *ctx, sq_tensor *x, sq_tensor *dy,
                               const sq_actprune_cfg *cfg, double *rel)
{
    *rel = NAN;
    SQ_TRY(sq_actprune_cfg_check(ctx, "actprune_dw_error", cfg));
    SQ_TRY(sq_need_float_cpu(ctx, "actprune_dw_error", "x", x));
    SQ_TRY(sq_need_float_cpu(ctx, "actprune_dw_error", "dy", dy));
    SQ_TRY(sq_need_same_dtype(ctx, "actprune_dw_error", x, dy));
    char s1[64], s2[64];
    int64_t K = x->ndim ? x->shape[x->ndim - 1] : 0, M = dy->ndim ? dy->shape[dy->ndim - 1] : 0;
    int64_t R = K ? sq_tensor_numel(x) / K : 0;
    if (x->ndim < 1 || dy->ndim < 1 || K == 0 || M == 0 || sq_tensor_numel(dy) != R * M)
        return sq_fail(ctx, SQ_ERR_SHAPE, "actprune_dw_error: x %s and dy %s do not have the same "
                       "leading elements (need ...xK and ...xM)", SQ_SHAPE(x, s1), SQ_SHAPE(dy, s2));
    sq_tensor *xc = NULL, *gc = NULL, *x2 = NULL, *g2 = NULL, *dw = NULL, *dwh = NULL;
    sq_bsr *m = NULL;
    sq_status st;
    int64_t xs[2] = {R, K}, xst[2] = {K, 1}, gs[2] = {R, M}, gst[2] = {M, 1}, ws[2] = {M, K};
    SQ_CHECK(sq_tensor_contiguous_raw(ctx, x, &xc));
    SQ_CHECK(sq_tensor_contiguous_raw(ctx, dy, &gc));
    SQ_CHECK(sq_view_raw(ctx, xc, 2, xs, xst, xc->offset, &x2));
    SQ_CHECK(sq_view_raw(ctx, gc, 2, gs, gst, gc->offset, &g2));
    SQ_CHECK(sq_tensor_empty(ctx, x->dtype, 2, ws, &dw));
    SQ_CHECK(sq_tensor_empty(ctx, x->dtype, 2, ws, &dwh));
    sq_cpu_gemm(&ctx->stats, x->dtype, 1, 0, M, K, R, 1.0, sq_tensor_data(g2), M, sq_tensor_data(x2),
                K, 0.0, sq_tensor_data(dw), K);
    SQ_CHECK(sq_bsr_prune_pack(ctx, x2, cfg->block, cfg->keep, cfg->criterion, cfg->scope,
                               SQ_MEM_WORKSPACE, &m));
    SQ_CHECK(sq_bsr_dw(ctx, g2, m, dwh));
    double num = 0, den = 0;
    for (int64_t i = 0; i < M * K; i++) {
        double a = x->dtype == SQ_F32 ? ((const float *)sq_tensor_data(dw))[i]
                                      : ((const double *)sq_tensor_data(dw))[i];
        double h = x->dtype == SQ_F32 ? ((const float *)sq_tensor_data(dwh))[i]
                                      : ((const double *)sq_tensor_data(dwh))[i];
        num += (a - h) * (a - h);
        den += a * a;
    }
    *rel = den > 0 ? sqrt(num / den) : (num > 0 ? INFINITY : 0.0);
done:
    sq_bsr_free(m);
    sq_tensor_release(xc);
    sq_tensor_release(gc);
    sq_tensor_release(x2);
    sq_tensor_release(g2);
    sq_tensor_release(dw);
    sq_tensor_release(dwh);
    return st;
}
