/* ops_elementwise.c — broadcasting binary ops, scalar ops and unary
 * activations.  Backward passes call the same forward ops with grad mode off
 * (sq_backward switches it off), so each formula is written once. */
#include "sq_ops_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- a strided binary kernel over a broadcast shape ----------------------- */

static void strides_for(const sq_tensor *t, int nd, int64_t *st)
{
    for (int i = 0; i < nd; i++) {
        int j = i - (nd - t->ndim);
        st[i] = (j >= 0 && t->shape[j] != 1) ? t->stride[j] : 0;
    }
}

#define BIN_LOOP(T, EXPR)                                                                  \
    do {                                                                                   \
        T *o = sq_tensor_data(out);                                                        \
        const T *pa = (const T *)a->storage->data, *pb = (const T *)b->storage->data;      \
        if (flat) {                                                                        \
            pa += a->offset;                                                               \
            pb += b->offset;                                                               \
            for (int64_t i = 0; i < n; i++) {                                              \
                T x = pa[i], y = pb[i];                                                    \
                o[i] = (EXPR);                                                             \
            }                                                                              \
            break;                                                                         \
        }                                                                                  \
        int64_t idx[SQ_MAX_DIMS] = {0};                                                    \
        int64_t inner = nd ? out->shape[nd - 1] : 1;                                       \
        int64_t sai = nd ? sa[nd - 1] : 0, sbi = nd ? sb[nd - 1] : 0;                      \
        for (int64_t k = 0; k < n; k += inner) {                                           \
            int64_t oa = a->offset, ob = b->offset;                                        \
            for (int d = 0; d < nd - 1; d++) {                                             \
                oa += idx[d] * sa[d];                                                      \
                ob += idx[d] * sb[d];                                                      \
            }                                                                              \
            for (int64_t j = 0; j < inner; j++) {                                          \
                T x = pa[oa + j * sai], y = pb[ob + j * sbi];                              \
                o[k + j] = (EXPR);                                                         \
            }                                                                              \
            for (int d = nd - 2; d >= 0; d--) {                                            \
                if (++idx[d] < out->shape[d]) break;                                       \
                idx[d] = 0;                                                                \
            }                                                                              \
        }                                                                                  \
    } while (0)

#define BIN_DISPATCH(T)                                          \
    switch (op) {                                                \
    case SQ_BIN_ADD: BIN_LOOP(T, x + y); break;                  \
    case SQ_BIN_SUB: BIN_LOOP(T, x - y); break;                  \
    case SQ_BIN_MUL: BIN_LOOP(T, x * y); break;                  \
    case SQ_BIN_DIV: BIN_LOOP(T, x / y); break;                  \
    }

static const char *binop_name(sq_binop op)
{
    static const char *const n[] = {"add", "sub", "mul", "div"};
    return n[op];
}

static sq_status binary_forward(sq_ctx *ctx, sq_binop op, sq_tensor *a, sq_tensor *b, sq_tensor **res)
{
    int nd;
    int64_t shape[SQ_MAX_DIMS], sa[SQ_MAX_DIMS], sb[SQ_MAX_DIMS];
    SQ_TRY(sq_broadcast_shape(ctx, binop_name(op), a, b, &nd, shape));
    sq_tensor *out;
    SQ_TRY(sq_new_on(ctx, a, a->dtype, nd, shape, &out));
    int64_t n = sq_tensor_numel(out);
    int flat = sq_shape_equal(a, b) && sq_tensor_is_contiguous(a) && sq_tensor_is_contiguous(b);
    strides_for(a, nd, sa);
    strides_for(b, nd, sb);
    if (sq_on_cuda(a)) {
        sq_status st = sq_cuda_binary(ctx, op, a->dtype, sq_tensor_data(out), sq_tensor_data(a), sa,
                                      sq_tensor_data(b), sb, nd, shape);
        if (st != SQ_OK) {
            sq_tensor_release(out);
            return st;
        }
    } else if (n > 0) {
        if (a->dtype == SQ_F32) {
            BIN_DISPATCH(float)
        } else {
            BIN_DISPATCH(double)
        }
    }
    *res = out;
    return SQ_OK;
}

