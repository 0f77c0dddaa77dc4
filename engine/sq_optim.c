/* sq_optim.c — SGD and AdamW updates over contiguous float32/float64
 * parameters, with lazily allocated per-parameter state (SQ_MEM_OPTIM). */
#include "sq_optim.h"
#include "cuda/sq_cuda_kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

sq_sgd_cfg sq_sgd_defaults(double lr)
{
    sq_sgd_cfg c = {lr, 0.0, 0.0, 0.0, 0};
    return c;
}

sq_adamw_cfg sq_adamw_defaults(void)
{
    sq_adamw_cfg c = {1e-3, 0.9, 0.999, 1e-8, 1e-2};
    return c;
}

static int finite_nonneg(double v) { return isfinite(v) && v >= 0; }

static sq_status check_sgd(sq_ctx *ctx, const sq_sgd_cfg *c)
{
    if (!finite_nonneg(c->lr)) return sq_fail(ctx, SQ_ERR_ARG, "sgd: lr %g must be finite and >= 0", c->lr);
    if (!finite_nonneg(c->momentum))
        return sq_fail(ctx, SQ_ERR_ARG, "sgd: momentum %g must be finite and >= 0", c->momentum);
    if (!finite_nonneg(c->dampening))
        return sq_fail(ctx, SQ_ERR_ARG, "sgd: dampening %g must be finite and >= 0", c->dampening);
    if (!finite_nonneg(c->weight_decay))
        return sq_fail(ctx, SQ_ERR_ARG, "sgd: weight_decay %g must be finite and >= 0", c->weight_decay);
    if (c->nesterov && (c->momentum <= 0 || c->dampening != 0))
        return sq_fail(ctx, SQ_ERR_ARG, "sgd: nesterov needs momentum > 0 and dampening 0 (got momentum %g, dampening %g)",
                       c->momentum, c->dampening);
    return SQ_OK;
}

static sq_status check_adamw(sq_ctx *ctx, const sq_adamw_cfg *c)
{
    if (!finite_nonneg(c->lr)) return sq_fail(ctx, SQ_ERR_ARG, "adamw: lr %g must be finite and >= 0", c->lr);
    if (!(c->beta1 >= 0 && c->beta1 < 1))
        return sq_fail(ctx, SQ_ERR_ARG, "adamw: beta1 %g must be in [0,1)", c->beta1);
    if (!(c->beta2 >= 0 && c->beta2 < 1))
        return sq_fail(ctx, SQ_ERR_ARG, "adamw: beta2 %g must be in [0,1)", c->beta2);
    if (!finite_nonneg(c->eps)) return sq_fail(ctx, SQ_ERR_ARG, "adamw: eps %g must be finite and >= 0", c->eps);
    if (!finite_nonneg(c->weight_decay))
        return sq_fail(ctx, SQ_ERR_ARG, "adamw: weight_decay %g must be finite and >= 0", c->weight_decay);
    return SQ_OK;
}

