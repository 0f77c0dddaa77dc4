/* ops_linalg.c — matmul (2-d and batched) and linear, with explicit skipping
 * of gradients nobody needs (frozen weights skip their GEMM). */
#include "sq_ops_internal.h"

#include <math.h>
#include <string.h>

/* ---- matmul ------------------------------------------------------------- */
/* a (B?,M,K) contiguous, b (B?,K,N) or (K,N) contiguous, c (B?,M,N); on the
 * GPU one strided-batched cuBLAS call */
static sq_status bmm(sq_ctx *ctx, sq_device dev, sq_dtype dt, int ta, int tb, int64_t batch,
                     int64_t M, int64_t N, int64_t K, double alpha, const void *a, int64_t sa,
                     int64_t lda, const void *b, int64_t sb, int64_t ldb, void *c, double beta)
{
    if (dev == SQ_CUDA)
        return sq_cuda_gemm_batched(ctx, dt, ta, tb, batch, M, N, K, alpha, a, lda, sa, b, ldb, sb,
                                    beta, c, N, M * N);
    size_t es = sq_dtype_size(dt);
    for (int64_t i = 0; i < batch; i++)
        sq_cpu_gemm(&ctx->stats, dt, ta, tb, M, N, K, alpha, (const char *)a + i * sa * es, lda,
                    (const char *)b + i * sb * es, ldb, beta, (char *)c + i * M * N * es, N);
    return SQ_OK;
}

static sq_status matmul_backward(sq_ctx *ctx, sq_node *node, sq_tensor *gout, sq_tensor **gin)
{
    sq_tensor *a = node->saved[0], *b = node->saved[1], *g = NULL;
    sq_status st = sq_tensor_contiguous_raw(ctx, gout, &g);
    if (st != SQ_OK) return st;
    int batched = (int)node->iarg[0], b2d = (int)node->iarg[1];
    int64_t B = node->iarg[2], M = node->iarg[3], K = node->iarg[4], N = node->iarg[5];
    double alpha = node->darg[0];
    sq_dtype dt = g->dtype;
    sq_device dev = sq_tensor_device(g);
    if (node->need[0] && node->iarg[6]) { /* B saved as its transpose c (N,K): dA = dC c */
        int64_t sh[3] = {B, M, K};
        SQ_CHECK(sq_new_on(ctx, g, dt, batched ? 3 : 2, batched ? sh : sh + 1, &gin[0]));
        SQ_CHECK(bmm(ctx, dev, dt, 0, 0, B, M, K, N, alpha, sq_tensor_data(g), M * N, N, sq_tensor_data(b),
                     b2d ? 0 : K * N, K, sq_tensor_data(gin[0]), 0.0));
    } else if (node->need[0]) { /* dA = dC B^T : (B,M,N)(K,N)^T */
        int64_t sh[3] = {B, M, K};
        SQ_CHECK(sq_new_on(ctx, g, dt, batched ? 3 : 2, batched ? sh : sh + 1, &gin[0]));
        SQ_CHECK(bmm(ctx, dev, dt, 0, 1, B, M, K, N, alpha, sq_tensor_data(g), M * N, N, sq_tensor_data(b),
                     b2d ? 0 : K * N, N, sq_tensor_data(gin[0]), 0.0));
    }
    if (node->need[1]) { /* dB = A^T dC, summed over the batch when B is shared */
        int64_t sh[3] = {B, K, N};
        if (b2d) {
            SQ_CHECK(sq_new_on(ctx, g, dt, 2, sh + 1, &gin[1]));
            /* (B*M,K)^T (B*M,N) in one GEMM */
            SQ_CHECK(sq_gemm_on(ctx, dev, dt, 1, 0, K, N, B * M, alpha, sq_tensor_data(a), K,
                                sq_tensor_data(g), N, 0.0, sq_tensor_data(gin[1]), N));
        } else {
            SQ_CHECK(sq_new_on(ctx, g, dt, batched ? 3 : 2, batched ? sh : sh + 1, &gin[1]));
            SQ_CHECK(bmm(ctx, dev, dt, 1, 0, B, K, N, M, alpha, sq_tensor_data(a), M * K, K, sq_tensor_data(g),
                         M * N, N, sq_tensor_data(gin[1]), 0.0));
        }
    }
done:
    sq_tensor_release(g);
    return st;
}