static sq_status binary_backward(sq_ctx *ctx, sq_node *node, sq_tensor *gout, sq_tensor **gin)
{
    sq_binop op = (sq_binop)node->iarg[0];
    sq_tensor *a = node->saved[0], *b = node->saved[1];
    int nda = node->in_ndim[0], ndb = node->in_ndim[1];
    const int64_t *sha = node->in_shape[0], *shb = node->in_shape[1];
    sq_tensor *t = NULL, *u = NULL;
    sq_status st = SQ_OK;
    if (node->need[0]) {
        switch (op) {
        case SQ_BIN_ADD: case SQ_BIN_SUB: t = gout; sq_tensor_retain(t); break;
        case SQ_BIN_MUL: SQ_CHECK(binary_forward(ctx, SQ_BIN_MUL, gout, b, &t)); break;
        case SQ_BIN_DIV: SQ_CHECK(binary_forward(ctx, SQ_BIN_DIV, gout, b, &t)); break;
        }
        SQ_CHECK(sq_ag_unbroadcast(ctx, t, nda, sha, &gin[0]));
        sq_tensor_release(t);
        t = NULL;
    }
    if (node->need[1]) {
        switch (op) {
        case SQ_BIN_ADD: t = gout; sq_tensor_retain(t); break;
        case SQ_BIN_SUB: SQ_CHECK(sq_scale_shift(ctx, gout, -1.0, 0.0, &t)); break;
        case SQ_BIN_MUL: SQ_CHECK(binary_forward(ctx, SQ_BIN_MUL, gout, a, &t)); break;
        case SQ_BIN_DIV: /* -g * a / b^2 */
            SQ_CHECK(binary_forward(ctx, SQ_BIN_MUL, gout, a, &u));
            SQ_CHECK(binary_forward(ctx, SQ_BIN_DIV, u, b, &t));
            sq_tensor_release(u);
            u = NULL;
            SQ_CHECK(binary_forward(ctx, SQ_BIN_DIV, t, b, &u));
            sq_tensor_release(t);
            t = NULL;
            SQ_CHECK(sq_scale_shift(ctx, u, -1.0, 0.0, &t));
            break;
        }
        SQ_CHECK(sq_ag_unbroadcast(ctx, t, ndb, shb, &gin[1]));
    }
done:
    sq_tensor_release(t);
    sq_tensor_release(u);
    return st;
}

sq_status sq_binary(sq_ctx *ctx, sq_binop op, sq_tensor *a, sq_tensor *b, sq_tensor **out)
{
    *out = NULL;
    const char *name = binop_name(op);
    SQ_TRY(sq_need_float(ctx, name, "argument #1", a));
    SQ_TRY(sq_need_float(ctx, name, "argument #2", b));
    SQ_TRY(sq_need_same_dtype(ctx, name, a, b));
    SQ_TRY(sq_need_same_device(ctx, name, "argument #1", a, "argument #2", b));
    SQ_TRY(binary_forward(ctx, op, a, b, out));
    sq_tensor *ins[2] = {a, b};
    if (!sq_ag_needs_grad(ctx, 2, ins)) return SQ_OK;
    sq_node *n;
    sq_status st = sq_ag_attach(ctx, *out, name, binary_backward, 2, ins, &n);
    if (st != SQ_OK) {
        sq_tensor_release(*out);
        *out = NULL;
        return st;
    }
    n->iarg[0] = op;
    /* mul: da needs b, db needs a; div: both need b, db needs a */
    int save_a = (op == SQ_BIN_MUL || op == SQ_BIN_DIV) && n->need[1];
    int save_b = (op == SQ_BIN_MUL && n->need[0]) || op == SQ_BIN_DIV;
    sq_node_save(n, save_a ? a : NULL);
    sq_node_save(n, save_b ? b : NULL);
    return SQ_OK;
}

sq_status sq_add(sq_ctx *ctx, sq_tensor *a, sq_tensor *b, sq_tensor **out) { return sq_binary(ctx, SQ_BIN_ADD, a, b, out); }
sq_status sq_sub(sq_ctx *ctx, sq_tensor *a, sq_tensor *b, sq_tensor **out) { return sq_binary(ctx, SQ_BIN_SUB, a, b, out); }
sq_status sq_mul(sq_ctx *ctx, sq_tensor *a, sq_tensor *b, sq_tensor **out) { return sq_binary(ctx, SQ_BIN_MUL, a, b, out); }
sq_status sq_div(sq_ctx *ctx, sq_tensor *a, sq_tensor *b, sq_tensor **out) { return sq_binary(ctx, SQ_BIN_DIV, a, b, out); }

