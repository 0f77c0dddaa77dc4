/* test_optim.c — SGD and AdamW against step-by-step references written from
 * PyTorch's update formulas (double precision, 3 steps), frozen parameters,
 * exact OPTIM memory accounting, argument checks, and a toy quadratic
 * trained through autograd. */
#include "sq_ops.h"
#include "sq_optim.h"
#include "sq_test.h"

#include <stdlib.h>

#define NP 5

/* The gradient fed at step k for element i: depends on the current value so
 * that a wrong update in step 1 shows up in steps 2 and 3. */
static double grad_of(double p, int i, int k) { return (0.5 + 0.3 * i) * p - 0.2 * i + 0.1 * k; }

static double init_of(int i) { return 1.0 - 0.4 * i; }

static sq_tensor *make_param(sq_ctx *ctx, sq_dtype dt)
{
    int64_t s[1] = {NP};
    sq_tensor *p = NULL;
    if (sq_tensor_empty_cat(ctx, dt, 1, s, SQ_MEM_PARAM, &p) != SQ_OK) return NULL;
    for (int i = 0; i < NP; i++) sq_tensor_set_flat(p, i, init_of(i));
    p->requires_grad = 1;
    return p;
}

/* Replaces p->grad by grad_of(p, ., k). */
static void set_grad(sq_ctx *ctx, sq_tensor *p, int k)
{
    sq_tensor_release(p->grad);
    p->grad = NULL;
    if (sq_tensor_empty_cat(ctx, p->dtype, p->ndim, p->shape, SQ_MEM_GRAD, &p->grad) != SQ_OK) return;
    for (int i = 0; i < NP; i++) sq_tensor_set_flat(p->grad, i, grad_of(sq_tensor_get_flat(p, i), i, k));
}

/* Reference SGD (torch.optim.SGD._single_tensor_sgd), one element, 3 steps. */
static void ref_sgd(const sq_sgd_cfg *c, double out[3][NP])
{
    for (int i = 0; i < NP; i++) {
        double p = init_of(i), buf = 0;
        for (int k = 0; k < 3; k++) {
            double d = grad_of(p, i, k);
            if (c->weight_decay != 0) d = d + c->weight_decay * p;
            if (c->momentum != 0) {
                if (k == 0) buf = d;
                else buf = c->momentum * buf + (1 - c->dampening) * d;
                if (c->nesterov) d = d + c->momentum * buf;
                else d = buf;
            }
            p = p - c->lr * d;
            out[k][i] = p;
        }
    }
}

/* Reference AdamW (torch.optim.AdamW, amsgrad=False), one element, 3 steps. */
static void ref_adamw(const sq_adamw_cfg *c, double out[3][NP])
{
    for (int i = 0; i < NP; i++) {
        double p = init_of(i), m = 0, v = 0;
        for (int k = 0; k < 3; k++) {
            double g = grad_of(p, i, k);
            int t = k + 1;
            p = p * (1 - c->lr * c->weight_decay);
            m = c->beta1 * m + (1 - c->beta1) * g;
            v = c->beta2 * v + (1 - c->beta2) * g * g;
            double bc1 = 1 - pow(c->beta1, t), bc2 = 1 - pow(c->beta2, t);
            double denom = sqrt(v) / sqrt(bc2) + c->eps;
            p = p - (c->lr / bc1) * m / denom;
            out[k][i] = p;
        }
    }
}

/* Runs 3 steps of opt on a fresh parameter and compares with ref. */
static void run3(sq_test_state *T_, sq_ctx *ctx, sq_dtype dt, const sq_sgd_cfg *sgd,
                 const sq_adamw_cfg *adam, const char *what)
{
    double ref[3][NP];
    if (sgd) ref_sgd(sgd, ref);
    else ref_adamw(adam, ref);
    sq_tensor *p = make_param(ctx, dt);
    sq_optim *o = NULL;
    CHECK_OK(ctx, sgd ? sq_optim_sgd_init(ctx, 1, &p, sgd, &o) : sq_optim_adamw_init(ctx, 1, &p, adam, &o));
    if (!o) return;
    double tol = dt == SQ_F64 ? 1e-13 : 2e-6;
    for (int k = 0; k < 3; k++) {
        set_grad(ctx, p, k);
        CHECK_OK(ctx, sq_optim_step(ctx, o));
        for (int i = 0; i < NP; i++) {
            double got = sq_tensor_get_flat(p, i);
            CHECK_MSG(fabs(got - ref[k][i]) <= tol * fmax(1, fabs(ref[k][i])),
                      "%s %s step %d elem %d: got %.15g want %.15g", what, sq_dtype_name(dt), k + 1, i,
                      got, ref[k][i]);
        }
    }
    CHECK(sq_optim_param_steps(o, 0) == 3);
    sq_optim_free(o);
    sq_tensor_release(p);
    CHECK(ctx->mem.total_cur[SQ_CPU] == 0);
}