sq_status sq_matmul(sq_ctx *ctx, sq_tensor *a, sq_tensor *b, sq_tensor **out)
{
    return sq_matmul_scaled(ctx, a, b, 1.0, out);
}

sq_status sq_matmul_scaled(sq_ctx *ctx, sq_tensor *a, sq_tensor *b, double alpha, sq_tensor **out)
{
    *out = NULL;
    if (!isfinite(alpha)) return sq_fail(ctx, SQ_ERR_ARG, "matmul: scale %g must be finite", alpha);
    SQ_TRY(sq_need_float(ctx, "matmul", "argument #1", a));
    SQ_TRY(sq_need_float(ctx, "matmul", "argument #2", b));
    SQ_TRY(sq_need_same_dtype(ctx, "matmul", a, b));
    SQ_TRY(sq_need_same_device(ctx, "matmul", "argument #1", a, "argument #2", b));
    char x[64], y[64];
    int ok = (a->ndim == 2 && b->ndim == 2) || (a->ndim == 3 && (b->ndim == 3 || b->ndim == 2));
    if (!ok)
        return sq_fail(ctx, SQ_ERR_SHAPE, "matmul: shapes %s and %s: need 2-d @ 2-d, 3-d @ 3-d or 3-d @ 2-d",
                       SQ_SHAPE(a, x), SQ_SHAPE(b, y));
    int batched = a->ndim == 3, b2d = b->ndim == 2;
    int64_t B = batched ? a->shape[0] : 1;
    int64_t M = a->shape[a->ndim - 2], K = a->shape[a->ndim - 1];
    int64_t Kb = b->shape[b->ndim - 2], N = b->shape[b->ndim - 1];
    if (K != Kb || (batched && !b2d && b->shape[0] != B))
        return sq_fail(ctx, SQ_ERR_SHAPE, "matmul: shapes %s and %s do not match", SQ_SHAPE(a, x),
                       SQ_SHAPE(b, y));
    sq_tensor *ac = NULL, *bc = NULL, *c = NULL;
    sq_status st;
    /* b the transpose of a contiguous (..,N,K) buffer c (q @ k^T): the GEMM
     * reads c transposed in place instead of copying b */
    int nb = b->ndim;
    int bt = !sq_tensor_is_contiguous(b) && b->stride[nb - 2] == 1 && b->stride[nb - 1] == K &&
             (b2d || b->stride[0] == K * N);
    SQ_CHECK(sq_tensor_contiguous_raw(ctx, a, &ac));
    if (bt) {
        sq_tensor_retain(b);
        bc = b;
    } else {
        SQ_CHECK(sq_tensor_contiguous_raw(ctx, b, &bc));
    }
    int64_t sh[3] = {B, M, N};
    SQ_CHECK(sq_new_on(ctx, a, a->dtype, batched ? 3 : 2, batched ? sh : sh + 1, &c));
    SQ_CHECK(bmm(ctx, sq_tensor_device(a), a->dtype, 0, bt, B, M, N, K, alpha, sq_tensor_data(ac), M * K, K,
                 sq_tensor_data(bc), b2d ? 0 : K * N, bt ? K : N, sq_tensor_data(c), 0.0));
    sq_tensor *ins[2] = {a, b};
    if (sq_ag_needs_grad(ctx, 2, ins)) {
        sq_node *n;
        SQ_CHECK(sq_ag_attach(ctx, c, "matmul", matmul_backward, 2, ins, &n));
        /* dA needs B, dB needs A: save only what a needed gradient uses */
        sq_node_save(n, n->need[1] ? ac : NULL);
        sq_node_save(n, n->need[0] ? bc : NULL);
        n->iarg[0] = batched;
        n->iarg[1] = b2d;
        n->iarg[2] = B;
        n->iarg[3] = M;
        n->iarg[4] = K;
        n->iarg[5] = N;
        n->iarg[6] = bt; /* saved b is c = b^T, contiguous (..,N,K) */
        n->darg[0] = alpha;
    }
    *out = c;
    c = NULL;
done:
    sq_tensor_release(ac);
    sq_tensor_release(bc);
    sq_tensor_release(c);
    return st;
}