/* ---- scalar ops ------------------------------------------------------------ */

#define MAP_LOOP(T, EXPR)                                        \
    do {                                                         \
        const T *src_ = sq_tensor_data(src);                     \
        T *o = sq_tensor_data(dst);                              \
        for (int64_t i = 0; i < n; i++) {                        \
            T x = src_[i];                                       \
            (void)x;                                             \
            o[i] = (EXPR);                                       \
        }                                                        \
    } while (0)

static sq_status scale_shift_backward(sq_ctx *ctx, sq_node *node, sq_tensor *gout, sq_tensor **gin)
{
    return sq_scale_shift(ctx, gout, node->darg[0], 0.0, &gin[0]);
}

sq_status sq_scale_shift(sq_ctx *ctx, sq_tensor *t, double mul, double add, sq_tensor **out)
{
    *out = NULL;
    SQ_TRY(sq_need_float(ctx, "scale_shift", "tensor", t));
    sq_tensor *src, *dst;
    SQ_TRY(sq_tensor_contiguous_raw(ctx, t, &src));
    sq_status st = sq_tensor_empty_like(ctx, t, &dst);
    if (st != SQ_OK) {
        sq_tensor_release(src);
        return st;
    }
    int64_t n = sq_tensor_numel(t);
    if (sq_on_cuda(t)) {
        st = sq_cuda_scale_shift(ctx, t->dtype, sq_tensor_data(dst), sq_tensor_data(src), n, mul, add);
    } else if (t->dtype == SQ_F32) {
        float m = (float)mul, a = (float)add;
        MAP_LOOP(float, x * m + a);
    } else {
        MAP_LOOP(double, x * mul + add);
    }
    sq_tensor_release(src);
    if (st != SQ_OK) {
        sq_tensor_release(dst);
        return st;
    }
    if (sq_ag_needs_grad(ctx, 1, &t)) {
        sq_node *node;
        st = sq_ag_attach(ctx, dst, "scale_shift", scale_shift_backward, 1, &t, &node);
        if (st != SQ_OK) {
            sq_tensor_release(dst);
            return st;
        }
        node->darg[0] = mul;
    }
    *out = dst;
    return SQ_OK;
}

static sq_status pow_backward(sq_ctx *ctx, sq_node *node, sq_tensor *gout, sq_tensor **gin)
{
    double p = node->darg[0];
    sq_tensor *x = node->saved[0], *d = NULL;
    if (sq_on_cuda(x)) { /* dx = dy * p * x^(p-1) in one kernel */
        sq_tensor *g = NULL;
        SQ_TRY(sq_tensor_contiguous_raw(ctx, gout, &g));
        sq_status st = sq_tensor_empty_like(ctx, x, &gin[0]);
        if (st == SQ_OK)
            st = sq_cuda_pow_scalar_bwd(ctx, x->dtype, sq_tensor_data(gin[0]), sq_tensor_data(g),
                                        sq_tensor_data(x), sq_tensor_numel(x), p);
        sq_tensor_release(g);
        return st;
    }
    sq_status st = sq_tensor_empty_like(ctx, x, &d);
    if (st != SQ_OK) return st;
    int64_t n = sq_tensor_numel(x);
    for (int64_t i = 0; i < n; i++) { /* d = p * x^(p-1) */
        double v = sq_tensor_get_flat(x, i);
        sq_tensor_set_flat(d, i, p * pow(v, p - 1.0));
    }
    st = sq_mul(ctx, gout, d, &gin[0]);
    sq_tensor_release(d);
    return st;
}

