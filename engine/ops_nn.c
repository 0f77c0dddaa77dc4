/* ops_nn.c — neural-network ops: softmax / log_softmax (optionally causal),
 * cross-entropy, layer norm, per-channel affine, embedding and dropout.
 *
 * The hot ops (softmax family, cross-entropy, layer norm) work on
 * contiguous rows of the last dim with one typed kernel per dtype, written
 * once as a macro and instantiated for float and double.  A causal mask on
 * x (...,T,T) keeps entries j <= i of row i: softmax gives them probability
 * 0 and log_softmax gives them -inf (log 0), exactly as masking the logits
 * with -inf would. */
#include "sq_ops_internal.h"

#include <math.h>
#include <string.h>

/* ---- typed row kernels ---------------------------------------------------- */

/* Softmax rows.  x, y (R,D); row r of a causal (...,T,T) input keeps
 * entries [0, r%T] (T == D).  logp: write log-probabilities instead. */
#define DEF_SOFTMAX_FWD(T, S, EXPF, LOGF)                                                     \
    static void softmax_fwd_##S(T *restrict y, const T *restrict x, int64_t R, int64_t D,     \
                                int causal, int logp)                                          \
    {                                                                                         \
        for (int64_t r = 0; r < R; r++) {                                                     \
            const T *xr = x + r * D;                                                          \
            T *yr = y + r * D;                                                                \
            int64_t n = causal ? r % D + 1 : D;                                               \
            T m = xr[0];                                                                      \
            for (int64_t j = 1; j < n; j++) m = xr[j] > m ? xr[j] : m;                        \
            T s = 0;                                                                          \
            if (logp) {                                                                        \
                for (int64_t j = 0; j < n; j++) s += EXPF(xr[j] - m);                         \
                T lse = m + LOGF(s);                                                          \
                for (int64_t j = 0; j < n; j++) yr[j] = xr[j] - lse;                          \
                for (int64_t j = n; j < D; j++) yr[j] = (T)-INFINITY;                         \
            } else {                                                                          \
                for (int64_t j = 0; j < n; j++) {                                             \
                    T e = EXPF(xr[j] - m);                                                    \
                    yr[j] = e;                                                                \
                    s += e;                                                                   \
                }                                                                             \
                T inv = (T)1 / s;                                                             \
                for (int64_t j = 0; j < n; j++) yr[j] *= inv;                                 \
                for (int64_t j = n; j < D; j++) yr[j] = 0;                                    \
            }                                                                                 \
        }                                                                                     \
    }

/* softmax:     dx = y * (g - sum(g*y))
 * log_softmax: dx = g - exp(y) * sum(g)        (masked entries get 0) */
#define DEF_SOFTMAX_BWD(T, S, EXPF)                                                           \
    static void softmax_bwd_##S(T *restrict dx, const T *restrict g, const T *restrict y,     \
                                int64_t R, int64_t D, int causal, int logp)                    \
    {                                                                                         \
        for (int64_t r = 0; r < R; r++) {                                                     \
            const T *gr = g + r * D, *yr = y + r * D;                                         \
            T *dr = dx + r * D;                                                               \
            int64_t n = causal ? r % D + 1 : D;                                               \
            T s = 0;                                                                          \
            if (logp) {                                                                        \
                for (int64_t j = 0; j < n; j++) s += gr[j];                                   \
                for (int64_t j = 0; j < n; j++) dr[j] = gr[j] - EXPF(yr[j]) * s;              \
            } else {                                                                          \
                for (int64_t j = 0; j < n; j++) s += gr[j] * yr[j];                           \
                for (int64_t j = 0; j < n; j++) dr[j] = yr[j] * (gr[j] - s);                  \
            }                                                                                 \
            for (int64_t j = n; j < D; j++) dr[j] = 0;                                        \
        }                                                                                     \
    }

/* Cross-entropy rows: returns the summed loss; p (N,C) receives the
 * probabilities when not NULL. */
#define DEF_XENT_FWD(T, S, EXPF, LOGF)                                                        \
    static double xent_fwd_##S(T *restrict p, const T *restrict x, const sq_tensor *tg,       \
                               int64_t N, int64_t C)                                          \
    {                                                                                         \
        double loss = 0;                                                                      \
        for (int64_t r = 0; r < N; r++) {                                                     \
            const T *xr = x + r * C;                                                          \
            T m = xr[0];                                                                      \
            for (int64_t j = 1; j < C; j++) m = xr[j] > m ? xr[j] : m;                        \
            T s = 0;                                                                          \
            if (p) {                                                                          \
                T *pr = p + r * C;                                                            \
                for (int64_t j = 0; j < C; j++) {                                             \
                    T e = EXPF(xr[j] - m);                                                    \
                    pr[j] = e;                                                                \
                    s += e;                                                                   \
                }                                                                             \
                T inv = (T)1 / s;                                                             \
                for (int64_t j = 0; j < C; j++) pr[j] *= inv;                                 \
            } else {                                                                          \
                for (int64_t j = 0; j < C; j++) s += EXPF(xr[j] - m);                         \
            }                                                                                 \
            loss += (double)(m + LOGF(s) - xr[sq_index_at(tg, r)]);                           \
        }                                                                                     \
        return loss;                                                                          \
    }

