/* test_core.c — tensors, views, memory accounting, autograd graph mechanics,
 * and gradient checks of linear, matmul and the elementwise ops. */
#include "sq_gradcheck.h"
#include "sq_test.h"

static sq_status f_linear(sq_ctx *ctx, sq_tensor **in, void *arg, sq_tensor **out)
{
    (void)arg;
    return sq_linear(ctx, in[0], in[1], in[2], out);
}

TEST(linear_gradcheck)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 1);
    int64_t xs[3] = {2, 3, 5}, ws[2] = {4, 5}, bs[1] = {4};
    sq_tensor *in[3] = {sq_gc_input(&ctx, 3, xs), sq_gc_input(&ctx, 2, ws), sq_gc_input(&ctx, 1, bs)};
    double err = sq_gradcheck(&ctx, f_linear, 3, in, NULL, 1e-6);
    CHECK_MSG(err < 1e-7, "linear gradcheck error %g", err);
    for (int i = 0; i < 3; i++) sq_tensor_release(in[i]);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

static sq_status f_matmul(sq_ctx *ctx, sq_tensor **in, void *arg, sq_tensor **out)
{
    (void)arg;
    return sq_matmul(ctx, in[0], in[1], out);
}

TEST(matmul_gradcheck_2d_batched_shared)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 2);
    int64_t a2[2] = {3, 4}, b2[2] = {4, 5}, a3[3] = {2, 3, 4}, b3[3] = {2, 4, 5};
    struct { int na, nb; const int64_t *sa, *sb; } cases[3] = {
        {2, 2, a2, b2}, {3, 3, a3, b3}, {3, 2, a3, b2}};
    for (int c = 0; c < 3; c++) {
        sq_tensor *in[2] = {sq_gc_input(&ctx, cases[c].na, cases[c].sa),
                            sq_gc_input(&ctx, cases[c].nb, cases[c].sb)};
        double err = sq_gradcheck(&ctx, f_matmul, 2, in, NULL, 1e-6);
        CHECK_MSG(err < 1e-7, "matmul case %d gradcheck error %g", c, err);
        sq_tensor_release(in[0]);
        sq_tensor_release(in[1]);
    }
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

TEST(matmul_rejects_bad_shapes)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 3);
    int64_t a[2] = {3, 4}, b[2] = {5, 6};
    sq_tensor *ta, *tb, *tc = NULL;
    CHECK_OK(&ctx, sq_tensor_zeros(&ctx, SQ_F32, 2, a, &ta));
    CHECK_OK(&ctx, sq_tensor_zeros(&ctx, SQ_F32, 2, b, &tb));
    CHECK_FAIL(&ctx, SQ_ERR_SHAPE, "shapes 3x4 and 5x6 do not match", sq_matmul(&ctx, ta, tb, &tc));
    CHECK(tc == NULL);
    sq_tensor_release(ta);
    sq_tensor_release(tb);
}

static sq_status f_binop(sq_ctx *ctx, sq_tensor **in, void *arg, sq_tensor **out)
{
    return sq_binary(ctx, *(sq_binop *)arg, in[0], in[1], out);
}

TEST(binary_broadcast_gradcheck)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 4);
    int64_t sa[3] = {2, 3, 4}, sb[2] = {1, 4};
    for (int op = SQ_BIN_ADD; op <= SQ_BIN_DIV; op++) {
        sq_tensor *in[2] = {sq_gc_input(&ctx, 3, sa), sq_gc_input(&ctx, 2, sb)};
        if (op == SQ_BIN_DIV) /* keep the divisor away from 0 */
            for (int64_t i = 0; i < 4; i++)
                sq_tensor_set_flat(in[1], i, 1.5 + 0.25 * (double)i);
        sq_binop o = (sq_binop)op;
        double err = sq_gradcheck(&ctx, f_binop, 2, in, &o, 1e-6);
        CHECK_MSG(err < 1e-6, "binop %d gradcheck error %g", op, err);
        sq_tensor_release(in[0]);
        sq_tensor_release(in[1]);
    }
}