sq_status sq_pow_scalar(sq_ctx *ctx, sq_tensor *t, double p, sq_tensor **out)
{
    *out = NULL;
    SQ_TRY(sq_need_float(ctx, "pow", "tensor", t));
    sq_tensor *src, *dst;
    SQ_TRY(sq_tensor_contiguous_raw(ctx, t, &src));
    sq_status st = sq_tensor_empty_like(ctx, t, &dst);
    if (st != SQ_OK) {
        sq_tensor_release(src);
        return st;
    }
    int64_t n = sq_tensor_numel(t);
    if (sq_on_cuda(t)) {
        st = sq_cuda_pow_scalar(ctx, t->dtype, sq_tensor_data(dst), sq_tensor_data(src), n, p);
    } else if (t->dtype == SQ_F32) {
        float pf = (float)p;
        MAP_LOOP(float, powf(x, pf));
    } else {
        double pd = p;
        MAP_LOOP(double, pow(x, pd));
    }
    if (st == SQ_OK && sq_ag_needs_grad(ctx, 1, &t)) {
        sq_node *node;
        st = sq_ag_attach(ctx, dst, "pow", pow_backward, 1, &t, &node);
        if (st != SQ_OK) {
            sq_tensor_release(src);
            sq_tensor_release(dst);
            return st;
        }
        node->darg[0] = p;
        sq_node_save(node, src);
    }
    sq_tensor_release(src);
    if (st != SQ_OK) {
        sq_tensor_release(dst);
        return st;
    }
    *out = dst;
    return SQ_OK;
}

/* ---- unary activations -------------------------------------------------------- */

const char *sq_unop_name(sq_unop op)
{
    static const char *const n[] = {"neg", "exp", "log", "sqrt", "abs",
                                    "relu", "gelu", "sigmoid", "tanh"};
    return (unsigned)op < SQ_UN_COUNT ? n[op] : "?";
}

/* whether backward needs the output (1) or the input (0) */
static int saves_output(sq_unop op)
{
    return op == SQ_UN_EXP || op == SQ_UN_SQRT || op == SQ_UN_SIGMOID || op == SQ_UN_TANH;
}

#define GELU(T, x) ((T)0.5 * (x) * ((T)1 + erf##T##_((x) * (T)0.70710678118654752440)))
static inline float erffloat_(float x) { return erff(x); }
static inline double erfdouble_(double x) { return erf(x); }

#define UN_DISPATCH(T, EXPF, LOGF, SQRTF, FABSF, TANHF)                          \
    switch (op) {                                                                \
    case SQ_UN_NEG: MAP_LOOP(T, -x); break;                                      \
    case SQ_UN_EXP: MAP_LOOP(T, EXPF(x)); break;                                 \
    case SQ_UN_LOG: MAP_LOOP(T, LOGF(x)); break;                                 \
    case SQ_UN_SQRT: MAP_LOOP(T, SQRTF(x)); break;                               \
    case SQ_UN_ABS: MAP_LOOP(T, FABSF(x)); break;                                \
    case SQ_UN_RELU: MAP_LOOP(T, x > 0 ? x : (T)0); break;                       \
    case SQ_UN_GELU: MAP_LOOP(T, GELU(T, x)); break;                             \
    case SQ_UN_SIGMOID: MAP_LOOP(T, (T)1 / ((T)1 + EXPF(-x))); break;            \
    case SQ_UN_TANH: MAP_LOOP(T, TANHF(x)); break;                               \
    default: break;                                                              \
    }