/* dx = (p - onehot(t)) * scale,  scale = dloss / N */
#define DEF_XENT_BWD(T, S)                                                                    \
    static void xent_bwd_##S(T *restrict dx, const T *restrict p, const sq_tensor *tg,        \
                             int64_t N, int64_t C, T scale)                                   \
    {                                                                                         \
        for (int64_t r = 0; r < N; r++) {                                                     \
            const T *pr = p + r * C;                                                          \
            T *dr = dx + r * C;                                                               \
            for (int64_t j = 0; j < C; j++) dr[j] = pr[j] * scale;                            \
            dr[sq_index_at(tg, r)] -= scale;                                                  \
        }                                                                                     \
    }

/* Layer norm rows (two-pass mean/variance, accumulated in double).
 * xhat and rstd are written when not NULL; w, b may be NULL. */
#define DEF_LN_FWD(T, S)                                                                      \
    static void ln_fwd_##S(T *restrict y, T *restrict xhat, T *restrict rstd,                 \
                           const T *restrict x, const T *w, const T *b, int64_t R, int64_t D, \
                           double eps)                                                        \
    {                                                                                         \
        for (int64_t r = 0; r < R; r++) {                                                     \
            const T *xr = x + r * D;                                                          \
            T *yr = y + r * D;                                                                \
            double mu = 0, var = 0;                                                           \
            for (int64_t j = 0; j < D; j++) mu += (double)xr[j];                              \
            mu /= (double)D;                                                                  \
            for (int64_t j = 0; j < D; j++) {                                                 \
                double d = (double)xr[j] - mu;                                                \
                var += d * d;                                                                 \
            }                                                                                 \
            var /= (double)D;                                                                 \
            T rs = (T)(1.0 / sqrt(var + eps)), mt = (T)mu;                                    \
            if (rstd) rstd[r] = rs;                                                           \
            for (int64_t j = 0; j < D; j++) {                                                 \
                T h = (xr[j] - mt) * rs;                                                      \
                if (xhat) xhat[r * D + j] = h;                                                \
                yr[j] = h * (w ? w[j] : (T)1) + (b ? b[j] : (T)0);                            \
            }                                                                                 \
        }                                                                                     \
    }

/* dx = rstd * (gw - mean(gw) - xhat * mean(gw * xhat)),  gw = g * w;
 * dw += g * xhat, db += g (summed over rows).  Any output may be NULL. */
#define DEF_LN_BWD(T, S)                                                                      \
    static void ln_bwd_##S(T *restrict dx, T *restrict dw, T *restrict db, const T *g,        \
                           const T *xhat, const T *rstd, const T *w, int64_t R, int64_t D)    \
    {                                                                                         \
        for (int64_t r = 0; r < R; r++) {                                                     \
            const T *gr = g + r * D, *hr = xhat ? xhat + r * D : NULL;                         \
            if (dx) {                                                                         \
                double a = 0, c = 0;                                                          \
                for (int64_t j = 0; j < D; j++) {                                             \
                    double gw = (double)gr[j] * (w ? (double)w[j] : 1.0);                     \
                    a += gw;                                                                  \
                    c += gw * (double)hr[j];                                                  \
                }                                                                             \
                T am = (T)(a / (double)D), cm = (T)(c / (double)D), rs = rstd[r];             \
                T *dr = dx + r * D;                                                           \
                for (int64_t j = 0; j < D; j++)                                               \
                    dr[j] = rs * (gr[j] * (w ? w[j] : (T)1) - am - hr[j] * cm);               \
            }                                                                                 \
            if (dw)                                                                           \
                for (int64_t j = 0; j < D; j++) dw[j] += gr[j] * hr[j];                       \
            if (db)                                                                           \
                for (int64_t j = 0; j < D; j++) db[j] += gr[j];                               \
        }                                                                                     \
    }

DEF_SOFTMAX_FWD(float, f32, expf, logf)
DEF_SOFTMAX_FWD(double, f64, exp, log)
DEF_SOFTMAX_BWD(float, f32, expf)
DEF_SOFTMAX_BWD(double, f64, exp)
DEF_XENT_FWD(float, f32, expf, logf)
DEF_XENT_FWD(double, f64, exp, log)
DEF_XENT_BWD(float, f32)
DEF_XENT_BWD(double, f64)
DEF_LN_FWD(float, f32)
DEF_LN_FWD(double, f64)
DEF_LN_BWD(float, f32)
DEF_LN_BWD(double, f64)

/* Data pointer of an optional tensor. */
static void *opt_data(const sq_tensor *t) { return t ? sq_tensor_data(t) : NULL; }

/* ---- softmax / log_softmax ------------------------------------------------- */

/* saved[0] = output (alias view); iarg: causal, logp */
static sq_status softmax_backward(sq_ctx *ctx, sq_node *node, sq_tensor *gout, sq_tensor **gin)
{
    sq_tensor *y = node->saved[0], *g = NULL;
    SQ_TRY(sq_tensor_contiguous_raw(ctx, gout, &g));
    sq_status st = sq_tensor_empty_like(ctx, y, &gin[0]);
    if (st == SQ_OK) {
        int64_t D = y->ndim ? y->shape[y->ndim - 1] : 1;
        int64_t R = D ? sq_tensor_numel(y) / D : 0;
        int causal = (int)node->iarg[0], logp = (int)node->iarg[1];
        if (sq_on_cuda(y))
            st = sq_cuda_softmax_bwd(ctx, y->dtype, logp, sq_tensor_data(gin[0]), sq_tensor_data(g),
                                     sq_tensor_data(y), R, D, causal);
        else if (y->dtype == SQ_F32)
            softmax_bwd_f32(sq_tensor_data(gin[0]), sq_tensor_data(g), sq_tensor_data(y), R, D,
                            causal, logp);
        else
            softmax_bwd_f64(sq_tensor_data(gin[0]), sq_tensor_data(g), sq_tensor_data(y), R, D,
                            causal, logp);
    }
    sq_tensor_release(g);
    return st;
}

