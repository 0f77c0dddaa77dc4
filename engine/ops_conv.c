/* ops_conv.c — 2-d convolution (im2col + GEMM per image) and max / average
 * pooling, all NCHW.
 *
 * Convolution backward issues its dW GEMMs (one per image, each counted in
 * ctx->stats.weight_grad_gemms) only when the weight needs a gradient, so a
 * frozen weight costs neither the GEMMs nor the im2col that feeds them, and
 * the input is saved only when dW needs it.  im2col buffers are WORKSPACE
 * tensors that live for one call. */
#include "sq_ops_internal.h"

#include <math.h>
#include <string.h>

/* Output size of a window sweep; the caller checked size + 2*pad >= k. */
static int64_t out_size(int64_t size, int k, int stride, int pad)
{
    return (size + 2 * (int64_t)pad - k) / stride + 1;
}

/* ---- conv2d ------------------------------------------------------------------ */

/* Geometry of one call: x (N,C,H,W), w (O,C,kh,kw), y (N,O,Ho,Wo). */
typedef struct {
    int64_t N, C, H, W, O, Ho, Wo;
    int kh, kw, stride, pad;
} conv_geom;

/* A 1x1, stride-1, unpadded convolution's im2col is the image itself. */
static int conv_is_pointwise(const conv_geom *g)
{
    return g->kh == 1 && g->kw == 1 && g->stride == 1 && g->pad == 0;
}

/* The (C*kh*kw, Ho*Wo) columns of image n: either `ws` filled by im2col, or
 * the image itself for a pointwise convolution. */
static const void *conv_cols(const conv_geom *g, sq_dtype dt, const void *x, int64_t n, void *ws)
{
    size_t es = sq_dtype_size(dt);
    const char *xn = (const char *)x + (size_t)(n * g->C * g->H * g->W) * es;
    if (conv_is_pointwise(g)) return xn;
    sq_cpu_im2col(dt, ws, xn, g->C, g->H, g->W, g->kh, g->kw, g->stride, g->pad, g->Ho, g->Wo);
    return ws;
}

static sq_status conv_workspace(sq_ctx *ctx, sq_device dev, const conv_geom *g, sq_dtype dt,
                                sq_tensor **ws)
{
    *ws = NULL;
    if (conv_is_pointwise(g)) return SQ_OK;
    int64_t sh[2] = {g->C * g->kh * g->kw, g->Ho * g->Wo};
    return sq_tensor_empty_dev(ctx, dev, dt, 2, sh, SQ_MEM_WORKSPACE, ws);
}

static void *ws_data(sq_tensor *ws) { return ws ? sq_tensor_data(ws) : NULL; }

/* db[o] = sum over n and positions of g (N,O,P) */
static void conv_bias_grad(sq_dtype dt, void *db, const void *g, int64_t N, int64_t O, int64_t P)
{
    for (int64_t o = 0; o < O; o++) {
        double s = 0;
        for (int64_t n = 0; n < N; n++) {
            int64_t base = (n * O + o) * P;
            if (dt == SQ_F32) {
                const float *gp = (const float *)g + base;
                for (int64_t p = 0; p < P; p++) s += gp[p];
            } else {
                const double *gp = (const double *)g + base;
                for (int64_t p = 0; p < P; p++) s += gp[p];
            }
        }
        if (dt == SQ_F32) ((float *)db)[o] = (float)s;
        else ((double *)db)[o] = s;
    }
}

/* ---- the GPU path: same structure, kernels from kernels/cuda ---------------------- */

/* y (N,O,P) = W (O,K) cols_n (K,P) [+ b], one GEMM per image; the bias is
 * broadcast into y first and the GEMM accumulates onto it. */