/* local derivative d(out)/d(in) as a function of the saved value s */
#define DER_DISPATCH(T, EXPF)                                                                     \
    switch (op) {                                                                                 \
    case SQ_UN_NEG: MAP_LOOP(T, (T)-1); break;                                                    \
    case SQ_UN_EXP: MAP_LOOP(T, x); break;                                                        \
    case SQ_UN_LOG: MAP_LOOP(T, (T)1 / x); break;                                                 \
    case SQ_UN_SQRT: MAP_LOOP(T, (T)0.5 / x); break;                                              \
    case SQ_UN_ABS: MAP_LOOP(T, x > 0 ? (T)1 : x < 0 ? (T)-1 : (T)0); break;                      \
    case SQ_UN_RELU: MAP_LOOP(T, x > 0 ? (T)1 : (T)0); break;                                     \
    case SQ_UN_GELU:                                                                              \
        MAP_LOOP(T, (T)0.5 * ((T)1 + erf##T##_(x * (T)0.70710678118654752440)) +                  \
                        x * (T)0.39894228040143267794 * EXPF((T)-0.5 * x * x));                   \
        break;                                                                                    \
    case SQ_UN_SIGMOID: MAP_LOOP(T, x * ((T)1 - x)); break;                                       \
    case SQ_UN_TANH: MAP_LOOP(T, (T)1 - x * x); break;                                            \
    default: break;                                                                               \
    }

static sq_status unary_map(sq_ctx *ctx, sq_unop op, sq_tensor *t, int derivative, sq_tensor **out)
{
    sq_tensor *src, *dst;
    SQ_TRY(sq_tensor_contiguous_raw(ctx, t, &src));
    sq_status st = sq_tensor_empty_like(ctx, t, &dst);
    if (st != SQ_OK) {
        sq_tensor_release(src);
        return st;
    }
    int64_t n = sq_tensor_numel(t);
    if (sq_on_cuda(t)) { /* derivatives on the GPU go through sq_cuda_unary_bwd */
        st = derivative ? sq_fail(ctx, SQ_ERR_STATE, "%s: derivative map on the GPU", sq_unop_name(op))
                        : sq_cuda_unary(ctx, op, t->dtype, sq_tensor_data(dst), sq_tensor_data(src), n);
        sq_tensor_release(src);
        if (st != SQ_OK) {
            sq_tensor_release(dst);
            return st;
        }
        *out = dst;
        return SQ_OK;
    }
    if (t->dtype == SQ_F32) {
        if (derivative) {
            DER_DISPATCH(float, expf)
        } else {
            UN_DISPATCH(float, expf, logf, sqrtf, fabsf, tanhf)
        }
    } else {
        if (derivative) {
            DER_DISPATCH(double, exp)
        } else {
            UN_DISPATCH(double, exp, log, sqrt, fabs, tanh)
        }
    }
    sq_tensor_release(src);
    *out = dst;
    return SQ_OK;
}

static sq_status unary_backward(sq_ctx *ctx, sq_node *node, sq_tensor *gout, sq_tensor **gin)
{
    sq_unop op = (sq_unop)node->iarg[0];
    sq_tensor *d;
    if (op == SQ_UN_NEG) return sq_scale_shift(ctx, gout, -1.0, 0.0, &gin[0]);
    sq_tensor *s = node->saved[0];
    if (sq_on_cuda(s)) { /* dx = dy * f'(s) in one kernel */
        sq_tensor *g = NULL;
        SQ_TRY(sq_tensor_contiguous_raw(ctx, gout, &g));
        sq_status st = sq_tensor_empty_like(ctx, s, &gin[0]);
        if (st == SQ_OK)
            st = sq_cuda_unary_bwd(ctx, op, s->dtype, sq_tensor_data(gin[0]), sq_tensor_data(g),
                                   sq_tensor_data(s), sq_tensor_numel(s));
        sq_tensor_release(g);
        return st;
    }
    SQ_TRY(unary_map(ctx, op, s, 1, &d));
    sq_status st = binary_forward(ctx, SQ_BIN_MUL, gout, d, &gin[0]);
    sq_tensor_release(d);
    return st;
}

sq_status sq_unary(sq_ctx *ctx, sq_unop op, sq_tensor *t, sq_tensor **out)
{
    *out = NULL;
    if ((unsigned)op >= SQ_UN_COUNT) return sq_fail(ctx, SQ_ERR_ARG, "unary: unknown op %d", (int)op);
    SQ_TRY(sq_need_float(ctx, sq_unop_name(op), "tensor", t));
    SQ_TRY(unary_map(ctx, op, t, 0, out));
    if (!sq_ag_needs_grad(ctx, 1, &t)) return SQ_OK;
    sq_node *node;
    sq_status st = sq_ag_attach(ctx, *out, sq_unop_name(op), unary_backward, 1, &t, &node);
    if (st != SQ_OK) {
        sq_tensor_release(*out);
        *out = NULL;
        return st;
    }
    node->iarg[0] = op;
    if (op != SQ_UN_NEG) {
        if (saves_output(op)) {
            st = sq_node_save_output(ctx, node, *out);
        } else {
            sq_tensor *kc;
            st = sq_tensor_contiguous_raw(ctx, t, &kc);
            if (st == SQ_OK) {
                sq_node_save(node, kc);
                sq_tensor_release(kc);
            }
        }
        if (st != SQ_OK) {
            sq_tensor_release(*out);
            *out = NULL;
            return st;
        }
    }
    return SQ_OK;
}
