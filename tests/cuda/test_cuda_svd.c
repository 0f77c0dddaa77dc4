/* test_cuda_svd.c — the SVD on the GPU (cuSOLVER, kernels/cuda/sq_cuda_linalg.h,
 * reached through sq_svd for a matrix on the GPU) against the CPU's LAPACK
 * result of the same matrix, dtype and rank.
 *
 * For every shape (odd, wide, tall, square, a single row or column, rank
 * deficient) x dtype x driver (auto = gesvd with a gesvdj fallback, gesvdj
 * only, gesvd only) on fresh random inputs:
 *   singular values  ||S_gpu - S_cpu|| / ||S_cpu||
 *   reconstruction   ||W - U diag(S) Vt|| / ||W||      (GPU factors, float64 sums)
 *   orthonormality   max |UᵀU - I|, max |Vt Vtᵀ - I|    (columns / rows with S > 0)
 *   vectors          1 - |<u_gpu, u_cpu>| and the same for v, per singular
 *                    vector separated from its neighbours by a relative gap
 *                    > 1e-3 (otherwise only the subspace is defined)
 * plus a truncated rank (factors equal to the leading part), a
 * non-contiguous (transposed) input, NaN and Inf inputs (SQ_ERR_NUMERIC
 * naming the entry, no factors), forced non-convergence (fallback, and the
 * error when every driver fails) and the GPU memory accounting back to zero.
 * Tolerances: float64 1e-10, float32 5e-5, float32 gesvdj 3e-4 (Jacobi's
 * float32 error grows about as n*eps: 5e-5 at 200x200 on the H100);
 * orthonormality 10x those; vectors 1e-8 / 1e-3, since a vector's error
 * grows as 1/gap.
 *
 * SQ_SVD_TIME_N=n (environment): instead of the checks, time an n x n
 * float32 SVD on the CPU (LAPACK) and on the GPU (each driver) and print
 * "time" lines (experiments/bench/lrd_staircase.sh runs it with n = 4096).
 *
 * Exit codes: 0 all passed, 1 a failure, 77 no usable GPU (ctest: skipped). */
#include "cuda/sq_cuda.h"
#include "sq_device.h"
#include "sq_linalg.h"
#include "sq_proc.h"
#include "sq_tensor.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_test.h"

static const char *drv_name(sq_svd_driver d)
{
    return d == SQ_SVD_GESDD ? "gesvdj" : sq_svd_driver_name(d); /* on the GPU gesdd's slot is gesvdj */
}

static double tol_of(sq_dtype dt, sq_svd_driver d)
{
    return dt == SQ_F32 ? (d == SQ_SVD_GESDD ? 3e-4 : 5e-5) : 1e-10;
}
static double vtol_of(sq_dtype dt) { return dt == SQ_F32 ? 1e-3 : 1e-8; }

/* A CPU copy (new reference), or NULL. */
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

/* W (M,K) of dt on the CPU: standard normal, or of rank `rank` (> 0) as the
 * product of two normal factors. */
static sq_status make_w(tc *t, sq_dtype dt, int64_t M, int64_t K, int64_t rank, sq_tensor **out)
{
    int64_t sh[2] = {M, K};
    if (rank <= 0) return sq_tensor_randn(&t->ctx, dt, 2, sh, 0.0, 1.0, out);
    sq_tensor *a = NULL, *b = NULL;
    int64_t sa[2] = {M, rank}, sb[2] = {rank, K};
    sq_status st = sq_tensor_randn(&t->ctx, SQ_F64, 2, sa, 0.0, 1.0, &a);
    if (st == SQ_OK) st = sq_tensor_randn(&t->ctx, SQ_F64, 2, sb, 0.0, 1.0, &b);
    if (st == SQ_OK) st = sq_tensor_empty(&t->ctx, dt, 2, sh, out);
    if (st == SQ_OK) {
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < K; j++) {
                double v = 0;
                for (int64_t r = 0; r < rank; r++)
                    v += sq_tensor_get_flat(a, i * rank + r) * sq_tensor_get_flat(b, r * K + j);
                sq_tensor_set_flat(*out, i * K + j, v);
            }
    }
    sq_tensor_release(a);
    sq_tensor_release(b);
    return st;
}