static sq_status conv_fwd_cuda(sq_ctx *ctx, const conv_geom *g, sq_dtype dt, const void *x,
                               const void *w, const void *b, void *y, void *ws)
{
    int64_t K = g->C * g->kh * g->kw, P = g->Ho * g->Wo;
    size_t es = sq_dtype_size(dt);
    double beta = 0.0;
    if (b) {
        int64_t sh[3] = {g->N, g->O, P}, bs[3] = {0, 1, 0};
        SQ_TRY(sq_cuda_copy_strided(ctx, dt, y, NULL, b, bs, 3, sh));
        beta = 1.0;
    }
    for (int64_t n = 0; n < g->N; n++) {
        const char *xn = (const char *)x + (size_t)(n * g->C * g->H * g->W) * es;
        const void *cols = xn;
        if (!conv_is_pointwise(g)) {
            SQ_TRY(sq_cuda_im2col(ctx, dt, ws, xn, 1, g->C, g->H, g->W, g->kh, g->kw, g->stride, g->pad,
                                  g->Ho, g->Wo));
            cols = ws;
        }
        SQ_TRY(sq_cuda_gemm(ctx, dt, 0, 0, g->O, P, K, 1.0, w, K, cols, P, beta,
                            (char *)y + (size_t)(n * g->O * P) * es, P));
    }
    return SQ_OK;
}

/* dx (zeroed by the caller) += col2im(W^T g_n); dW (zeroed) += g_n cols_n^T;
 * db = sums of g over images and positions.  Any output may be NULL. */
static sq_status conv_bwd_cuda(sq_ctx *ctx, const conv_geom *g, sq_dtype dt, const void *gy,
                               const void *x, const void *w, void *dx, void *dw, void *db, void *ws)
{
    int64_t K = g->C * g->kh * g->kw, P = g->Ho * g->Wo;
    size_t es = sq_dtype_size(dt);
    for (int64_t n = 0; n < g->N; n++) {
        const char *gn = (const char *)gy + (size_t)(n * g->O * P) * es;
        if (dx) {
            char *dxn = (char *)dx + (size_t)(n * g->C * g->H * g->W) * es;
            void *dc = ws ? ws : dxn; /* pointwise: dx_n is dcols */
            SQ_TRY(sq_cuda_gemm(ctx, dt, 1, 0, K, P, g->O, 1.0, w, K, gn, P, 0.0, dc, P));
            if (ws)
                SQ_TRY(sq_cuda_col2im(ctx, dt, dxn, dc, 1, g->C, g->H, g->W, g->kh, g->kw, g->stride,
                                      g->pad, g->Ho, g->Wo));
        }
        if (dw) {
            const char *xn = (const char *)x + (size_t)(n * g->C * g->H * g->W) * es;
            const void *cols = xn;
            if (ws) {
                SQ_TRY(sq_cuda_im2col(ctx, dt, ws, xn, 1, g->C, g->H, g->W, g->kh, g->kw, g->stride,
                                      g->pad, g->Ho, g->Wo));
                cols = ws;
            }
            SQ_TRY(sq_cuda_gemm(ctx, dt, 0, 1, g->O, K, P, 1.0, gn, P, cols, P, 1.0, dw, K));
            ctx->stats.weight_grad_gemms++;
        }
    }
    if (db) { /* (N,O,P) -> (N,O) over positions, then (O) over images */
        sq_tensor *t = NULL;
        int64_t sh[2] = {g->N, g->O}, xs1[3] = {P, 1, 1}, xs2[3] = {g->N * g->O, g->O, 1};
        SQ_TRY(sq_tensor_empty_dev(ctx, SQ_CUDA, dt, 2, sh, SQ_MEM_WORKSPACE, &t));
        sq_status st = sq_cuda_reduce_dim(ctx, SQ_CUDA_RED_SUM, dt, sq_tensor_data(t), NULL, gy,
                                          g->N * g->O, P, 1, xs1);
        if (st == SQ_OK)
            st = sq_cuda_reduce_dim(ctx, SQ_CUDA_RED_SUM, dt, db, NULL, sq_tensor_data(t), 1, g->N, g->O,
                                    xs2);
        sq_tensor_release(t);
        return st;
    }
    return SQ_OK;
}