TEST(sgd_matches_reference)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 1);
    struct { sq_sgd_cfg c; const char *name; } cases[] = {
        {{0.1, 0.0, 0.0, 0.0, 0}, "plain"},
        {{0.1, 0.0, 0.0, 0.05, 0}, "weight decay"},
        {{0.1, 0.9, 0.0, 0.0, 0}, "momentum"},
        {{0.05, 0.9, 0.0, 0.01, 1}, "nesterov + weight decay"},
        {{0.1, 0.8, 0.3, 0.02, 0}, "momentum + dampening + weight decay"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        run3(T_, &ctx, SQ_F64, &cases[c].c, NULL, cases[c].name);
        run3(T_, &ctx, SQ_F32, &cases[c].c, NULL, cases[c].name);
    }
}

TEST(adamw_matches_reference)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 2);
    struct { sq_adamw_cfg c; const char *name; } cases[] = {
        {{1e-3, 0.9, 0.999, 1e-8, 1e-2}, "defaults"},
        {{0.05, 0.8, 0.95, 1e-6, 0.1}, "strong weight decay"},
        {{0.01, 0.9, 0.999, 1e-8, 0.0}, "no weight decay"},
        {{0.02, 0.0, 0.5, 1e-3, 0.0}, "beta1 0"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        run3(T_, &ctx, SQ_F64, NULL, &cases[c].c, cases[c].name);
        run3(T_, &ctx, SQ_F32, NULL, &cases[c].c, cases[c].name);
    }
    sq_adamw_cfg d = sq_adamw_defaults();
    CHECK(d.lr == 1e-3 && d.beta1 == 0.9 && d.beta2 == 0.999 && d.eps == 1e-8 && d.weight_decay == 1e-2);
}

/* Numbers worked out by hand for p0 = 1 and loss p^2/2 (gradient = p), as a
 * check on the references above that does not share their code. */
TEST(hand_worked_numbers)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 3);
    int64_t s[1] = {1};
    const double mom[3] = {0.9, 0.72, 0.486};          /* lr 0.1, momentum 0.9 */
    const double nes[3] = {0.81, 0.5751, 0.327321};    /* lr 0.1, momentum 0.9, nesterov */
    for (int nesterov = 0; nesterov <= 1; nesterov++) {
        sq_tensor *p;
        CHECK_OK(&ctx, sq_tensor_full(&ctx, SQ_F64, 1, s, 1.0, &p));
        p->requires_grad = 1;
        sq_sgd_cfg c = {0.1, 0.9, 0.0, 0.0, nesterov};
        sq_optim *o;
        CHECK_OK(&ctx, sq_optim_sgd_init(&ctx, 1, &p, &c, &o));
        for (int k = 0; k < 3; k++) {
            CHECK_OK(&ctx, sq_tensor_clone(&ctx, p, &p->grad));
            CHECK_OK(&ctx, sq_optim_step(&ctx, o));
            sq_optim_zero_grad(o);
            CHECK_NEAR(sq_tensor_get_flat(p, 0), nesterov ? nes[k] : mom[k], 1e-14);
        }
        sq_optim_free(o);
        sq_tensor_release(p);
    }
    /* AdamW, eps 0: the first step moves by exactly lr after decay: 1*(1-0.1*0.1) - 0.1 */
    sq_tensor *p;
    CHECK_OK(&ctx, sq_tensor_full(&ctx, SQ_F64, 1, s, 1.0, &p));
    p->requires_grad = 1;
    sq_adamw_cfg a = {0.1, 0.9, 0.999, 0.0, 0.1};
    sq_optim *o;
    CHECK_OK(&ctx, sq_optim_adamw_init(&ctx, 1, &p, &a, &o));
    CHECK_OK(&ctx, sq_tensor_clone(&ctx, p, &p->grad));
    CHECK_OK(&ctx, sq_optim_step(&ctx, o));
    CHECK_NEAR(sq_tensor_get_flat(p, 0), 0.89, 1e-15);
    sq_optim_free(o);
    sq_tensor_release(p);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