static sq_status softmax_impl(sq_ctx *ctx, const char *name, sq_tensor *x, int causal, int logp,
                              sq_tensor **out)
{
    *out = NULL;
    char s1[64];
    SQ_TRY(sq_need_float(ctx, name, "input", x));
    if (x->ndim < 1)
        return sq_fail(ctx, SQ_ERR_SHAPE, "%s: input is a scalar; need at least 1 dim", name);
    if (causal && (x->ndim < 2 || x->shape[x->ndim - 1] != x->shape[x->ndim - 2]))
        return sq_fail(ctx, SQ_ERR_SHAPE, "%s: causal mask needs a (...,T,T) input, got %s", name,
                       SQ_SHAPE(x, s1));
    int64_t D = x->shape[x->ndim - 1];
    int64_t R = D ? sq_tensor_numel(x) / D : 0;
    sq_tensor *xc = NULL, *y = NULL;
    sq_status st;
    SQ_CHECK(sq_tensor_contiguous_raw(ctx, x, &xc));
    SQ_CHECK(sq_tensor_empty_like(ctx, x, &y));
    if (sq_on_cuda(x))
        SQ_CHECK(sq_cuda_softmax(ctx, x->dtype, logp, sq_tensor_data(y), sq_tensor_data(xc), R, D, causal));
    else if (x->dtype == SQ_F32)
        softmax_fwd_f32(sq_tensor_data(y), sq_tensor_data(xc), R, D, causal, logp);
    else
        softmax_fwd_f64(sq_tensor_data(y), sq_tensor_data(xc), R, D, causal, logp);
    if (sq_ag_needs_grad(ctx, 1, &x)) {
        sq_node *n;
        SQ_CHECK(sq_ag_attach(ctx, y, name, softmax_backward, 1, &x, &n));
        n->iarg[0] = causal != 0;
        n->iarg[1] = logp;
        SQ_CHECK(sq_node_save_output(ctx, n, y));
    }
    *out = y;
    y = NULL;
done:
    sq_tensor_release(xc);
    sq_tensor_release(y);
    return st;
}

sq_status sq_softmax(sq_ctx *ctx, sq_tensor *x, int causal, sq_tensor **out)
{
    return softmax_impl(ctx, "softmax", x, causal != 0, 0, out);
}

sq_status sq_log_softmax(sq_ctx *ctx, sq_tensor *x, int causal, sq_tensor **out)
{
    return softmax_impl(ctx, "log_softmax", x, causal != 0, 1, out);
}

/* ---- cross-entropy ----------------------------------------------------------- */

/* saved[0] = probabilities (N,C), saved[1] = targets (N) contiguous; iarg: N, C */
static sq_status xent_backward(sq_ctx *ctx, sq_node *node, sq_tensor *gout, sq_tensor **gin)
{
    sq_tensor *p = node->saved[0], *tg = node->saved[1];
    int64_t N = node->iarg[0], C = node->iarg[1];
    if (sq_on_cuda(p)) { /* the loss gradient stays on the device: no sync */
        sq_tensor *g = NULL;
        SQ_TRY(sq_tensor_contiguous_raw(ctx, gout, &g));
        sq_status st = sq_tensor_empty_like(ctx, p, &gin[0]);
        if (st == SQ_OK)
            st = sq_cuda_cross_entropy_bwd(ctx, p->dtype, sq_tensor_data(gin[0]), sq_tensor_data(g),
                                           sq_tensor_data(p), sq_tensor_data(tg), N, C);
        sq_tensor_release(g);
        return st;
    }
    double scale = sq_tensor_get_flat(gout, 0) / (double)N; /* gout is one element */
    SQ_TRY(sq_tensor_empty_like(ctx, p, &gin[0]));
    if (p->dtype == SQ_F32)
        xent_bwd_f32(sq_tensor_data(gin[0]), sq_tensor_data(p), tg, N, C, (float)scale);
    else
        xent_bwd_f64(sq_tensor_data(gin[0]), sq_tensor_data(p), tg, N, C, scale);
    return SQ_OK;
}