typedef struct {
    double s_err, recon, orth_u, orth_v, vec_u, vec_v;
    int n_vec;
} cmp;

/* Compares GPU factors (copied to the CPU) with the CPU's. W: CPU (M,K). */
static int compare(tc *t, sq_tensor *W, sq_tensor *Ug, sq_tensor *Sg, sq_tensor *Vtg, sq_tensor *Uc,
                   sq_tensor *Sc, sq_tensor *Vtc, cmp *c)
{
    memset(c, 0, sizeof *c);
    sq_tensor *U = host(t, Ug), *S = host(t, Sg), *Vt = host(t, Vtg);
    int ok = U && S && Vt;
    if (!ok) goto out;
    int64_t M = W->shape[0], K = W->shape[1], r = S->shape[0];
    ok = U->shape[0] == M && U->shape[1] == r && Vt->shape[0] == r && Vt->shape[1] == K &&
         Sc->shape[0] == r;
    if (!ok) goto out;
    double num = 0, den = 0;
    for (int64_t i = 0; i < r; i++) {
        double d = sq_tensor_get_flat(S, i) - sq_tensor_get_flat(Sc, i);
        num += d * d;
        den += sq_tensor_get_flat(Sc, i) * sq_tensor_get_flat(Sc, i);
    }
    c->s_err = den > 0 ? sqrt(num / den) : sqrt(num);
    /* reconstruction against W only when the factors are complete */
    int64_t k = M < K ? M : K;
    if (r == k) {
        num = den = 0;
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < K; j++) {
                double v = 0;
                for (int64_t q = 0; q < r; q++)
                    v += sq_tensor_get_flat(U, i * r + q) * sq_tensor_get_flat(S, q) *
                         sq_tensor_get_flat(Vt, q * K + j);
                double w = sq_tensor_get_flat(W, i * K + j);
                num += (v - w) * (v - w);
                den += w * w;
            }
        c->recon = den > 0 ? sqrt(num / den) : sqrt(num);
    } else {
        c->recon = -1;
    }
    /* orthonormality over the singular vectors of non-negligible S */
    double s0 = sq_tensor_get_flat(S, 0), cut = s0 * (S->dtype == SQ_F32 ? 1e-4 : 1e-10);
    for (int64_t a = 0; a < r; a++)
        for (int64_t b = a; b < r; b++) {
            if (sq_tensor_get_flat(S, a) <= cut || sq_tensor_get_flat(S, b) <= cut) continue;
            double du = 0, dv = 0;
            for (int64_t i = 0; i < M; i++) du += sq_tensor_get_flat(U, i * r + a) * sq_tensor_get_flat(U, i * r + b);
            for (int64_t j = 0; j < K; j++) dv += sq_tensor_get_flat(Vt, a * K + j) * sq_tensor_get_flat(Vt, b * K + j);
            double e = a == b ? 1.0 : 0.0;
            if (fabs(du - e) > c->orth_u) c->orth_u = fabs(du - e);
            if (fabs(dv - e) > c->orth_v) c->orth_v = fabs(dv - e);
        }
    /* the vectors themselves, up to sign, where they are defined (separated S) */
    for (int64_t a = 0; a < r; a++) {
        double sa = sq_tensor_get_flat(Sc, a);
        if (sa <= cut) continue;
        double gap = 1e300;
        if (a > 0) gap = fmin(gap, sq_tensor_get_flat(Sc, a - 1) - sa);
        if (a + 1 < r) gap = fmin(gap, sa - sq_tensor_get_flat(Sc, a + 1));
        if (a + 1 == k && k < (M > K ? M : K)) gap = fmin(gap, sa); /* next one is 0 */
        if (gap / s0 < 1e-3) continue;
        double du = 0, dv = 0;
        for (int64_t i = 0; i < M; i++) du += sq_tensor_get_flat(U, i * r + a) * sq_tensor_get_flat(Uc, i * r + a);
        for (int64_t j = 0; j < K; j++) dv += sq_tensor_get_flat(Vt, a * K + j) * sq_tensor_get_flat(Vtc, a * K + j);
        c->vec_u = fmax(c->vec_u, 1 - fabs(du));
        c->vec_v = fmax(c->vec_v, 1 - fabs(dv));
        c->n_vec++;
    }