static sq_status f_unop(sq_ctx *ctx, sq_tensor **in, void *arg, sq_tensor **out)
{
    return sq_unary(ctx, *(sq_unop *)arg, in[0], out);
}

TEST(unary_gradcheck)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 5);
    int64_t s[2] = {3, 5};
    for (int op = 0; op < SQ_UN_COUNT; op++) {
        sq_tensor *in[1] = {sq_gc_input(&ctx, 2, s)};
        int64_t n = sq_tensor_numel(in[0]);
        for (int64_t i = 0; i < n; i++) { /* away from kinks at 0, positive for log/sqrt */
            double v = sq_tensor_get_flat(in[0], i);
            v = (v >= 0 ? 0.2 + v : -0.2 + v);
            if (op == SQ_UN_LOG || op == SQ_UN_SQRT) v = fabs(v) + 0.1;
            sq_tensor_set_flat(in[0], i, v);
        }
        sq_unop o = (sq_unop)op;
        double err = sq_gradcheck(&ctx, f_unop, 1, in, &o, 1e-6);
        CHECK_MSG(err < 1e-6, "%s gradcheck error %g", sq_unop_name(o), err);
        sq_tensor_release(in[0]);
    }
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

static sq_status f_views(sq_ctx *ctx, sq_tensor **in, void *arg, sq_tensor **out)
{
    (void)arg;
    sq_tensor *t = NULL, *n = NULL, *r = NULL, *e = NULL;
    int64_t rs[2] = {3, -1}, es[3] = {2, 3, 4};
    sq_status st;
    SQ_CHECK(sq_transpose(ctx, in[0], 0, 1, &t));     /* 4x3 -> 3x4 */
    SQ_CHECK(sq_narrow(ctx, t, 1, 1, 2, &n));        /* 3x2, non-contiguous */
    SQ_CHECK(sq_reshape(ctx, n, 2, rs, &r));         /* copies */
    SQ_CHECK(sq_reshape(ctx, r, 2, (int64_t[]){3, 2}, &e));
    sq_tensor_release(r);
    r = e;
    e = NULL;
    SQ_CHECK(sq_narrow(ctx, r, 1, 0, 1, &e));        /* 3x1 */
    sq_tensor_release(t);
    t = e;
    e = NULL;
    SQ_CHECK(sq_expand(ctx, t, 3, (int64_t[]){2, 3, 4}, &e));
    SQ_CHECK(sq_mul(ctx, e, in[1], out));
    (void)es;
done:
    sq_tensor_release(t);
    sq_tensor_release(n);
    sq_tensor_release(r);
    sq_tensor_release(e);
    return st;
}

TEST(views_gradcheck)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 6);
    int64_t s0[2] = {4, 3}, s1[3] = {2, 3, 4};
    sq_tensor *in[2] = {sq_gc_input(&ctx, 2, s0), sq_gc_input(&ctx, 3, s1)};
    double err = sq_gradcheck(&ctx, f_views, 2, in, NULL, 1e-6);
    CHECK_MSG(err < 1e-7, "views gradcheck error %g", err);
    sq_tensor_release(in[0]);
    sq_tensor_release(in[1]);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