sq_status sq_cross_entropy(sq_ctx *ctx, sq_tensor *logits, sq_tensor *targets, sq_tensor **out)
{
    *out = NULL;
    char s1[64], s2[64];
    SQ_TRY(sq_need_float(ctx, "cross_entropy", "logits", logits));
    SQ_TRY(sq_need_index(ctx, "cross_entropy", "targets", targets));
    if (logits->ndim != 2 || targets->ndim != 1 || targets->shape[0] != logits->shape[0])
        return sq_fail(ctx, SQ_ERR_SHAPE,
                       "cross_entropy: logits %s and targets %s do not fit (need NxC and N)",
                       SQ_SHAPE(logits, s1), SQ_SHAPE(targets, s2));
    int64_t N = logits->shape[0], C = logits->shape[1];
    if (C < 1)
        return sq_fail(ctx, SQ_ERR_SHAPE, "cross_entropy: logits %s have no classes",
                       SQ_SHAPE(logits, s1));
    SQ_TRY(sq_need_same_device(ctx, "cross_entropy", "logits", logits, "targets", targets));
    sq_tensor *xc = NULL, *tc = NULL, *p = NULL, *loss = NULL;
    sq_status st;
    if (sq_on_cuda(logits)) {
        /* targets are checked on the device: a bad one makes the loss NaN and
         * is reported by the next synchronisation (item(), tolist(), sync) */
        int grad = sq_ag_needs_grad(ctx, 1, &logits);
        SQ_CHECK(sq_index_i64(ctx, targets, &tc));
        SQ_CHECK(sq_tensor_contiguous_raw(ctx, logits, &xc));
        if (grad) SQ_CHECK(sq_tensor_empty_like(ctx, logits, &p));
        SQ_CHECK(sq_new_on(ctx, logits, logits->dtype, 0, NULL, &loss));
        SQ_CHECK(sq_cuda_cross_entropy(ctx, logits->dtype, sq_tensor_data(loss), opt_data(p),
                                       sq_tensor_data(xc), sq_tensor_data(tc), N, C));
        goto record;
    }
    SQ_CHECK(sq_tensor_contiguous_raw(ctx, targets, &tc));
    for (int64_t r = 0; r < N; r++) {
        int64_t t = sq_index_at(tc, r);
        if (t < 0 || t >= C) {
            st = sq_fail(ctx, SQ_ERR_ARG, "cross_entropy: target %lld in row %lld outside [0, %lld)",
                         (long long)t, (long long)r, (long long)C);
            goto done;
        }
    }
    SQ_CHECK(sq_tensor_contiguous_raw(ctx, logits, &xc));
    int grad = sq_ag_needs_grad(ctx, 1, &logits);
    if (grad) SQ_CHECK(sq_tensor_empty_like(ctx, logits, &p));
    SQ_CHECK(sq_tensor_empty(ctx, logits->dtype, 0, NULL, &loss));
    double sum = logits->dtype == SQ_F32 ? xent_fwd_f32(opt_data(p), sq_tensor_data(xc), tc, N, C)
                                         : xent_fwd_f64(opt_data(p), sq_tensor_data(xc), tc, N, C);
    sq_tensor_set_flat(loss, 0, sum / (double)N); /* N == 0 gives NaN, like mean */
record:
    if (p) {
        sq_node *n;
        SQ_CHECK(sq_ag_attach(ctx, loss, "cross_entropy", xent_backward, 1, &logits, &n));
        sq_node_save(n, p);
        sq_node_save(n, tc);
        n->iarg[0] = N;
        n->iarg[1] = C;
    }
    *out = loss;
    loss = NULL;
done:
    sq_tensor_release(xc);
    sq_tensor_release(tc);
    sq_tensor_release(p);
    sq_tensor_release(loss);
    return st;
}

/* ---- layer norm --------------------------------------------------------------- */

/* saved[0] = xhat (R,D) (for dx and dw), saved[1] = 1/std (R) (for dx),
 * saved[2] = w (for dx; a parameter, so it costs no SAVED bytes).
 * iarg: R, D, has_w, has_b */
static sq_status layer_norm_backward(sq_ctx *ctx, sq_node *node, sq_tensor *gout, sq_tensor **gin)
{
    sq_tensor *xhat = node->saved[0], *rstd = node->saved[1], *w = node->saved[2], *g = NULL;
    int64_t R = node->iarg[0], D = node->iarg[1];
    int want_dx = node->need[0], want_dw = node->n_in > 1 && node->need[1];
    int want_db = node->n_in > 2 && node->need[2];
    sq_status st;
    SQ_CHECK(sq_tensor_contiguous_raw(ctx, gout, &g));
    sq_dtype dt = g->dtype;
    if (sq_on_cuda(g)) { /* every output written whole */
        if (want_dx) SQ_CHECK(sq_new_on(ctx, g, dt, node->out_ndim, node->out_shape, &gin[0]));
        if (want_dw) SQ_CHECK(sq_new_on(ctx, g, dt, 1, &D, &gin[1]));
        if (want_db) SQ_CHECK(sq_new_on(ctx, g, dt, 1, &D, &gin[2]));
        SQ_CHECK(sq_cuda_layer_norm_bwd(ctx, dt, want_dx ? sq_tensor_data(gin[0]) : NULL,
                                        want_dw ? sq_tensor_data(gin[1]) : NULL,
                                        want_db ? sq_tensor_data(gin[2]) : NULL, sq_tensor_data(g),
                                        opt_data(xhat), opt_data(rstd), opt_data(w), R, D));
        goto done;
    }
    if (want_dx) SQ_CHECK(sq_tensor_empty(ctx, dt, node->out_ndim, node->out_shape, &gin[0]));
    if (want_dw) SQ_CHECK(sq_tensor_zeros(ctx, dt, 1, &D, &gin[1]));
    if (want_db) SQ_CHECK(sq_tensor_zeros(ctx, dt, 1, &D, &gin[2]));
    if (dt == SQ_F32)
        ln_bwd_f32(want_dx ? sq_tensor_data(gin[0]) : NULL, want_dw ? sq_tensor_data(gin[1]) : NULL,
                   want_db ? sq_tensor_data(gin[2]) : NULL, sq_tensor_data(g), opt_data(xhat),
                   opt_data(rstd), opt_data(w), R, D);
    else
        ln_bwd_f64(want_dx ? sq_tensor_data(gin[0]) : NULL, want_dw ? sq_tensor_data(gin[1]) : NULL,
                   want_db ? sq_tensor_data(gin[2]) : NULL, sq_tensor_data(g), opt_data(xhat),
                   opt_data(rstd), opt_data(w), R, D);
done:
    sq_tensor_release(g);
    return st;
}