out:
    sq_tensor_release(U);
    sq_tensor_release(S);
    sq_tensor_release(Vt);
    return ok;
}

/* One shape x dtype x driver [x rank] [transposed input]. */
static void check_svd(tc *t, sq_dtype dt, int64_t M, int64_t K, int64_t true_rank, sq_svd_driver drv,
                      int64_t rank, int transposed)
{
    sq_tensor *W = NULL, *Wd = NULL, *Wsrc = NULL, *Wv = NULL, *Uc = NULL, *Sc = NULL, *Vtc = NULL;
    sq_tensor *Ug = NULL, *Sg = NULL, *Vtg = NULL;
    char tag[160];
    snprintf(tag, sizeof tag, "svd %-7s %4lldx%-4lld %s%s rank %lld%s", drv_name(drv), (long long)M,
             (long long)K, sq_dtype_name(dt), true_rank > 0 ? " (rank-deficient)" : "",
             (long long)(rank ? rank : (M < K ? M : K)), transposed ? " transposed view" : "");
    sq_svd_opts o = {drv, 0};
    sq_svd_info gi, ci;
    if (!transposed) {
        MUST(t, make_w(t, dt, M, K, true_rank, &W));
        MUST(t, sq_tensor_to_device(&t->ctx, W, SQ_CUDA, &Wd));
        Wv = Wd;
        sq_tensor_retain(Wv);
    } else {
        /* the GPU sees a non-contiguous view: the transpose of a (K,M) matrix */
        MUST(t, make_w(t, dt, K, M, true_rank, &Wsrc));
        MUST(t, sq_tensor_to_device(&t->ctx, Wsrc, SQ_CUDA, &Wd));
        int64_t sh[2] = {M, K}, str[2] = {1, M};
        MUST(t, sq_view_raw(&t->ctx, Wd, 2, sh, str, Wd->offset, &Wv));
        MUST(t, sq_tensor_clone(&t->ctx, Wv, &W)); /* contiguous on the GPU ... */
        sq_tensor *Wh = host(t, W);                /* ... then on the CPU: the reference input */
        sq_tensor_release(W);
        W = Wh;
        if (!W) MUST(t, SQ_ERR_DEVICE);
    }
    MUST(t, sq_svd(&t->ctx, W, rank, &o, &Uc, &Sc, &Vtc, &ci));
    MUST(t, sq_svd(&t->ctx, Wv, rank, &o, &Ug, &Sg, &Vtg, &gi));
    int on_gpu = sq_tensor_device(Ug) == SQ_CUDA && sq_tensor_device(Sg) == SQ_CUDA &&
                 sq_tensor_device(Vtg) == SQ_CUDA;
    cmp c;
    int shapes_ok = compare(t, W, Ug, Sg, Vtg, Uc, Sc, Vtc, &c);
    double tol = tol_of(dt, drv), vtol = vtol_of(dt);
    int ok = on_gpu && shapes_ok && c.s_err <= tol && c.recon <= tol && c.orth_u <= 10 * tol &&
             c.orth_v <= 10 * tol && c.vec_u <= vtol && c.vec_v <= vtol;
    /* on the GPU gesdd's slot is gesvdj; auto is gesvd unless it failed to converge */
    int driver_ok = drv == SQ_SVD_GESDD ? gi.used == SQ_SVD_GESDD
                                        : gi.used == SQ_SVD_GESVD && !gi.fell_back;
    char recon[32];
    if (c.recon < 0) snprintf(recon, sizeof recon, "n/a");
    else snprintf(recon, sizeof recon, "%.1e", c.recon);
    report(t, ok && driver_ok,
           "%-62s S %.1e  recon %s  orth %.1e/%.1e  vec %.1e/%.1e (%d)  used %s%s%s", tag, c.s_err,
           recon, c.orth_u, c.orth_v, c.vec_u, c.vec_v, c.n_vec,
           gi.used == SQ_SVD_GESVD ? "gesvd" : "gesvdj", gi.fell_back ? " (fell back)" : "",
           on_gpu ? "" : " FACTORS NOT ON THE GPU");
out:
    sq_tensor_release(W);
    sq_tensor_release(Wd);
    sq_tensor_release(Wsrc);
    sq_tensor_release(Wv);
    sq_tensor_release(Uc);
    sq_tensor_release(Sc);
    sq_tensor_release(Vtc);
    sq_tensor_release(Ug);
    sq_tensor_release(Sg);
    sq_tensor_release(Vtg);
}