static sq_status optim_new(sq_ctx *ctx, const char *name, sq_optim_kind kind, int n,
                           sq_tensor *const *params, sq_optim **out)
{
    *out = NULL;
    if (n < 0 || (n > 0 && !params))
        return sq_fail(ctx, SQ_ERR_ARG, "%s: parameter list missing (n = %d)", name, n);
    for (int i = 0; i < n; i++) {
        const sq_tensor *p = params[i];
        char b[64];
        if (!p) return sq_fail(ctx, SQ_ERR_ARG, "%s: parameter %d is missing", name, i + 1);
        if (!sq_is_float(p->dtype))
            return sq_fail(ctx, SQ_ERR_DTYPE, "%s: parameter %d must be float32 or float64, got %s", name,
                           i + 1, sq_dtype_name(p->dtype));
        if (p->storage->device != SQ_CPU && p->storage->device != SQ_CUDA)
            return sq_fail(ctx, SQ_ERR_DEVICE, "%s: parameter %d is on an unknown device", name, i + 1);
        if (!sq_tensor_is_contiguous(p))
            return sq_fail(ctx, SQ_ERR_ARG, "%s: parameter %d (%s) is not contiguous", name, i + 1,
                           sq_shape_str(p, b, sizeof b));
        if (p->grad_fn)
            return sq_fail(ctx, SQ_ERR_ARG, "%s: parameter %d is the result of an op, not a leaf", name, i + 1);
        for (int j = 0; j < i; j++)
            if (params[j] == p)
                return sq_fail(ctx, SQ_ERR_ARG, "%s: parameter %d is listed twice (also as %d)", name,
                               i + 1, j + 1);
    }
    sq_optim *o = calloc(1, sizeof *o);
    if (!o) return sq_fail(ctx, SQ_ERR_NOMEM, "%s: out of host memory", name);
    size_t m = n > 0 ? (size_t)n : 1;
    o->params = calloc(m, sizeof *o->params);
    o->state0 = calloc(m, sizeof *o->state0);
    o->state1 = calloc(m, sizeof *o->state1);
    o->steps = calloc(m, sizeof *o->steps);
    if (!o->params || !o->state0 || !o->state1 || !o->steps) {
        sq_optim_free(o);
        return sq_fail(ctx, SQ_ERR_NOMEM, "%s: out of host memory for %d parameters", name, n);
    }
    o->kind = kind;
    o->n = n;
    for (int i = 0; i < n; i++) {
        sq_tensor_retain(params[i]);
        o->params[i] = params[i];
    }
    *out = o;
    return SQ_OK;
}

sq_status sq_optim_sgd_init(sq_ctx *ctx, int n, sq_tensor *const *params, const sq_sgd_cfg *cfg,
                            sq_optim **out)
{
    *out = NULL;
    if (!cfg) return sq_fail(ctx, SQ_ERR_ARG, "sgd: configuration missing");
    SQ_TRY(check_sgd(ctx, cfg));
    SQ_TRY(optim_new(ctx, "sgd", SQ_OPTIM_SGD, n, params, out));
    (*out)->sgd = *cfg;
    return SQ_OK;
}

sq_status sq_optim_adamw_init(sq_ctx *ctx, int n, sq_tensor *const *params,
                              const sq_adamw_cfg *cfg, sq_optim **out)
{
    *out = NULL;
    if (!cfg) return sq_fail(ctx, SQ_ERR_ARG, "adamw: configuration missing");
    SQ_TRY(check_adamw(ctx, cfg));
    SQ_TRY(optim_new(ctx, "adamw", SQ_OPTIM_ADAMW, n, params, out));
    (*out)->adamw = *cfg;
    return SQ_OK;
}

void sq_optim_free(sq_optim *opt)
{
    if (!opt) return;
    for (int i = 0; i < opt->n; i++) {
        if (opt->params) sq_tensor_release(opt->params[i]);
        if (opt->state0) sq_tensor_release(opt->state0[i]);
        if (opt->state1) sq_tensor_release(opt->state1[i]);
    }
    free(opt->params);
    free(opt->state0);
    free(opt->state1);
    free(opt->steps);
    free(opt);
}

/* ---- update kernels --------------------------------------------------------
 * p, g, buf: n contiguous elements; buf NULL when momentum is 0.  On a
 * parameter's first update buf is zeros and (bm, bk) = (0, 1), so b = d as in
 * PyTorch (which starts the buffer at d rather than decaying zeros). */

static void sgd_f32(int64_t n, float *restrict p, const float *restrict g, float *restrict buf,
                    int first, const sq_sgd_cfg *c)
{
    const float lr = (float)c->lr, wd = (float)c->weight_decay, mu = (float)c->momentum;
    const float bm = first ? 0.0f : mu, bk = first ? 1.0f : (float)(1.0 - c->dampening);
    if (!buf) {
        for (int64_t i = 0; i < n; i++) p[i] -= lr * (g[i] + wd * p[i]);
        return;
    }
    if (c->nesterov) {
        for (int64_t i = 0; i < n; i++) {
            float d = g[i] + wd * p[i];
            float b = bm * buf[i] + bk * d;
            buf[i] = b;
            p[i] -= lr * (d + mu * b);
        }
    } else {
        for (int64_t i = 0; i < n; i++) {
            float b = bm * buf[i] + bk * (g[i] + wd * p[i]);
            buf[i] = b;
            p[i] -= lr * b;
        }
    }
}