/* Checks an optional per-channel parameter p (D) against x (...,D). */
static sq_status need_channel_param(sq_ctx *ctx, const char *op, const char *what, sq_tensor *x,
                                    sq_tensor *p)
{
    char s1[64], s2[64];
    SQ_TRY(sq_need_float(ctx, op, what, p));
    SQ_TRY(sq_need_same_dtype(ctx, op, x, p));
    SQ_TRY(sq_need_same_device(ctx, op, "input", x, what, p));
    if (p->ndim != 1 || p->shape[0] != x->shape[x->ndim - 1])
        return sq_fail(ctx, SQ_ERR_SHAPE, "%s: %s %s does not match input %s (need %lld)", op, what,
                       SQ_SHAPE(p, s1), SQ_SHAPE(x, s2), (long long)x->shape[x->ndim - 1]);
    return SQ_OK;
}

sq_status sq_layer_norm(sq_ctx *ctx, sq_tensor *x, sq_tensor *w, sq_tensor *b, double eps,
                        sq_tensor **out)
{
    *out = NULL;
    char s1[64];
    SQ_TRY(sq_need_float(ctx, "layer_norm", "input", x));
    if (x->ndim < 1 || x->shape[x->ndim - 1] < 1)
        return sq_fail(ctx, SQ_ERR_SHAPE, "layer_norm: input %s has no last dim to normalise",
                       SQ_SHAPE(x, s1));
    if (w) SQ_TRY(need_channel_param(ctx, "layer_norm", "weight", x, w));
    if (b) SQ_TRY(need_channel_param(ctx, "layer_norm", "bias", x, b));
    if (!(eps >= 0) || !isfinite(eps))
        return sq_fail(ctx, SQ_ERR_ARG, "layer_norm: eps %g must be finite and >= 0", eps);
    int64_t D = x->shape[x->ndim - 1], R = sq_tensor_numel(x) / D;
    sq_tensor *ins[3] = {x, w, b};
    int n_in = b ? 3 : w ? 2 : 1;
    int grad = sq_ag_needs_grad(ctx, n_in, ins);
    sq_tensor *xc = NULL, *wc = NULL, *bc = NULL, *y = NULL, *xhat = NULL, *rstd = NULL;
    sq_status st;
    SQ_CHECK(sq_tensor_contiguous_raw(ctx, x, &xc));
    if (w) SQ_CHECK(sq_tensor_contiguous_raw(ctx, w, &wc));
    if (b) SQ_CHECK(sq_tensor_contiguous_raw(ctx, b, &bc));
    SQ_CHECK(sq_tensor_empty_like(ctx, x, &y));
    /* xhat feeds dx and dw; 1/std and w feed dx only */
    int save_xhat = grad && (x->requires_grad || (w && w->requires_grad));
    int save_dx = grad && x->requires_grad;
    if (save_xhat) SQ_CHECK(sq_new_on(ctx, x, x->dtype, 2, (int64_t[]){R, D}, &xhat));
    if (save_dx) SQ_CHECK(sq_new_on(ctx, x, x->dtype, 1, &R, &rstd));
    if (sq_on_cuda(x))
        SQ_CHECK(sq_cuda_layer_norm(ctx, x->dtype, sq_tensor_data(y), opt_data(xhat), opt_data(rstd),
                                    sq_tensor_data(xc), opt_data(wc), opt_data(bc), R, D, eps));
    else if (x->dtype == SQ_F32)
        ln_fwd_f32(sq_tensor_data(y), opt_data(xhat), opt_data(rstd), sq_tensor_data(xc),
                   opt_data(wc), opt_data(bc), R, D, eps);
    else
        ln_fwd_f64(sq_tensor_data(y), opt_data(xhat), opt_data(rstd), sq_tensor_data(xc),
                   opt_data(wc), opt_data(bc), R, D, eps);
    if (grad) {
        sq_node *n;
        SQ_CHECK(sq_ag_attach(ctx, y, "layer_norm", layer_norm_backward, n_in, ins, &n));
        /* db alone needs only gout; xhat is then not even computed */
        sq_node_save(n, xhat);
        sq_node_save(n, rstd);
        sq_node_save(n, save_dx ? wc : NULL);
        n->iarg[0] = R;
        n->iarg[1] = D;
    }
    *out = y;
    y = NULL;
done:
    sq_tensor_release(xc);
    sq_tensor_release(wc);
    sq_tensor_release(bc);
    sq_tensor_release(y);
    sq_tensor_release(xhat);
    sq_tensor_release(rstd);
    return st;
}