static conv_geom geom_from_node(const sq_node *node)
{
    conv_geom g;
    g.N = node->in_shape[0][0];
    g.C = node->in_shape[0][1];
    g.H = node->in_shape[0][2];
    g.W = node->in_shape[0][3];
    g.O = node->in_shape[1][0];
    g.kh = (int)node->in_shape[1][2];
    g.kw = (int)node->in_shape[1][3];
    g.Ho = node->out_shape[2];
    g.Wo = node->out_shape[3];
    g.stride = (int)node->iarg[0];
    g.pad = (int)node->iarg[1];
    return g;
}

/* saved[0] = x contiguous (dW only), saved[1] = w contiguous (dx only);
 * iarg: stride, pad; shapes from the node's recorded input/output shapes. */
static sq_status conv2d_backward(sq_ctx *ctx, sq_node *node, sq_tensor *gout, sq_tensor **gin)
{
    conv_geom G = geom_from_node(node);
    sq_tensor *x = node->saved[0], *w = node->saved[1], *g = NULL, *ws = NULL;
    int64_t K = G.C * G.kh * G.kw, P = G.Ho * G.Wo;
    sq_status st;
    SQ_CHECK(sq_tensor_contiguous_raw(ctx, gout, &g));
    sq_dtype dt = g->dtype;
    size_t es = sq_dtype_size(dt);
    const char *gp = sq_tensor_data(g);
    if (node->need[0] || node->need[1]) SQ_CHECK(conv_workspace(ctx, sq_tensor_device(g), &G, dt, &ws));
    if (sq_on_cuda(g)) {
        int want_db = node->n_in > 2 && node->need[2];
        if (node->need[1] && !x) {
            st = sq_fail(ctx, SQ_ERR_STATE, "conv2d: saved input was released before backward");
            goto done;
        }
        if (node->need[0]) SQ_CHECK(sq_zeros_on(ctx, g, dt, 4, node->in_shape[0], &gin[0]));
        if (node->need[1]) SQ_CHECK(sq_zeros_on(ctx, g, dt, 4, node->in_shape[1], &gin[1]));
        if (want_db) SQ_CHECK(sq_new_on(ctx, g, dt, 1, &G.O, &gin[2]));
        SQ_CHECK(conv_bwd_cuda(ctx, &G, dt, gp, x ? sq_tensor_data(x) : NULL, w ? sq_tensor_data(w) : NULL,
                               node->need[0] ? sq_tensor_data(gin[0]) : NULL,
                               node->need[1] ? sq_tensor_data(gin[1]) : NULL,
                               want_db ? sq_tensor_data(gin[2]) : NULL, ws_data(ws)));
        goto done;
    }
    if (node->need[0]) { /* dcols = W^T g_n : (K,O)(O,P), then col2im */
        SQ_CHECK(sq_tensor_zeros(ctx, dt, 4, node->in_shape[0], &gin[0]));
        char *dx = sq_tensor_data(gin[0]);
        for (int64_t n = 0; n < G.N; n++) {
            char *dxn = dx + (size_t)(n * G.C * G.H * G.W) * es;
            void *dc = ws ? sq_tensor_data(ws) : dxn; /* pointwise: dx_n is dcols */
            sq_cpu_gemm(&ctx->stats, dt, 1, 0, K, P, G.O, 1.0, sq_tensor_data(w), K,
                        gp + (size_t)(n * G.O * P) * es, P, 0.0, dc, P);
            if (ws)
                sq_cpu_col2im(dt, dxn, dc, G.C, G.H, G.W, G.kh, G.kw, G.stride, G.pad, G.Ho, G.Wo);
        }
    }
    if (node->need[1]) { /* dW += g_n cols_n^T : (O,P)(P,K), one counted GEMM per image */
        if (!x) {
            st = sq_fail(ctx, SQ_ERR_STATE, "conv2d: saved input was released before backward");
            goto done;
        }
        SQ_CHECK(sq_tensor_zeros(ctx, dt, 4, node->in_shape[1], &gin[1]));
        for (int64_t n = 0; n < G.N; n++) {
            const void *cols = conv_cols(&G, dt, sq_tensor_data(x), n, ws_data(ws));
            sq_cpu_gemm(&ctx->stats, dt, 0, 1, G.O, K, P, 1.0, gp + (size_t)(n * G.O * P) * es, P,
                        cols, P, 1.0, sq_tensor_data(gin[1]), K);
            ctx->stats.weight_grad_gemms++;
        }
    }
    if (node->n_in > 2 && node->need[2]) {
        SQ_CHECK(sq_tensor_empty(ctx, dt, 1, &G.O, &gin[2]));
        conv_bias_grad(dt, sq_tensor_data(gin[2]), gp, G.N, G.O, P);
    }
done:
    sq_tensor_release(ws);
    sq_tensor_release(g);
    return st;
}