static void sgd_f64(int64_t n, double *restrict p, const double *restrict g, double *restrict buf,
                    int first, const sq_sgd_cfg *c)
{
    const double lr = c->lr, wd = c->weight_decay, mu = c->momentum;
    const double bm = first ? 0.0 : mu, bk = first ? 1.0 : 1.0 - c->dampening;
    if (!buf) {
        for (int64_t i = 0; i < n; i++) p[i] -= lr * (g[i] + wd * p[i]);
        return;
    }
    if (c->nesterov) {
        for (int64_t i = 0; i < n; i++) {
            double d = g[i] + wd * p[i];
            double b = bm * buf[i] + bk * d;
            buf[i] = b;
            p[i] -= lr * (d + mu * b);
        }
    } else {
        for (int64_t i = 0; i < n; i++) {
            double b = bm * buf[i] + bk * (g[i] + wd * p[i]);
            buf[i] = b;
            p[i] -= lr * b;
        }
    }
}

/* decay = 1 - lr*wd, step = lr / (1-b1^t), rbc2 = 1/sqrt(1-b2^t) */
static void adamw_f32(int64_t n, float *restrict p, const float *restrict g, float *restrict m,
                      float *restrict v, const sq_adamw_cfg *c, double decay, double step, double rbc2)
{
    const float a1 = (float)(1.0 - c->beta1), b2 = (float)c->beta2, a2 = (float)(1.0 - c->beta2);
    const float eps = (float)c->eps, dec = (float)decay, st = (float)step, r2 = (float)rbc2;
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i];
        float mi = m[i] + a1 * (gi - m[i]);
        float vi = b2 * v[i] + a2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * dec - st * mi / (sqrtf(vi) * r2 + eps);
    }
}

static void adamw_f64(int64_t n, double *restrict p, const double *restrict g, double *restrict m,
                      double *restrict v, const sq_adamw_cfg *c, double decay, double step, double rbc2)
{
    const double a1 = 1.0 - c->beta1, b2 = c->beta2, a2 = 1.0 - c->beta2, eps = c->eps;
    for (int64_t i = 0; i < n; i++) {
        double gi = g[i];
        double mi = m[i] + a1 * (gi - m[i]);
        double vi = b2 * v[i] + a2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * decay - step * mi / (sqrt(vi) * rbc2 + eps);
    }
}

/* ---- step --------------------------------------------------------------- */

static int trainable(const sq_tensor *p) { return p->requires_grad && p->grad; }

/* Zeroed state on the parameter's device, charged to OPTIM. */
static sq_status new_state(sq_ctx *ctx, const sq_tensor *p, sq_tensor **slot)
{
    SQ_TRY(sq_tensor_empty_dev(ctx, sq_tensor_device(p), p->dtype, p->ndim, p->shape, SQ_MEM_OPTIM, slot));
    if (sq_tensor_device(p) == SQ_CPU) {
        memset((*slot)->storage->data, 0, (*slot)->storage->nbytes);
        return SQ_OK;
    }
    sq_status st = sq_tensor_fill_(ctx, *slot, 0.0);
    if (st != SQ_OK) {
        sq_tensor_release(*slot);
        *slot = NULL;
    }
    return st;
}