/* A NaN / Inf entry: SQ_ERR_NUMERIC naming it; no factors. */
static void check_nonfinite(tc *t, sq_dtype dt, double bad, const char *name)
{
    sq_tensor *W = NULL, *Wd = NULL, *U = NULL, *S = NULL, *Vt = NULL;
    int64_t sh[2] = {9, 13};
    MUST(t, sq_tensor_randn(&t->ctx, dt, 2, sh, 0.0, 1.0, &W));
    sq_tensor_set_flat(W, 3 * 13 + 5, bad);
    sq_tensor_set_flat(W, 7 * 13 + 1, bad); /* a later one: the first is named */
    MUST(t, sq_tensor_to_device(&t->ctx, W, SQ_CUDA, &Wd));
    for (int d = 0; d < 3; d++) {
        sq_svd_opts o = {(sq_svd_driver)d, 0};
        sq_status st = sq_svd(&t->ctx, Wd, 0, &o, &U, &S, &Vt, NULL);
        char want[64];
        snprintf(want, sizeof want, "%s at [3,5]", name);
        int ok = st == SQ_ERR_NUMERIC && strstr(t->ctx.err, want) && !U && !S && !Vt;
        report(t, ok, "%s input, %s, %s -> %s: %s", name, sq_dtype_name(dt), drv_name(o.driver),
               sq_status_name(st), t->ctx.err);
        sq_tensor_release(U);
        sq_tensor_release(S);
        sq_tensor_release(Vt);
        U = S = Vt = NULL;
    }
out:
    sq_tensor_release(W);
    sq_tensor_release(Wd);
}