sq_status sq_conv2d(sq_ctx *ctx, sq_tensor *x, sq_tensor *w, sq_tensor *b, int stride, int pad,
                    sq_tensor **out)
{
    *out = NULL;
    char s1[64], s2[64];
    SQ_TRY(sq_need_float(ctx, "conv2d", "input", x));
    SQ_TRY(sq_need_float(ctx, "conv2d", "weight", w));
    SQ_TRY(sq_need_same_dtype(ctx, "conv2d", x, w));
    SQ_TRY(sq_need_same_device(ctx, "conv2d", "input", x, "weight", w));
    if (x->ndim != 4 || w->ndim != 4)
        return sq_fail(ctx, SQ_ERR_SHAPE, "conv2d: input %s and weight %s must be 4-d (NxCxHxW, OxCxkhxkw)",
                       SQ_SHAPE(x, s1), SQ_SHAPE(w, s2));
    if (w->shape[1] != x->shape[1])
        return sq_fail(ctx, SQ_ERR_SHAPE, "conv2d: input %s has %lld channels, weight %s expects %lld",
                       SQ_SHAPE(x, s1), (long long)x->shape[1], SQ_SHAPE(w, s2), (long long)w->shape[1]);
    for (int i = 0; i < 4; i++)
        if (w->shape[i] < 1)
            return sq_fail(ctx, SQ_ERR_SHAPE, "conv2d: weight %s has an empty dim", SQ_SHAPE(w, s1));
    if (w->shape[2] > 1 << 20 || w->shape[3] > 1 << 20)
        return sq_fail(ctx, SQ_ERR_SHAPE, "conv2d: kernel of weight %s is too large", SQ_SHAPE(w, s1));
    if (stride < 1) return sq_fail(ctx, SQ_ERR_ARG, "conv2d: stride %d must be >= 1", stride);
    if (pad < 0) return sq_fail(ctx, SQ_ERR_ARG, "conv2d: pad %d must be >= 0", pad);
    if (x->shape[2] + 2 * (int64_t)pad < w->shape[2] || x->shape[3] + 2 * (int64_t)pad < w->shape[3])
        return sq_fail(ctx, SQ_ERR_SHAPE, "conv2d: kernel %lldx%lld larger than input %s padded by %d",
                       (long long)w->shape[2], (long long)w->shape[3], SQ_SHAPE(x, s1), pad);
    if (b) {
        SQ_TRY(sq_need_float(ctx, "conv2d", "bias", b));
        SQ_TRY(sq_need_same_dtype(ctx, "conv2d", x, b));
        SQ_TRY(sq_need_same_device(ctx, "conv2d", "input", x, "bias", b));
        if (b->ndim != 1 || b->shape[0] != w->shape[0])
            return sq_fail(ctx, SQ_ERR_SHAPE, "conv2d: bias %s does not match weight %s (need %lld)",
                           SQ_SHAPE(b, s1), SQ_SHAPE(w, s2), (long long)w->shape[0]);
    }
    conv_geom G = {x->shape[0], x->shape[1], x->shape[2], x->shape[3], w->shape[0], 0, 0,
                   (int)w->shape[2], (int)w->shape[3], stride, pad};
    G.Ho = out_size(G.H, G.kh, stride, pad);
    G.Wo = out_size(G.W, G.kw, stride, pad);
    int64_t K = G.C * G.kh * G.kw, P = G.Ho * G.Wo;
    sq_dtype dt = x->dtype;
    size_t es = sq_dtype_size(dt);
    sq_tensor *xc = NULL, *wc = NULL, *bc = NULL, *y = NULL, *ws = NULL;
    sq_status st;
    SQ_CHECK(sq_tensor_contiguous_raw(ctx, x, &xc));
    SQ_CHECK(sq_tensor_contiguous_raw(ctx, w, &wc));
    if (b) SQ_CHECK(sq_tensor_contiguous_raw(ctx, b, &bc));
    SQ_CHECK(sq_new_on(ctx, x, dt, 4, (int64_t[]){G.N, G.O, G.Ho, G.Wo}, &y));
    SQ_CHECK(conv_workspace(ctx, sq_tensor_device(x), &G, dt, &ws));
    if (sq_on_cuda(x))
        SQ_CHECK(conv_fwd_cuda(ctx, &G, dt, sq_tensor_data(xc), sq_tensor_data(wc), bc ? sq_tensor_data(bc) : NULL,
                               sq_tensor_data(y), ws_data(ws)));
    for (int64_t n = 0; n < G.N && !sq_on_cuda(x); n++) { /* y_n (O,P) = W (O,K) cols_n (K,P) [+ b] */
        char *yn = (char *)sq_tensor_data(y) + (size_t)(n * G.O * P) * es;
        double beta = 0.0;
        if (bc) { /* broadcast the bias into y_n; the GEMM accumulates onto it */
            for (int64_t o = 0; o < G.O; o++) {
                if (dt == SQ_F32) {
                    float v = ((const float *)sq_tensor_data(bc))[o], *r = (float *)yn + o * P;
                    for (int64_t p = 0; p < P; p++) r[p] = v;
                } else {
                    double v = ((const double *)sq_tensor_data(bc))[o], *r = (double *)yn + o * P;
                    for (int64_t p = 0; p < P; p++) r[p] = v;
                }
            }
            beta = 1.0;
        }
        const void *cols = conv_cols(&G, dt, sq_tensor_data(xc), n, ws_data(ws));
        sq_cpu_gemm(&ctx->stats, dt, 0, 0, G.O, P, K, 1.0, sq_tensor_data(wc), K, cols, P, beta, yn, P);
    }
    sq_tensor_release(ws);
    ws = NULL;
    sq_tensor *ins[3] = {x, w, b};
    int n_in = b ? 3 : 2;
    if (sq_ag_needs_grad(ctx, n_in, ins)) {
        sq_node *node;
        SQ_CHECK(sq_ag_attach(ctx, y, "conv2d", conv2d_backward, n_in, ins, &node));
        sq_node_save(node, node->need[1] ? xc : NULL); /* x only feeds dW */
        sq_node_save(node, node->need[0] ? wc : NULL); /* W only feeds dx */
        node->iarg[0] = stride;
        node->iarg[1] = pad;
    }
    *out = y;
    y = NULL;
done:
    sq_tensor_release(ws);
    sq_tensor_release(xc);
    sq_tensor_release(wc);
    sq_tensor_release(bc);
    sq_tensor_release(y);
    return st;
}