static void snapshot(const sq_tensor *t, double *out)
{
    for (int64_t i = 0; i < sq_tensor_numel(t); i++) out[i] = sq_tensor_get_flat(t, i);
}

static int same(const sq_tensor *t, const double *v)
{
    for (int64_t i = 0; i < sq_tensor_numel(t); i++)
        if (sq_tensor_get_flat(t, i) != v[i]) return 0;
    return 1;
}

TEST(frozen_parameter_untouched)
{
    for (int kind = 0; kind < 2; kind++) {
        sq_ctx ctx;
        sq_ctx_init(&ctx, 4);
        sq_tensor *ps[3] = {make_param(&ctx, SQ_F32), make_param(&ctx, SQ_F64), make_param(&ctx, SQ_F32)};
        sq_optim *o;
        sq_sgd_cfg sc = {0.1, 0.9, 0.0, 0.01, 1};
        sq_adamw_cfg ac = sq_adamw_defaults();
        CHECK_OK(&ctx, kind ? sq_optim_adamw_init(&ctx, 3, ps, &ac, &o) : sq_optim_sgd_init(&ctx, 3, ps, &sc, &o));
        /* two steps for ps[0] and ps[1]; ps[2] never gets a gradient */
        for (int k = 0; k < 2; k++) {
            set_grad(&ctx, ps[0], k);
            set_grad(&ctx, ps[1], k);
            CHECK_OK(&ctx, sq_optim_step(&ctx, o));
        }
        CHECK(o->state0[2] == NULL && o->state1[2] == NULL && sq_optim_param_steps(o, 2) == 0);
        /* freeze ps[1] while it still holds a gradient */
        double pv[NP], s0[NP], s1[NP], p0[NP];
        snapshot(ps[1], pv);
        snapshot(o->state0[1], s0);
        if (kind) snapshot(o->state1[1], s1);
        snapshot(ps[0], p0);
        ps[1]->requires_grad = 0;
        set_grad(&ctx, ps[0], 2);
        set_grad(&ctx, ps[1], 2);
        CHECK_OK(&ctx, sq_optim_step(&ctx, o));
        CHECK(same(ps[1], pv));
        CHECK(same(o->state0[1], s0));
        if (kind) CHECK(same(o->state1[1], s1));
        CHECK(!same(ps[0], p0));
        CHECK(sq_optim_param_steps(o, 0) == 3);
        CHECK(sq_optim_param_steps(o, 1) == 2);
        CHECK(sq_optim_param_steps(o, 2) == 0);
        /* unfrozen, it resumes from its own count: step 3 of the reference */
        ps[1]->requires_grad = 1;
        sq_tensor_release(ps[0]->grad);
        ps[0]->grad = NULL;  /* no gradient: skipped as well */
        CHECK_OK(&ctx, sq_optim_step(&ctx, o));
        double ref[3][NP];
        if (kind) ref_adamw(&ac, ref);
        else ref_sgd(&sc, ref);
        for (int i = 0; i < NP; i++) CHECK_NEAR(sq_tensor_get_flat(ps[1], i), ref[2][i], 1e-13);
        CHECK(sq_optim_param_steps(o, 0) == 3 && sq_optim_param_steps(o, 1) == 3);
        sq_optim_free(o);
        for (int i = 0; i < 3; i++) sq_tensor_release(ps[i]);
        CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
    }
}