/* Forced non-convergence: the fallback, and the errors. */
static void check_fake_failures(tc *t)
{
    sq_tensor *W = NULL, *Wd = NULL, *U = NULL, *S = NULL, *Vt = NULL, *Uc = NULL, *Sc = NULL,
              *Vtc = NULL;
    int64_t sh[2] = {31, 47};
    MUST(t, sq_tensor_randn(&t->ctx, SQ_F64, 2, sh, 0.0, 1.0, &W));
    MUST(t, sq_tensor_to_device(&t->ctx, W, SQ_CUDA, &Wd));
    MUST(t, sq_svd(&t->ctx, W, 0, NULL, &Uc, &Sc, &Vtc, NULL));
    {
        sq_svd_opts o = {SQ_SVD_AUTO, SQ_SVD_FAKE_GESVD_FAIL};
        sq_svd_info inf;
        sq_status st = sq_svd(&t->ctx, Wd, 0, &o, &U, &S, &Vt, &inf);
        cmp c;
        int ok = st == SQ_OK && inf.used == SQ_SVD_GESDD && inf.fell_back &&
                 compare(t, W, U, S, Vt, Uc, Sc, Vtc, &c) && c.s_err < 1e-10 && c.recon < 1e-10;
        report(t, ok, "auto, gesvd forced to fail -> gesvdj fallback (%s, fell_back %d, gesvdj info %d)",
               sq_status_name(st), inf.fell_back, inf.gesdd_info);
        sq_tensor_release(U);
        sq_tensor_release(S);
        sq_tensor_release(Vt);
        U = S = Vt = NULL;
    }
    {
        sq_svd_opts o = {SQ_SVD_AUTO, SQ_SVD_FAKE_GESDD_FAIL | SQ_SVD_FAKE_GESVD_FAIL};
        sq_status st = sq_svd(&t->ctx, Wd, 0, &o, &U, &S, &Vt, NULL);
        int ok = st == SQ_ERR_NUMERIC && strstr(t->ctx.err, "gesvd and gesvdj did not converge on 31x47") &&
                 !U && !S && !Vt;
        report(t, ok, "auto, both drivers forced to fail -> %s: %s", sq_status_name(st), t->ctx.err);
    }
    {
        sq_svd_opts o = {SQ_SVD_GESDD, SQ_SVD_FAKE_GESDD_FAIL};
        sq_status st = sq_svd(&t->ctx, Wd, 0, &o, &U, &S, &Vt, NULL);
        int ok = st == SQ_ERR_NUMERIC && strstr(t->ctx.err, "gesvdj did not converge on 31x47") && !U;
        report(t, ok, "gesvdj only, forced to fail -> %s: %s", sq_status_name(st), t->ctx.err);
    }
    {
        sq_svd_opts o = {SQ_SVD_GESVD, SQ_SVD_FAKE_GESVD_FAIL};
        sq_status st = sq_svd(&t->ctx, Wd, 0, &o, &U, &S, &Vt, NULL);
        int ok = st == SQ_ERR_NUMERIC && strstr(t->ctx.err, "gesvd did not converge on 31x47") && !U;
        report(t, ok, "gesvd only, forced to fail -> %s: %s", sq_status_name(st), t->ctx.err);
    }
    {
        sq_status st = sq_svd(&t->ctx, Wd, 48, NULL, &U, &S, &Vt, NULL);
        report(t, st == SQ_ERR_ARG && !U, "rank 48 on the GPU -> %s: %s", sq_status_name(st), t->ctx.err);
    }
out:
    sq_tensor_release(U);
    sq_tensor_release(S);
    sq_tensor_release(Vt);
    sq_tensor_release(Uc);
    sq_tensor_release(Sc);
    sq_tensor_release(Vtc);
    sq_tensor_release(W);
    sq_tensor_release(Wd);
}