TEST(views_share_storage_and_strides)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 7);
    sq_tensor *a, *t, *n;
    CHECK_OK(&ctx, sq_tensor_arange(&ctx, SQ_F32, 0, 12, 1, &a));
    sq_tensor *m;
    CHECK_OK(&ctx, sq_reshape(&ctx, a, 2, (int64_t[]){3, 4}, &m));
    CHECK_OK(&ctx, sq_transpose(&ctx, m, 0, 1, &t));
    CHECK(t->storage == a->storage);
    CHECK(!sq_tensor_is_contiguous(t));
    CHECK(t->shape[0] == 4 && t->shape[1] == 3 && t->stride[0] == 1 && t->stride[1] == 4);
    CHECK_NEAR(sq_tensor_get_flat(t, 1), 4.0, 0); /* t[0][1] = m[1][0] */
    CHECK_OK(&ctx, sq_narrow(&ctx, t, 0, 2, 2, &n));
    CHECK_NEAR(sq_tensor_get_flat(n, 0), 2.0, 0);
    CHECK_NEAR(sq_tensor_get_flat(n, 5), 11.0, 0);
    sq_tensor_set_flat(n, 0, 42);                   /* writes through to a */
    CHECK_NEAR(sq_tensor_get_flat(a, 2), 42.0, 0);
    sq_tensor *c;
    CHECK_OK(&ctx, sq_tensor_contiguous_raw(&ctx, n, &c));
    CHECK(c->storage != a->storage && sq_tensor_is_contiguous(c));
    CHECK_NEAR(sq_tensor_get_flat(c, 3), 3.0, 0);
    CHECK_NEAR(sq_tensor_get_flat(c, 4), 7.0, 0);
    sq_tensor *bad = NULL;
    CHECK_FAIL(&ctx, SQ_ERR_SHAPE, "cannot view", sq_reshape(&ctx, a, 2, (int64_t[]){5, -1}, &bad));
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "outside dim", sq_narrow(&ctx, a, 0, 10, 5, &bad));
    CHECK(bad == NULL);
    sq_tensor_release(c);
    sq_tensor_release(n);
    sq_tensor_release(t);
    sq_tensor_release(m);
    int64_t before = ctx.mem.total_cur[SQ_CPU];
    CHECK(before == 12 * 4);
    sq_tensor_release(a);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

TEST(memory_accounting_by_category)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 8);
    int64_t xs[2] = {8, 16}, ws[2] = {4, 16};
    sq_tensor *x, *w, *y, *h, *l;
    CHECK_OK(&ctx, sq_tensor_randn(&ctx, SQ_F32, 2, xs, 0, 1, &x));
    CHECK_OK(&ctx, sq_tensor_randn(&ctx, SQ_F32, 2, ws, 0, 1, &w));
    sq_storage_set_category(w->storage, SQ_MEM_PARAM);
    w->requires_grad = 1;
    CHECK(ctx.mem.cur[SQ_CPU][SQ_MEM_PARAM] == 4 * 16 * 4);
    CHECK(ctx.mem.cur[SQ_CPU][SQ_MEM_OTHER] == 8 * 16 * 4);
    CHECK_OK(&ctx, sq_linear(&ctx, x, w, NULL, &y));
    /* linear saves x for dW: x's bytes move to SAVED; W stays PARAM */
    CHECK(ctx.mem.cur[SQ_CPU][SQ_MEM_SAVED] == 8 * 16 * 4);
    CHECK(ctx.mem.cur[SQ_CPU][SQ_MEM_PARAM] == 4 * 16 * 4);
    CHECK_OK(&ctx, sq_unary(&ctx, SQ_UN_RELU, y, &h));
    CHECK(ctx.mem.cur[SQ_CPU][SQ_MEM_SAVED] == (8 * 16 + 8 * 4) * 4); /* relu saves y */
    CHECK_OK(&ctx, sq_sum(&ctx, h, SQ_ALL_DIMS, 0, &l));
    CHECK_OK(&ctx, sq_backward(&ctx, l, NULL));
    CHECK(ctx.mem.cur[SQ_CPU][SQ_MEM_SAVED] == 0);      /* freed as backward went */
    CHECK(ctx.mem.peak[SQ_CPU][SQ_MEM_SAVED] == (8 * 16 + 8 * 4) * 4);
    CHECK(ctx.mem.cur[SQ_CPU][SQ_MEM_GRAD] == 4 * 16 * 4);
    CHECK_FAIL(&ctx, SQ_ERR_STATE, "already used", sq_backward(&ctx, l, NULL));
    sq_mem_reset_peak(&ctx);
    CHECK(ctx.mem.peak[SQ_CPU][SQ_MEM_SAVED] == 0);
    sq_tensor_release(l);
    sq_tensor_release(h);
    sq_tensor_release(y);
    sq_tensor_release(x);
    sq_tensor_release(w);
    for (int c = 0; c < SQ_MEM_NCAT; c++) CHECK(ctx.mem.cur[SQ_CPU][c] == 0);
}