TEST(optim_memory_category_exact)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 5);
    int64_t s1[2] = {3, 4}, s2[1] = {5}, s3[1] = {7};
    sq_tensor *ps[3];
    CHECK_OK(&ctx, sq_tensor_zeros(&ctx, SQ_F32, 2, s1, &ps[0]));  /* 48 bytes */
    CHECK_OK(&ctx, sq_tensor_zeros(&ctx, SQ_F64, 1, s2, &ps[1]));  /* 40 bytes */
    CHECK_OK(&ctx, sq_tensor_zeros(&ctx, SQ_F32, 1, s3, &ps[2]));  /* 28 bytes, frozen */
    for (int i = 0; i < 3; i++) {
        sq_storage_set_category(ps[i]->storage, SQ_MEM_PARAM);
        ps[i]->requires_grad = i < 2;
    }
    const int64_t *cur = ctx.mem.cur[SQ_CPU];
    for (int kind = 0; kind < 3; kind++) { /* adamw, sgd+momentum, plain sgd */
        sq_optim *o;
        sq_adamw_cfg ac = sq_adamw_defaults();
        sq_sgd_cfg sc = {0.1, kind == 1 ? 0.9 : 0.0, 0, 0, 0};
        CHECK_OK(&ctx, kind == 0 ? sq_optim_adamw_init(&ctx, 3, ps, &ac, &o)
                                 : sq_optim_sgd_init(&ctx, 3, ps, &sc, &o));
        CHECK(cur[SQ_MEM_OPTIM] == 0); /* lazily allocated */
        for (int i = 0; i < 3; i++) {
            CHECK_OK(&ctx, sq_tensor_full(&ctx, ps[i]->dtype, ps[i]->ndim, ps[i]->shape, 0.5, &ps[i]->grad));
            sq_storage_set_category(ps[i]->grad->storage, SQ_MEM_GRAD);
        }
        CHECK(cur[SQ_MEM_GRAD] == 48 + 40 + 28);
        int64_t want = kind == 0 ? 2 * (48 + 40) : kind == 1 ? 48 + 40 : 0;
        for (int k = 0; k < 2; k++) {
            CHECK_OK(&ctx, sq_optim_step(&ctx, o));
            CHECK_MSG(cur[SQ_MEM_OPTIM] == want, "kind %d: OPTIM holds %lld bytes, want %lld", kind,
                      (long long)cur[SQ_MEM_OPTIM], (long long)want);
            CHECK(sq_optim_state_bytes(o) == want);
        }
        sq_optim_zero_grad(o);
        CHECK(cur[SQ_MEM_GRAD] == 0);
        for (int i = 0; i < 3; i++) CHECK(ps[i]->grad == NULL);
        sq_optim_free(o);
        CHECK(cur[SQ_MEM_OPTIM] == 0);
        CHECK(cur[SQ_MEM_PARAM] == 48 + 40 + 28);
    }
    for (int i = 0; i < 3; i++) sq_tensor_release(ps[i]);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

TEST(rejects_bad_settings_and_gradients)
{
    sq_ctx ctx;
    sq_ctx_init(&ctx, 6);
    sq_tensor *p = make_param(&ctx, SQ_F64), *q = make_param(&ctx, SQ_F64);
    sq_optim *o = NULL;
    sq_sgd_cfg bad_nes = {0.1, 0.0, 0.0, 0.0, 1};
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "nesterov needs momentum > 0", sq_optim_sgd_init(&ctx, 1, &p, &bad_nes, &o));
    sq_sgd_cfg bad_lr = {-1, 0, 0, 0, 0};
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "lr -1 must be", sq_optim_sgd_init(&ctx, 1, &p, &bad_lr, &o));
    sq_adamw_cfg bad_b = {0.1, 1.0, 0.999, 1e-8, 0};
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "beta1 1 must be in [0,1)", sq_optim_adamw_init(&ctx, 1, &p, &bad_b, &o));
    sq_tensor *dup[2] = {p, p};
    sq_sgd_cfg ok = sq_sgd_defaults(0.1);
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "parameter 2 is listed twice", sq_optim_sgd_init(&ctx, 2, dup, &ok, &o));
    int64_t s[1] = {3};
    sq_tensor *ip;
    CHECK_OK(&ctx, sq_tensor_zeros(&ctx, SQ_I64, 1, s, &ip));
    CHECK_FAIL(&ctx, SQ_ERR_DTYPE, "parameter 1 must be float32 or float64, got int64",
               sq_optim_sgd_init(&ctx, 1, &ip, &ok, &o));
    CHECK(o == NULL);
    /* a gradient of the wrong shape fails before any parameter moves */
    sq_tensor *pq[2] = {p, q};
    CHECK_OK(&ctx, sq_optim_sgd_init(&ctx, 2, pq, &ok, &o));
    set_grad(&ctx, p, 0);
    CHECK_OK(&ctx, sq_tensor_zeros(&ctx, SQ_F64, 1, s, &q->grad));
    double pv[NP];
    snapshot(p, pv);
    CHECK_FAIL(&ctx, SQ_ERR_STATE, "parameter 2 (5) has a gradient of shape 3", sq_optim_step(&ctx, o));
    CHECK(same(p, pv) && sq_optim_param_steps(o, 0) == 0);
    CHECK_FAIL(&ctx, SQ_ERR_ARG, "lr nan must be", sq_optim_set_lr(&ctx, o, NAN));
    CHECK_OK(&ctx, sq_optim_set_lr(&ctx, o, 0.25));
    CHECK(sq_optim_get_lr(o) == 0.25);
    sq_optim_free(o);
    sq_tensor_release(ip);
    sq_tensor_release(p);
    sq_tensor_release(q);
    CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
}