/* ---- affine (ResMLP) -------------------------------------------------------------- */

#define AFFINE_FWD(T)                                                                         \
    do {                                                                                      \
        T *yp = sq_tensor_data(y);                                                            \
        const T *xp = sq_tensor_data(xc), *ap = sq_tensor_data(ac), *bp = opt_data(bc);       \
        for (int64_t r = 0; r < R; r++)                                                       \
            for (int64_t j = 0; j < D; j++)                                                   \
                yp[r * D + j] = xp[r * D + j] * ap[j] + (bp ? bp[j] : (T)0);                  \
    } while (0)

#define AFFINE_BWD(T)                                                                         \
    do {                                                                                      \
        const T *gp = sq_tensor_data(g);                                                      \
        T *dx = opt_data(gin[0]), *da = opt_data(gin[1]), *db = n_in > 2 ? opt_data(gin[2]) : NULL; \
        const T *ap = opt_data(alpha), *xp = opt_data(x);                                     \
        for (int64_t r = 0; r < R; r++) {                                                     \
            const T *gr = gp + r * D;                                                         \
            if (dx)                                                                           \
                for (int64_t j = 0; j < D; j++) dx[r * D + j] = gr[j] * ap[j];                \
            if (da)                                                                           \
                for (int64_t j = 0; j < D; j++) da[j] += gr[j] * xp[r * D + j];               \
            if (db)                                                                           \
                for (int64_t j = 0; j < D; j++) db[j] += gr[j];                               \
        }                                                                                     \
    } while (0)

/* saved[0] = x contiguous (for dalpha), saved[1] = alpha (for dx); iarg: R, D */
static sq_status affine_backward(sq_ctx *ctx, sq_node *node, sq_tensor *gout, sq_tensor **gin)
{
    sq_tensor *x = node->saved[0], *alpha = node->saved[1], *g = NULL;
    int64_t R = node->iarg[0], D = node->iarg[1];
    int n_in = node->n_in;
    sq_status st;
    SQ_CHECK(sq_tensor_contiguous_raw(ctx, gout, &g));
    sq_dtype dt = g->dtype;
    if (sq_on_cuda(g)) { /* every output written whole */
        if (node->need[0]) SQ_CHECK(sq_new_on(ctx, g, dt, node->out_ndim, node->out_shape, &gin[0]));
        if (node->need[1]) SQ_CHECK(sq_new_on(ctx, g, dt, 1, &D, &gin[1]));
        if (n_in > 2 && node->need[2]) SQ_CHECK(sq_new_on(ctx, g, dt, 1, &D, &gin[2]));
        SQ_CHECK(sq_cuda_affine_bwd(ctx, dt, opt_data(gin[0]), opt_data(gin[1]),
                                    n_in > 2 ? opt_data(gin[2]) : NULL, sq_tensor_data(g), opt_data(x),
                                    opt_data(alpha), R, D));
        goto done;
    }
    if (node->need[0]) SQ_CHECK(sq_tensor_empty(ctx, dt, node->out_ndim, node->out_shape, &gin[0]));
    if (node->need[1]) SQ_CHECK(sq_tensor_zeros(ctx, dt, 1, &D, &gin[1]));
    if (n_in > 2 && node->need[2]) SQ_CHECK(sq_tensor_zeros(ctx, dt, 1, &D, &gin[2]));
    if (dt == SQ_F32) AFFINE_BWD(float);
    else AFFINE_BWD(double);
done:
    sq_tensor_release(g);
    return st;
}

sq_status sq_affine(sq_ctx *ctx, sq_tensor *x, sq_tensor *alpha, sq_tensor *beta, sq_tensor **out)
{
    *out = NULL;
    char s1[64];
    SQ_TRY(sq_need_float(ctx, "affine", "input", x));
    if (x->ndim < 1)
        return sq_fail(ctx, SQ_ERR_SHAPE, "affine: input %s has no channel dim", SQ_SHAPE(x, s1));
    SQ_TRY(need_channel_param(ctx, "affine", "alpha", x, alpha));
    if (beta) SQ_TRY(need_channel_param(ctx, "affine", "beta", x, beta));
    int64_t D = x->shape[x->ndim - 1], R = D ? sq_tensor_numel(x) / D : 0;
    sq_tensor *ins[3] = {x, alpha, beta};
    int n_in = beta ? 3 : 2;
    sq_tensor *xc = NULL, *ac = NULL, *bc = NULL, *y = NULL;
    sq_status st;
    SQ_CHECK(sq_tensor_contiguous_raw(ctx, x, &xc));
    SQ_CHECK(sq_tensor_contiguous_raw(ctx, alpha, &ac));
    if (beta) SQ_CHECK(sq_tensor_contiguous_raw(ctx, beta, &bc));
    SQ_CHECK(sq_tensor_empty_like(ctx, x, &y));
    if (sq_on_cuda(x))
        SQ_CHECK(sq_cuda_affine(ctx, x->dtype, sq_tensor_data(y), sq_tensor_data(xc), sq_tensor_data(ac),
                                opt_data(bc), R, D));
    else if (x->dtype == SQ_F32) AFFINE_FWD(float);
    else AFFINE_FWD(double);
    if (sq_ag_needs_grad(ctx, n_in, ins)) {
        sq_node *n;
        SQ_CHECK(sq_ag_attach(ctx, y, "affine", affine_backward, n_in, ins, &n));
        sq_node_save(n, n->need[1] ? xc : NULL);
        sq_node_save(n, n->need[0] ? ac : NULL);
        n->iarg[0] = R;
        n->iarg[1] = D;
    }
    *out = y;
    y = NULL;
done:
    sq_tensor_release(xc);
    sq_tensor_release(ac);
    sq_tensor_release(bc);
    sq_tensor_release(y);
    return st;
}