sq_status sq_optim_step(sq_ctx *ctx, sq_optim *opt)
{
    const char *name = opt->kind == SQ_OPTIM_SGD ? "sgd" : "adamw";
    for (int i = 0; i < opt->n; i++) { /* validate everything before touching anything */
        const sq_tensor *p = opt->params[i];
        if (!trainable(p)) continue;
        const sq_tensor *g = p->grad;
        char a[64], b[64];
        if (g->dtype != p->dtype)
            return sq_fail(ctx, SQ_ERR_STATE, "%s: parameter %d is %s but its gradient is %s", name, i + 1,
                           sq_dtype_name(p->dtype), sq_dtype_name(g->dtype));
        if (sq_tensor_numel(g) != sq_tensor_numel(p) || !sq_tensor_is_contiguous(g))
            return sq_fail(ctx, SQ_ERR_STATE, "%s: parameter %d (%s) has a gradient of shape %s%s", name,
                           i + 1, sq_shape_str(p, a, sizeof a), sq_shape_str(g, b, sizeof b),
                           sq_tensor_is_contiguous(g) ? "" : " that is not contiguous");
        if (g->storage->device != p->storage->device)
            return sq_fail(ctx, SQ_ERR_DEVICE, "%s: parameter %d is on %s but its gradient is on %s", name,
                           i + 1, sq_device_name(p->storage->device), sq_device_name(g->storage->device));
    }
    opt->calls++;
    for (int i = 0; i < opt->n; i++) {
        sq_tensor *p = opt->params[i];
        if (!trainable(p)) continue; /* frozen or no gradient: value, state, count untouched */
        int64_t n = sq_tensor_numel(p);
        void *pd = sq_tensor_data(p);
        const void *gd = sq_tensor_data(p->grad);
        if (opt->kind == SQ_OPTIM_SGD) {
            int first = 0;
            if (opt->sgd.momentum != 0 && !opt->state0[i]) {
                SQ_TRY(new_state(ctx, p, &opt->state0[i]));
                first = 1;
            }
            void *buf = opt->state0[i] ? sq_tensor_data(opt->state0[i]) : NULL;
            const sq_sgd_cfg *c = &opt->sgd;
            if (sq_tensor_device(p) == SQ_CUDA)
                SQ_TRY(sq_cuda_sgd_step(ctx, p->dtype, pd, buf, gd, n, c->lr, c->momentum, c->dampening,
                                        c->weight_decay, c->nesterov, first));
            else if (p->dtype == SQ_F32) sgd_f32(n, pd, gd, buf, first, &opt->sgd);
            else sgd_f64(n, pd, gd, buf, first, &opt->sgd);
        } else {
            if (!opt->state0[i]) SQ_TRY(new_state(ctx, p, &opt->state0[i]));
            if (!opt->state1[i]) SQ_TRY(new_state(ctx, p, &opt->state1[i]));
            const sq_adamw_cfg *c = &opt->adamw;
            double t = (double)(opt->steps[i] + 1);
            double decay = 1.0 - c->lr * c->weight_decay;
            double step = c->lr / (1.0 - pow(c->beta1, t));
            double rbc2 = 1.0 / sqrt(1.0 - pow(c->beta2, t));
            void *m = sq_tensor_data(opt->state0[i]), *v = sq_tensor_data(opt->state1[i]);
            if (sq_tensor_device(p) == SQ_CUDA)
                SQ_TRY(sq_cuda_adamw_step(ctx, p->dtype, pd, m, v, gd, n, c->lr, c->beta1, c->beta2, c->eps,
                                          c->weight_decay, opt->steps[i] + 1));
            else if (p->dtype == SQ_F32) adamw_f32(n, pd, gd, m, v, c, decay, step, rbc2);
            else adamw_f64(n, pd, gd, m, v, c, decay, step, rbc2);
        }
        opt->steps[i]++;
    }
    return SQ_OK;
}

void sq_optim_zero_grad(sq_optim *opt)
{
    for (int i = 0; i < opt->n; i++) {
        sq_tensor_release(opt->params[i]->grad);
        opt->params[i]->grad = NULL;
    }
}

double sq_optim_get_lr(const sq_optim *opt)
{
    return opt->kind == SQ_OPTIM_SGD ? opt->sgd.lr : opt->adamw.lr;
}

sq_status sq_optim_set_lr(sq_ctx *ctx, sq_optim *opt, double lr)
{
    if (!finite_nonneg(lr)) return sq_fail(ctx, SQ_ERR_ARG, "optim: lr %g must be finite and >= 0", lr);
    if (opt->kind == SQ_OPTIM_SGD) opt->sgd.lr = lr;
    else opt->adamw.lr = lr;
    return SQ_OK;
}

int64_t sq_optim_param_steps(const sq_optim *opt, int i)
{
    return i >= 0 && i < opt->n ? opt->steps[i] : 0;
}

int64_t sq_optim_state_bytes(const sq_optim *opt)
{
    int64_t s = 0;
    for (int i = 0; i < opt->n; i++) {
        if (opt->state0[i]) s += (int64_t)opt->state0[i]->storage->nbytes;
        if (opt->state1[i]) s += (int64_t)opt->state1[i]->storage->nbytes;
    }
    return s;
}