TEST(frozen_weight_skips_its_gemm)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 9);
    int64_t xs[2] = {8, 16}, ws[2] = {4, 16};
    sq_tensor *x, *w, *y, *l;
    CHECK_OK(&ctx, sq_tensor_randn(&ctx, SQ_F32, 2, xs, 0, 1, &x));
    CHECK_OK(&ctx, sq_tensor_randn(&ctx, SQ_F32, 2, ws, 0, 1, &w));
    x->requires_grad = 1;
    sq_storage_set_category(w->storage, SQ_MEM_PARAM);
    w->requires_grad = 0; /* frozen */
    CHECK_OK(&ctx, sq_linear(&ctx, x, w, NULL, &y));
    CHECK(ctx.mem.cur[SQ_CPU][SQ_MEM_SAVED] == 0); /* x is not even saved */
    CHECK_OK(&ctx, sq_sum(&ctx, y, SQ_ALL_DIMS, 0, &l));
    int64_t g0 = ctx.stats.gemm_calls, w0 = ctx.stats.weight_grad_gemms;
    CHECK_OK(&ctx, sq_backward(&ctx, l, NULL));
    CHECK(ctx.stats.gemm_calls - g0 == 1);      /* dx only */
    CHECK(ctx.stats.weight_grad_gemms == w0);
    CHECK(w->grad == NULL && x->grad != NULL);
    sq_tensor_release(l);
    sq_tensor_release(y);
    sq_tensor_release(x);
    sq_tensor_release(w);
}

TEST(rng_is_seeded)
{
    sq_ctx a, b;
    sq_ctx_init(&a, 123);
    sq_ctx_init(&b, 123);
    for (int i = 0; i < 10; i++) CHECK(sq_rng_next(&a.rng) == sq_rng_next(&b.rng));
    sq_ctx_init(&b, 124);
    CHECK(sq_rng_next(&a.rng) != sq_rng_next(&b.rng));
}

TEST(in_place_write_to_saved_tensor_is_refused)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 10);
    int64_t sh[1] = {2};
    sq_tensor *x, *y, *l;
    CHECK_OK(&ctx, sq_tensor_randn(&ctx, SQ_F64, 1, sh, 0, 1, &x));
    x->requires_grad = 1;
    CHECK_OK(&ctx, sq_unary(&ctx, SQ_UN_EXP, x, &y)); /* saves its output */
    CHECK_OK(&ctx, sq_sum(&ctx, y, SQ_ALL_DIMS, 0, &l));
    CHECK_OK(&ctx, sq_tensor_fill_(&ctx, y, 0.0));    /* would zero the gradient silently */
    CHECK_FAIL(&ctx, SQ_ERR_STATE, "modified in place", sq_backward(&ctx, l, NULL));
    CHECK(x->grad == NULL);
    sq_tensor_release(l);
    sq_tensor_release(y);
    sq_tensor_release(x);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

TEST(shapes_that_overflow_are_rejected)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 11);
    int64_t z[1] = {0}, big[2] = {(int64_t)1 << 32, (int64_t)1 << 32};
    sq_tensor *e, *v = NULL;
    CHECK_OK(&ctx, sq_tensor_zeros(&ctx, SQ_F32, 1, z, &e)); /* empty: no data pointer */
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "2^63", sq_reshape(&ctx, e, 2, big, &v));
    int64_t st[2] = {1, 1};
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "overflows", sq_view_raw(&ctx, e, 2, big, st, 0, &v));
    CHECK(v == NULL);
    sq_tensor_release(e);
}

SQ_TEST_MAIN_BEGIN
RUN(linear_gradcheck);
RUN(matmul_gradcheck_2d_batched_shared);
RUN(matmul_rejects_bad_shapes);
RUN(binary_broadcast_gradcheck);
RUN(unary_gradcheck);
RUN(views_gradcheck);
RUN(views_share_storage_and_strides);
RUN(memory_accounting_by_category);
RUN(frozen_weight_skips_its_gemm);
RUN(rng_is_seeded);
RUN(in_place_write_to_saved_tensor_is_refused);
RUN(shapes_that_overflow_are_rejected);
SQ_TEST_MAIN_END