/* SQ_SVD_TIME_N: n x n float32 on the GPU (each driver) and on the CPU. */
static void time_svd(tc *t, int64_t n)
{
    sq_tensor *W = NULL, *Wd = NULL, *U = NULL, *S = NULL, *Vt = NULL, *Scpu = NULL;
    int64_t sh[2] = {n, n};
    MUST(t, sq_tensor_randn(&t->ctx, SQ_F32, 2, sh, 0.0, 1.0, &W));
    MUST(t, sq_tensor_to_device(&t->ctx, W, SQ_CUDA, &Wd));
    for (int d = -1; d < 3; d++) { /* -1: the CPU (LAPACK gesdd) */
        sq_svd_opts o = {d < 0 ? SQ_SVD_AUTO : (sq_svd_driver)d, 0};
        sq_svd_info inf;
        MUST(t, sq_cuda_sync(&t->ctx));
        double t0 = sq_proc_monotonic();
        sq_status st = sq_svd(&t->ctx, d < 0 ? W : Wd, 0, &o, &U, &S, &Vt, &inf);
        double dt = sq_proc_monotonic() - t0;
        double s0 = 0, serr = -1, s0err = -1;
        if (st == SQ_OK) {
            sq_tensor *Sh = host(t, S);
            s0 = Sh ? sq_tensor_get_flat(Sh, 0) : 0;
            if (d < 0) {
                Scpu = Sh;
                Sh = NULL;
            } else if (Sh && Scpu) { /* against LAPACK's singular values */
                double num = 0, den = 0;
                for (int64_t i = 0; i < n; i++) {
                    double a = sq_tensor_get_flat(Sh, i), b = sq_tensor_get_flat(Scpu, i);
                    num += (a - b) * (a - b);
                    den += b * b;
                }
                serr = sqrt(num / den);
                s0err = fabs(s0 - sq_tensor_get_flat(Scpu, 0)) / sq_tensor_get_flat(Scpu, 0);
            }
            sq_tensor_release(Sh);
        }
        printf("time svd %lldx%lld float32 %-6s %-13s %8.3f s  (%s; used %s%s; S[0] %.4f; "
               "vs LAPACK: ||dS||/||S|| %.1e, |dS[0]|/S[0] %.1e)\n",
               (long long)n, (long long)n, d < 0 ? "cpu" : "cuda",
               d < 0 ? "lapack auto" : drv_name(o.driver), dt, sq_status_name(st),
               d < 0 ? sq_svd_driver_name(inf.used) : (inf.used == SQ_SVD_GESVD ? "gesvd" : "gesvdj"),
               inf.fell_back ? ", fell back" : "", s0, serr, s0err);
        fflush(stdout);
        sq_tensor_release(U);
        sq_tensor_release(S);
        sq_tensor_release(Vt);
        U = S = Vt = NULL;
    }
out:
    sq_tensor_release(Scpu);
    sq_tensor_release(W);
    sq_tensor_release(Wd);
}

int main(void)
{
    tc T;
    memset(&T, 0, sizeof T);
    tc *t = &T;
    if (tc_open_gpu(t, 20261124) != 0) return 77;
    const char *tn = getenv("SQ_SVD_TIME_N");
    if (tn && atoll(tn) > 0) {
        time_svd(t, atoll(tn));
        sq_device_release_all(&t->ctx);
        printf("%d passed, %d failed\n", t->passed, t->failed);
        return t->failed ? 1 : 0;
    }
    static const int64_t shapes[][3] = {
        {37, 53, 0}, {53, 37, 0}, {129, 65, 0}, {65, 129, 0}, {200, 200, 0}, {1, 17, 0},
        {17, 1, 0},  {1, 1, 0},   {301, 97, 0}, {40, 30, 5},  {30, 70, 7},
    };
    for (int d = 0; d < 2; d++) {
        sq_dtype dt = d ? SQ_F32 : SQ_F64;
        printf("== %s\n", sq_dtype_name(dt));
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
            for (int drv = 0; drv < 3; drv++)
                check_svd(t, dt, shapes[i][0], shapes[i][1], shapes[i][2], (sq_svd_driver)drv, 0, 0);
        check_svd(t, dt, 129, 65, 0, SQ_SVD_AUTO, 17, 0);  /* truncated */
        check_svd(t, dt, 65, 129, 0, SQ_SVD_GESVD, 31, 0); /* truncated */
        check_svd(t, dt, 53, 37, 0, SQ_SVD_AUTO, 0, 1);    /* non-contiguous input */
        check_svd(t, dt, 37, 53, 0, SQ_SVD_GESVD, 0, 1);
        check_nonfinite(t, dt, NAN, "NaN");
        check_nonfinite(t, dt, -INFINITY, "-Inf");
    }
    printf("== engine\n");
    check_fake_failures(t);
    int64_t left = t->ctx.mem.total_cur[SQ_CUDA];
    report(t, left == 0, "every GPU byte of the test context released (%lld left)", (long long)left);
    sq_device_release_all(&t->ctx);
    printf("%d passed, %d failed\n", t->passed, t->failed);
    return t->failed ? 1 : 0;
}