/* loss = 0.5 * sum(a * (x - c)^2) through autograd; every optimizer must
 * bring x to c. */
static sq_status quad_loss(sq_ctx *ctx, sq_tensor *x, sq_tensor *a, sq_tensor *c, sq_tensor **out)
{
    sq_tensor *d = NULL, *d2 = NULL, *w = NULL, *s = NULL;
    sq_status st;
    SQ_CHECK(sq_sub(ctx, x, c, &d));
    SQ_CHECK(sq_mul(ctx, d, d, &d2));
    SQ_CHECK(sq_mul(ctx, d2, a, &w));
    SQ_CHECK(sq_sum(ctx, w, SQ_ALL_DIMS, 0, &s));
    SQ_CHECK(sq_scale_shift(ctx, s, 0.5, 0.0, out));
done:
    sq_tensor_release(d);
    sq_tensor_release(d2);
    sq_tensor_release(w);
    sq_tensor_release(s);
    return st;
}

TEST(toy_quadratic_converges)
{
    for (int kind = 0; kind < 3; kind++) { /* sgd momentum, sgd nesterov, adamw */
        for (int dti = 0; dti < 2; dti++) {
            sq_dtype dt = dti ? SQ_F64 : SQ_F32;
            sq_ctx ctx;
            sq_ctx_init(&ctx, 7);
            int64_t s[1] = {8};
            sq_tensor *x, *a, *c, *loss = NULL;
            CHECK_OK(&ctx, sq_tensor_zeros(&ctx, dt, 1, s, &x));
            CHECK_OK(&ctx, sq_tensor_rand(&ctx, dt, 1, s, 0.5, 5.0, &a));
            CHECK_OK(&ctx, sq_tensor_rand(&ctx, dt, 1, s, -2.0, 2.0, &c));
            x->requires_grad = 1;
            sq_optim *o;
            sq_sgd_cfg sc = {0.1, 0.9, 0.0, 0.0, kind == 1};
            sq_adamw_cfg ac = {0.1, 0.9, 0.999, 1e-8, 0.0};
            CHECK_OK(&ctx, kind < 2 ? sq_optim_sgd_init(&ctx, 1, &x, &sc, &o)
                                    : sq_optim_adamw_init(&ctx, 1, &x, &ac, &o));
            const int N = 400;
            double first = 0, last = 0;
            for (int k = 0; k < N; k++) {
                if (kind == 2) /* Adam needs a decaying lr to settle on a quadratic */
                    CHECK_OK(&ctx, sq_optim_set_lr(&ctx, o, 0.1 * (1.0 - (double)k / N) + 1e-4));
                CHECK_OK(&ctx, quad_loss(&ctx, x, a, c, &loss));
                if (k == 0) first = sq_tensor_get_flat(loss, 0);
                last = sq_tensor_get_flat(loss, 0);
                CHECK_OK(&ctx, sq_backward(&ctx, loss, NULL));
                sq_tensor_release(loss);
                CHECK_OK(&ctx, sq_optim_step(&ctx, o));
                sq_optim_zero_grad(o);
            }
            double worst = 0;
            for (int i = 0; i < 8; i++)
                worst = fmax(worst, fabs(sq_tensor_get_flat(x, i) - sq_tensor_get_flat(c, i)));
            CHECK_MSG(worst < 1e-3, "kind %d %s: |x - c| = %g after %d steps (loss %g -> %g)", kind,
                      sq_dtype_name(dt), worst, N, first, last);
            CHECK(sq_optim_param_steps(o, 0) == N);
            sq_optim_free(o);
            sq_tensor_release(x);
            sq_tensor_release(a);
            sq_tensor_release(c);
            CHECK(ctx.mem.total_cur[SQ_CPU] == 0);
        }
    }
}

SQ_TEST_MAIN_BEGIN
    RUN(sgd_matches_reference);
    RUN(adamw_matches_reference);
    RUN(hand_worked_numbers);
    RUN(frozen_parameter_untouched);
    RUN(optim_memory_category_exact);
    RUN(rejects_bad_settings_and_gradients);
    RUN(toy_quadratic_converges);
SQ_TEST_MAIN_END