/* ---- linear --------------------------------------------------------------- */
/* saved[0] = x as (R,K) contiguous (the slot a compression method may swap),
 * saved[1] = W (M,K) contiguous. iarg: R, K, M, has_bias, x ndim, x shape... */
static sq_status linear_dw_dense(sq_ctx *ctx, sq_node *node, sq_tensor *g, sq_tensor **dw)
{
    /* dW = dy^T x : (M,R)(R,K) — the only consumer of saved x */
    sq_tensor *x = node->saved[0];
    int64_t R = node->iarg[0], K = node->iarg[1], M = node->iarg[2];
    if (!x) return sq_fail(ctx, SQ_ERR_STATE, "linear: saved input was released before backward");
    int64_t sh[2] = {M, K};
    SQ_TRY(sq_new_on(ctx, g, g->dtype, 2, sh, dw));
    return sq_gemm_on(ctx, sq_tensor_device(g), g->dtype, 1, 0, M, K, R, 1.0, sq_tensor_data(g), M,
                      sq_tensor_data(x), K, 0.0, sq_tensor_data(*dw), K);
}

sq_status sq_linear_backward_with(sq_ctx *ctx, sq_node *node, sq_tensor *gout, sq_tensor **gin,
                                  sq_linear_dw_fn dw)
{
    sq_tensor *w = node->saved[1], *g = NULL;
    int64_t R = node->iarg[0], K = node->iarg[1], M = node->iarg[2];
    sq_status st = sq_tensor_contiguous_raw(ctx, gout, &g);
    if (st != SQ_OK) return st;
    sq_dtype dt = g->dtype;
    sq_device dev = sq_tensor_device(g);
    if (node->need[0]) { /* dx = dy W : (R,M)(M,K) — exact, never uses x */
        int nd = node->out_ndim;
        int64_t sh[SQ_MAX_DIMS];
        memcpy(sh, node->out_shape, sizeof sh);
        sh[nd - 1] = K;
        SQ_CHECK(sq_new_on(ctx, g, dt, nd, sh, &gin[0]));
        SQ_CHECK(sq_gemm_on(ctx, dev, dt, 0, 0, R, K, M, 1.0, sq_tensor_data(g), M, sq_tensor_data(w), K,
                            0.0, sq_tensor_data(gin[0]), K));
    }
    if (node->need[1]) {
        SQ_CHECK(dw(ctx, node, g, &gin[1]));
        ctx->stats.weight_grad_gemms++;
    }
    if (node->n_in > 2 && node->need[2] && dev == SQ_CUDA) { /* db = column sums of dy */
        int64_t sh[1] = {M}, xs[3] = {R * M, M, 1};
        SQ_CHECK(sq_new_on(ctx, g, dt, 1, sh, &gin[2]));
        SQ_CHECK(sq_cuda_reduce_dim(ctx, SQ_CUDA_RED_SUM, dt, sq_tensor_data(gin[2]), NULL,
                                    sq_tensor_data(g), 1, R, M, xs));
    } else if (node->n_in > 2 && node->need[2]) { /* db = column sums of dy */
        int64_t sh[1] = {M};
        SQ_CHECK(sq_tensor_zeros(ctx, dt, 1, sh, &gin[2]));
        if (dt == SQ_F32) {
            const float *gp = sq_tensor_data(g);
            float *bp = sq_tensor_data(gin[2]);
            for (int64_t r = 0; r < R; r++)
                for (int64_t m = 0; m < M; m++) bp[m] += gp[r * M + m];
        } else {
            const double *gp = sq_tensor_data(g);
            double *bp = sq_tensor_data(gin[2]);
            for (int64_t r = 0; r < R; r++)
                for (int64_t m = 0; m < M; m++) bp[m] += gp[r * M + m];
        }
    }
done:
    sq_tensor_release(g);
    return st;
}

static sq_status linear_backward(sq_ctx *ctx, sq_node *node, sq_tensor *gout, sq_tensor **gin)
{
    return sq_linear_backward_with(ctx, node, gout, gin, linear_dw_dense);
}