/* ---- embedding ------------------------------------------------------------------- */

/* saved[0] = idx contiguous; iarg: V, D.  dW rows are scatter-added. */
static sq_status embedding_backward(sq_ctx *ctx, sq_node *node, sq_tensor *gout, sq_tensor **gin)
{
    sq_tensor *idx = node->saved[0], *g = NULL;
    int64_t V = node->iarg[0], D = node->iarg[1], n = sq_tensor_numel(idx);
    sq_status st;
    SQ_CHECK(sq_tensor_contiguous_raw(ctx, gout, &g));
    SQ_CHECK(sq_zeros_on(ctx, g, g->dtype, 2, (int64_t[]){V, D}, &gin[0]));
    if (sq_on_cuda(g)) {
        SQ_CHECK(sq_cuda_embedding_bwd(ctx, g->dtype, sq_tensor_data(gin[0]), sq_tensor_data(g),
                                       sq_tensor_data(idx), n, V, D));
    } else if (g->dtype == SQ_F32) {
        const float *gp = sq_tensor_data(g);
        float *dw = sq_tensor_data(gin[0]);
        for (int64_t i = 0; i < n; i++) {
            float *row = dw + sq_index_at(idx, i) * D;
            for (int64_t j = 0; j < D; j++) row[j] += gp[i * D + j];
        }
    } else {
        const double *gp = sq_tensor_data(g);
        double *dw = sq_tensor_data(gin[0]);
        for (int64_t i = 0; i < n; i++) {
            double *row = dw + sq_index_at(idx, i) * D;
            for (int64_t j = 0; j < D; j++) row[j] += gp[i * D + j];
        }
    }
done:
    sq_tensor_release(g);
    return st;
}

sq_status sq_embedding(sq_ctx *ctx, sq_tensor *idx, sq_tensor *w, sq_tensor **out)
{
    *out = NULL;
    char s1[64], s2[64];
    SQ_TRY(sq_need_index(ctx, "embedding", "indices", idx));
    SQ_TRY(sq_need_float(ctx, "embedding", "weight", w));
    if (w->ndim != 2)
        return sq_fail(ctx, SQ_ERR_SHAPE, "embedding: weight %s must be 2-d (VxD)", SQ_SHAPE(w, s1));
    if (idx->ndim + 1 > SQ_MAX_DIMS)
        return sq_fail(ctx, SQ_ERR_SHAPE, "embedding: indices %s have too many dims (max %d)",
                       SQ_SHAPE(idx, s1), SQ_MAX_DIMS - 1);
    int64_t V = w->shape[0], D = w->shape[1], n = sq_tensor_numel(idx);
    SQ_TRY(sq_need_same_device(ctx, "embedding", "indices", idx, "weight", w));
    sq_tensor *ic = NULL, *wc = NULL, *y = NULL;
    sq_status st;
    if (sq_on_cuda(w)) {
        /* indices are checked on the device: a bad one gives a NaN row and is
         * reported by the next synchronisation */
        int64_t sh[SQ_MAX_DIMS];
        memcpy(sh, idx->shape, (size_t)idx->ndim * sizeof *sh);
        sh[idx->ndim] = D;
        SQ_CHECK(sq_index_i64(ctx, idx, &ic));
        SQ_CHECK(sq_tensor_contiguous_raw(ctx, w, &wc));
        SQ_CHECK(sq_new_on(ctx, w, w->dtype, idx->ndim + 1, sh, &y));
        SQ_CHECK(sq_cuda_embedding(ctx, w->dtype, sq_tensor_data(y), sq_tensor_data(ic),
                                   sq_tensor_data(wc), n, V, D));
        goto record;
    }
    SQ_CHECK(sq_tensor_contiguous_raw(ctx, idx, &ic));
    for (int64_t i = 0; i < n; i++) {
        int64_t v = sq_index_at(ic, i);
        if (v < 0 || v >= V) {
            st = sq_fail(ctx, SQ_ERR_ARG,
                         "embedding: index %lld at position %lld outside [0, %lld) for weight %s",
                         (long long)v, (long long)i, (long long)V, SQ_SHAPE(w, s2));
            goto done;
        }
    }
    SQ_CHECK(sq_tensor_contiguous_raw(ctx, w, &wc));
    int64_t sh[SQ_MAX_DIMS];
    memcpy(sh, idx->shape, (size_t)idx->ndim * sizeof *sh);
    sh[idx->ndim] = D;
    SQ_CHECK(sq_tensor_empty(ctx, w->dtype, idx->ndim + 1, sh, &y));
    size_t row = (size_t)D * sq_dtype_size(w->dtype);
    const char *src = sq_tensor_data(wc);
    char *dst = sq_tensor_data(y);
    for (int64_t i = 0; i < n && row; i++)
        memcpy(dst + (size_t)i * row, src + (size_t)sq_index_at(ic, i) * row, row);
record:
    if (sq_ag_needs_grad(ctx, 1, &w)) {
        sq_node *nd;
        SQ_CHECK(sq_ag_attach(ctx, y, "embedding", embedding_backward, 1, &w, &nd));
        sq_node_save(nd, ic);
        nd->iarg[0] = V;
        nd->iarg[1] = D;
    }
    *out = y;
    y = NULL;
done:
    sq_tensor_release(ic);
    sq_tensor_release(wc);
    sq_tensor_release(y);
    return st;
}