/* ---- pooling ------------------------------------------------------------------ */

/* Preconditions shared by both pools; fills Ho, Wo. */
static sq_status pool_check(sq_ctx *ctx, const char *op, sq_tensor *x, int k, int stride, int pad,
                            int64_t *Ho, int64_t *Wo)
{
    char s1[64];
    SQ_TRY(sq_need_float(ctx, op, "input", x));
    if (x->ndim != 4)
        return sq_fail(ctx, SQ_ERR_SHAPE, "%s: input %s must be 4-d (NxCxHxW)", op, SQ_SHAPE(x, s1));
    if (k < 1) return sq_fail(ctx, SQ_ERR_ARG, "%s: kernel %d must be >= 1", op, k);
    if (stride < 1) return sq_fail(ctx, SQ_ERR_ARG, "%s: stride %d must be >= 1", op, stride);
    /* pad <= k/2 keeps a real element in every window (as torch requires) */
    if (pad < 0 || pad > k / 2)
        return sq_fail(ctx, SQ_ERR_ARG, "%s: pad %d outside [0, kernel/2 = %d]", op, pad, k / 2);
    if (x->shape[2] < 1 || x->shape[3] < 1 || x->shape[2] + 2 * (int64_t)pad < k ||
        x->shape[3] + 2 * (int64_t)pad < k)
        return sq_fail(ctx, SQ_ERR_SHAPE, "%s: kernel %d larger than input %s padded by %d", op, k,
                       SQ_SHAPE(x, s1), pad);
    *Ho = out_size(x->shape[2], k, stride, pad);
    *Wo = out_size(x->shape[3], k, stride, pad);
    return SQ_OK;
}