sq_status sq_linear_record(sq_ctx *ctx, const char *name, sq_backward_fn bw, sq_tensor *x,
                           sq_tensor *w, sq_tensor *b, sq_tensor **out)
{
    *out = NULL;
    char s1[64], s2[64];
    SQ_TRY(sq_need_float(ctx, name, "input", x));
    SQ_TRY(sq_need_float(ctx, name, "weight", w));
    SQ_TRY(sq_need_same_dtype(ctx, name, x, w));
    if (x->ndim < 1 || w->ndim != 2 || x->shape[x->ndim - 1] != w->shape[1])
        return sq_fail(ctx, SQ_ERR_SHAPE, "%s: input %s does not match weight %s (need ...xK and MxK)",
                       name, SQ_SHAPE(x, s1), SQ_SHAPE(w, s2));
    int64_t M = w->shape[0], K = w->shape[1], R = sq_tensor_numel(x) / (K ? K : 1);
    SQ_TRY(sq_need_same_device(ctx, name, "input", x, "weight", w));
    if (b) {
        SQ_TRY(sq_need_float(ctx, name, "bias", b));
        SQ_TRY(sq_need_same_dtype(ctx, name, x, b));
        SQ_TRY(sq_need_same_device(ctx, name, "input", x, "bias", b));
        if (b->ndim != 1 || b->shape[0] != M)
            return sq_fail(ctx, SQ_ERR_SHAPE, "%s: bias %s does not match weight %s (need %lld)",
                           name, SQ_SHAPE(b, s1), SQ_SHAPE(w, s2), (long long)M);
    }
    sq_tensor *xc = NULL, *wc = NULL, *bc = NULL, *y = NULL, *x2 = NULL;
    sq_status st;
    SQ_CHECK(sq_tensor_contiguous_raw(ctx, x, &xc));
    SQ_CHECK(sq_tensor_contiguous_raw(ctx, w, &wc));
    int64_t sh[SQ_MAX_DIMS];
    memcpy(sh, x->shape, sizeof sh);
    sh[x->ndim - 1] = M;
    SQ_CHECK(sq_new_on(ctx, x, x->dtype, x->ndim, sh, &y));
    if (b) SQ_CHECK(sq_tensor_contiguous_raw(ctx, b, &bc));
    if (sq_on_cuda(x)) { /* the bias goes in the GEMM's epilogue */
        SQ_CHECK(sq_cuda_linear(ctx, x->dtype, sq_tensor_data(y), sq_tensor_data(xc), sq_tensor_data(wc),
                                bc ? sq_tensor_data(bc) : NULL, R, K, M));
    } else {
        double beta = 0.0;
        if (b) { /* broadcast the bias into y, then GEMM accumulates onto it */
            size_t es = sq_dtype_size(x->dtype);
            for (int64_t r = 0; r < R; r++)
                memcpy((char *)sq_tensor_data(y) + r * M * es, sq_tensor_data(bc), (size_t)M * es);
            beta = 1.0;
        }
        sq_cpu_gemm(&ctx->stats, x->dtype, 0, 1, R, M, K, 1.0, sq_tensor_data(xc), K, sq_tensor_data(wc),
                    K, beta, sq_tensor_data(y), M);
    }
    sq_tensor *ins[3] = {x, w, b};
    if (sq_ag_needs_grad(ctx, b ? 3 : 2, ins)) {
        sq_node *n;
        SQ_CHECK(sq_ag_attach(ctx, y, name, bw, b ? 3 : 2, ins, &n));
        int64_t xs[2] = {R, K}, st2[2] = {K, 1};
        SQ_CHECK(sq_view_raw(ctx, xc, 2, xs, st2, xc->offset, &x2));
        sq_node_save(n, n->need[1] ? x2 : NULL); /* x only feeds dW */
        sq_node_save(n, n->need[0] ? wc : NULL); /* W only feeds dx */
        n->iarg[0] = R;
        n->iarg[1] = K;
        n->iarg[2] = M;
    }
    *out = y;
    y = NULL;
done:
    sq_tensor_release(xc);
    sq_tensor_release(wc);
    sq_tensor_release(bc);
    sq_tensor_release(x2);
    sq_tensor_release(y);
    return st;
}

sq_status sq_linear(sq_ctx *ctx, sq_tensor *x, sq_tensor *w, sq_tensor *b, sq_tensor **out)
{
    return sq_linear_record(ctx, "linear", linear_backward, x, w, b, out);
}