/* ---- dropout --------------------------------------------------------------------- */

/* out = a * b elementwise, both contiguous of n elements */
static void mul_into(sq_dtype dt, void *out, const void *a, const void *b, int64_t n)
{
    if (dt == SQ_F32) {
        float *o = out;
        const float *x = a, *y = b;
        for (int64_t i = 0; i < n; i++) o[i] = x[i] * y[i];
    } else {
        double *o = out;
        const double *x = a, *y = b;
        for (int64_t i = 0; i < n; i++) o[i] = x[i] * y[i];
    }
}

/* saved[0] = mask, already scaled: 0 or 1/(1-p).  On the GPU the mask is
 * one byte per element (0/1) from Philox, held in an int32 tensor of
 * ceil(n/4) elements; darg[0] = p, iarg[0] = n. */
static sq_status dropout_backward(sq_ctx *ctx, sq_node *node, sq_tensor *gout, sq_tensor **gin)
{
    sq_tensor *mask = node->saved[0], *g = NULL;
    sq_status st;
    SQ_CHECK(sq_tensor_contiguous_raw(ctx, gout, &g));
    if (sq_on_cuda(mask)) {
        SQ_CHECK(sq_tensor_empty_like(ctx, g, &gin[0]));
        SQ_CHECK(sq_cuda_dropout_bwd(ctx, g->dtype, sq_tensor_data(gin[0]), sq_tensor_data(g),
                                     (const uint8_t *)sq_tensor_data(mask), node->iarg[0], node->darg[0]));
        goto done;
    }
    SQ_CHECK(sq_tensor_empty_like(ctx, mask, &gin[0]));
    mul_into(g->dtype, sq_tensor_data(gin[0]), sq_tensor_data(g), sq_tensor_data(mask),
             sq_tensor_numel(mask));
done:
    sq_tensor_release(g);
    return st;
}

sq_status sq_dropout(sq_ctx *ctx, sq_tensor *x, double p, int training, sq_tensor **out)
{
    *out = NULL;
    SQ_TRY(sq_need_float(ctx, "dropout", "input", x));
    if (!(p >= 0.0 && p < 1.0))
        return sq_fail(ctx, SQ_ERR_ARG, "dropout: p = %g outside [0, 1)", p);
    if (!training || p == 0.0) { /* identity: no mask, no node, no RNG draw */
        sq_tensor_retain(x);
        *out = x;
        return SQ_OK;
    }
    sq_tensor *xc = NULL, *mask = NULL, *y = NULL;
    sq_status st;
    SQ_CHECK(sq_tensor_contiguous_raw(ctx, x, &xc));
    if (sq_on_cuda(x)) { /* seeded Philox on the device (sq_cuda_rng_seed) */
        int64_t n = sq_tensor_numel(x), words = (n + 3) / 4;
        SQ_CHECK(sq_new_on(ctx, x, SQ_I32, 1, &words, &mask));
        SQ_CHECK(sq_tensor_empty_like(ctx, x, &y));
        SQ_CHECK(sq_cuda_dropout(ctx, x->dtype, sq_tensor_data(y), (uint8_t *)sq_tensor_data(mask),
                                 sq_tensor_data(xc), n, p));
        if (sq_ag_needs_grad(ctx, 1, &x)) {
            sq_node *nd;
            SQ_CHECK(sq_ag_attach(ctx, y, "dropout", dropout_backward, 1, &x, &nd));
            sq_node_save(nd, mask);
            nd->iarg[0] = n;
            nd->darg[0] = p;
        }
        *out = y;
        y = NULL;
        goto done;
    }
    SQ_CHECK(sq_tensor_empty_like(ctx, x, &mask));
    SQ_CHECK(sq_tensor_empty_like(ctx, x, &y));
    int64_t n = sq_tensor_numel(x);
    double keep = 1.0 / (1.0 - p);
    if (x->dtype == SQ_F32) {
        float *m = sq_tensor_data(mask), k = (float)keep;
        for (int64_t i = 0; i < n; i++) m[i] = sq_rng_uniform(&ctx->rng) < p ? 0.0f : k;
    } else {
        double *m = sq_tensor_data(mask);
        for (int64_t i = 0; i < n; i++) m[i] = sq_rng_uniform(&ctx->rng) < p ? 0.0 : keep;
    }
    mul_into(x->dtype, sq_tensor_data(y), sq_tensor_data(xc), sq_tensor_data(mask), n);
    if (sq_ag_needs_grad(ctx, 1, &x)) {
        sq_node *nd;
        SQ_CHECK(sq_ag_attach(ctx, y, "dropout", dropout_backward, 1, &x, &nd));
        sq_node_save(nd, mask);
    }
    *out = y;
    y = NULL;
done:
    sq_tensor_release(xc);
    sq_tensor_release(mask);
    sq_tensor_release(y);
    return st;
}