/* Max over each window of planes x (NC,H,W) -> y (NC,Ho,Wo); the first
 * maximum's flat position y*W+x in its plane goes to idx when not NULL. */
#define DEF_MAXPOOL_FWD(T, S)                                                                 \
    static void maxpool_fwd_##S(T *restrict y, int64_t *restrict idx, const T *restrict x,    \
                                int64_t NC, int64_t H, int64_t W, int64_t Ho, int64_t Wo,     \
                                int k, int stride, int pad)                                   \
    {                                                                                         \
        for (int64_t c = 0; c < NC; c++) {                                                    \
            const T *xp = x + c * H * W;                                                      \
            for (int64_t oy = 0; oy < Ho; oy++) {                                             \
                int64_t y0 = oy * stride - pad, y1 = y0 + k;                                  \
                y0 = y0 < 0 ? 0 : y0;                                                         \
                y1 = y1 > H ? H : y1;                                                         \
                for (int64_t ox = 0; ox < Wo; ox++) {                                         \
                    int64_t x0 = ox * stride - pad, x1 = x0 + k;                              \
                    x0 = x0 < 0 ? 0 : x0;                                                     \
                    x1 = x1 > W ? W : x1;                                                     \
                    int64_t best = y0 * W + x0;                                               \
                    T bv = xp[best];                                                          \
                    for (int64_t iy = y0; iy < y1; iy++)                                      \
                        for (int64_t ix = x0; ix < x1; ix++) {                                \
                            T v = xp[iy * W + ix];                                            \
                            if (v > bv || (v != v && bv == bv)) { /* NaN wins, like torch */  \
                                bv = v;                                                       \
                                best = iy * W + ix;                                           \
                            }                                                                 \
                        }                                                                     \
                    int64_t o = (c * Ho + oy) * Wo + ox;                                      \
                    y[o] = bv;                                                                \
                    if (idx) idx[o] = best;                                                   \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
    }

DEF_MAXPOOL_FWD(float, f32)
DEF_MAXPOOL_FWD(double, f64)

/* saved[0] = argmax positions (N,C,Ho,Wo) int64 */
static sq_status max_pool2d_backward(sq_ctx *ctx, sq_node *node, sq_tensor *gout, sq_tensor **gin)
{
    sq_tensor *idx = node->saved[0], *g = NULL;
    const int64_t *in = node->in_shape[0];
    int64_t NC = in[0] * in[1], HW = in[2] * in[3], P = node->out_shape[2] * node->out_shape[3];
    sq_status st;
    SQ_CHECK(sq_tensor_contiguous_raw(ctx, gout, &g));
    if (sq_on_cuda(g)) { /* dx written whole */
        SQ_CHECK(sq_new_on(ctx, g, g->dtype, 4, in, &gin[0]));
        SQ_CHECK(sq_cuda_max_pool2d_bwd(ctx, g->dtype, sq_tensor_data(gin[0]), sq_tensor_data(g),
                                        sq_tensor_data(idx), in[0], in[1], in[2], in[3],
                                        (int)node->iarg[0], (int)node->iarg[1], (int)node->iarg[2],
                                        node->out_shape[2], node->out_shape[3]));
        goto done;
    }
    SQ_CHECK(sq_tensor_zeros(ctx, g->dtype, 4, in, &gin[0]));
    const int64_t *ip = sq_tensor_data(idx);
    for (int64_t c = 0; c < NC; c++) {
        if (g->dtype == SQ_F32) {
            float *d = (float *)sq_tensor_data(gin[0]) + c * HW;
            const float *gp = (const float *)sq_tensor_data(g) + c * P;
            for (int64_t p = 0; p < P; p++) d[ip[c * P + p]] += gp[p];
        } else {
            double *d = (double *)sq_tensor_data(gin[0]) + c * HW;
            const double *gp = (const double *)sq_tensor_data(g) + c * P;
            for (int64_t p = 0; p < P; p++) d[ip[c * P + p]] += gp[p];
        }
    }
done:
    sq_tensor_release(g);
    return st;
}

sq_status sq_max_pool2d(sq_ctx *ctx, sq_tensor *x, int k, int stride, int pad, sq_tensor **out)
{
    *out = NULL;
    int64_t Ho, Wo;
    SQ_TRY(pool_check(ctx, "max_pool2d", x, k, stride, pad, &Ho, &Wo));
    int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    int64_t sh[4] = {N, C, Ho, Wo};
    int grad = sq_ag_needs_grad(ctx, 1, &x);
    sq_tensor *xc = NULL, *y = NULL, *idx = NULL;
    sq_status st;
    SQ_CHECK(sq_tensor_contiguous_raw(ctx, x, &xc));
    SQ_CHECK(sq_new_on(ctx, x, x->dtype, 4, sh, &y));
    /* the GPU kernel always writes the positions */
    if (grad || sq_on_cuda(x)) SQ_CHECK(sq_new_on(ctx, x, SQ_I64, 4, sh, &idx));
    int64_t *ip = idx ? sq_tensor_data(idx) : NULL;
    if (sq_on_cuda(x))
        SQ_CHECK(sq_cuda_max_pool2d(ctx, x->dtype, sq_tensor_data(y), ip, sq_tensor_data(xc), N, C, H, W,
                                    k, stride, pad, Ho, Wo));
    else if (x->dtype == SQ_F32)
        maxpool_fwd_f32(sq_tensor_data(y), ip, sq_tensor_data(xc), N * C, H, W, Ho, Wo, k, stride, pad);
    else
        maxpool_fwd_f64(sq_tensor_data(y), ip, sq_tensor_data(xc), N * C, H, W, Ho, Wo, k, stride, pad);
    if (grad) {
        sq_node *node;
        SQ_CHECK(sq_ag_attach(ctx, y, "max_pool2d", max_pool2d_backward, 1, &x, &node));
        sq_node_save(node, idx);
        node->iarg[0] = k;
        node->iarg[1] = stride;
        node->iarg[2] = pad;
    }
    *out = y;
    y = NULL;
done:
    sq_tensor_release(xc);
    sq_tensor_release(y);
    sq_tensor_release(idx);
    return st;
}

/* Average pooling with zero padding counted (divisor k*k).  Forward sums each
 * window; backward spreads g/(k*k) over it. */
#define DEF_AVGPOOL(T, S)                                                                     \
    static void avgpool_##S(T *restrict y, const T *restrict x, int back, int64_t NC,         \
                            int64_t H, int64_t W, int64_t Ho, int64_t Wo, int k, int stride,  \
                            int pad)                                                          \
    {                                                                                         \
        T inv = (T)(1.0 / ((double)k * (double)k));                                           \
        for (int64_t c = 0; c < NC; c++)                                                      \
            for (int64_t oy = 0; oy < Ho; oy++) {                                             \
                int64_t y0 = oy * stride - pad, y1 = y0 + k;                                  \
                y0 = y0 < 0 ? 0 : y0;                                                         \
                y1 = y1 > H ? H : y1;                                                         \
                for (int64_t ox = 0; ox < Wo; ox++) {                                         \
                    int64_t x0 = ox * stride - pad, x1 = x0 + k;                              \
                    x0 = x0 < 0 ? 0 : x0;                                                     \
                    x1 = x1 > W ? W : x1;                                                     \
                    int64_t o = (c * Ho + oy) * Wo + ox;                                      \
                    if (back) { /* y is dx (NC,H,W), x is g (NC,Ho,Wo) */                     \
                        T gv = x[o] * inv, *d = y + c * H * W;                                \
                        for (int64_t iy = y0; iy < y1; iy++)                                  \
                            for (int64_t ix = x0; ix < x1; ix++) d[iy * W + ix] += gv;        \
                    } else {                                                                  \
                        const T *xp = x + c * H * W;                                          \
                        T s = 0;                                                              \
                        for (int64_t iy = y0; iy < y1; iy++)                                  \
                            for (int64_t ix = x0; ix < x1; ix++) s += xp[iy * W + ix];        \
                        y[o] = s * inv;                                                       \
                    }                                                                         \
                }                                                                             \
            }                                                                                 \
    }

DEF_AVGPOOL(float, f32)
DEF_AVGPOOL(double, f64)

/* nothing saved; iarg: k, stride, pad */
static sq_status avg_pool2d_backward(sq_ctx *ctx, sq_node *node, sq_tensor *gout, sq_tensor **gin)
{
    const int64_t *in = node->in_shape[0];
    int k = (int)node->iarg[0], stride = (int)node->iarg[1], pad = (int)node->iarg[2];
    sq_tensor *g = NULL;
    sq_status st;
    SQ_CHECK(sq_tensor_contiguous_raw(ctx, gout, &g));
    if (sq_on_cuda(g)) { /* dx written whole */
        SQ_CHECK(sq_new_on(ctx, g, g->dtype, 4, in, &gin[0]));
        SQ_CHECK(sq_cuda_avg_pool2d_bwd(ctx, g->dtype, sq_tensor_data(gin[0]), sq_tensor_data(g), in[0],
                                        in[1], in[2], in[3], k, stride, pad, node->out_shape[2],
                                        node->out_shape[3]));
        goto done;
    }
    SQ_CHECK(sq_tensor_zeros(ctx, g->dtype, 4, in, &gin[0]));
    if (g->dtype == SQ_F32)
        avgpool_f32(sq_tensor_data(gin[0]), sq_tensor_data(g), 1, in[0] * in[1], in[2], in[3],
                    node->out_shape[2], node->out_shape[3], k, stride, pad);
    else
        avgpool_f64(sq_tensor_data(gin[0]), sq_tensor_data(g), 1, in[0] * in[1], in[2], in[3],
                    node->out_shape[2], node->out_shape[3], k, stride, pad);
done:
    sq_tensor_release(g);
    return st;
}

sq_status sq_avg_pool2d(sq_ctx *ctx, sq_tensor *x, int k, int stride, int pad, sq_tensor **out)
{
    *out = NULL;
    int64_t Ho, Wo;
    SQ_TRY(pool_check(ctx, "avg_pool2d", x, k, stride, pad, &Ho, &Wo));
    int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    sq_tensor *xc = NULL, *y = NULL;
    sq_status st;
    SQ_CHECK(sq_tensor_contiguous_raw(ctx, x, &xc));
    SQ_CHECK(sq_new_on(ctx, x, x->dtype, 4, (int64_t[]){N, C, Ho, Wo}, &y));
    if (sq_on_cuda(x))
        SQ_CHECK(sq_cuda_avg_pool2d(ctx, x->dtype, sq_tensor_data(y), sq_tensor_data(xc), N, C, H, W, k,
                                    stride, pad, Ho, Wo));
    else if (x->dtype == SQ_F32)
        avgpool_f32(sq_tensor_data(y), sq_tensor_data(xc), 0, N * C, H, W, Ho, Wo, k, stride, pad);
    else
        avgpool_f64(sq_tensor_data(y), sq_tensor_data(xc), 0, N * C, H, W, Ho, Wo, k, stride, pad);
    if (sq_ag_needs_grad(ctx, 1, &x)) {
        sq_node *node;
        SQ_CHECK(sq_ag_attach(ctx, y, "avg_pool2d", avg_pool2d_backward, 1, &x, &node));
        node->iarg[0] = k;
        node->iarg[1] = stride;
        node->iarg[2] = pad;
    }
    *out = y;
    y = NULL;
done:
    sq_tensor_release(xc);
    sq_tensor_release(y);
    return st;
}
