/* sq_base.c — context, status messages, memory accounting and the RNG. */
#include "sq_base.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void sq_ctx_init(sq_ctx *ctx, uint64_t seed)
{
    memset(ctx, 0, sizeof *ctx);
    ctx->grad_enabled = 1;
    sq_rng_seed(&ctx->rng, seed);
}

sq_status sq_fail(sq_ctx *ctx, sq_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->err, sizeof ctx->err, fmt, ap);
    va_end(ap);
    return st;
}

const char *sq_status_name(sq_status st)
{
    static const char *const names[] = {
        "ok", "bad argument", "shape mismatch", "unsupported dtype",
        "out of memory", "i/o error", "corrupt or mislabelled file",
        "numerical failure", "invalid state", "device error", "unsupported"};
    if ((unsigned)st < sizeof names / sizeof names[0]) return names[st];
    return "unknown status";
}

const char *sq_dtype_name(sq_dtype dt)
{
    static const char *const names[] = {"float32", "float64", "int32", "int64"};
    return (unsigned)dt < SQ_NDTYPE ? names[dt] : "?";
}

size_t sq_dtype_size(sq_dtype dt)
{
    static const size_t sizes[] = {4, 8, 4, 8};
    return (unsigned)dt < SQ_NDTYPE ? sizes[dt] : 0;
}

const char *sq_device_name(sq_device dev)
{
    return dev == SQ_CPU ? "cpu" : dev == SQ_CUDA ? "cuda" : "?";
}

const char *sq_mem_cat_name(sq_mem_cat c)
{
    static const char *const names[] = {"param", "grad", "optim", "saved", "workspace", "other"};
    return (unsigned)c < SQ_MEM_NCAT ? names[c] : "?";
}

void sq_mem_add(sq_ctx *ctx, sq_device dev, sq_mem_cat cat, int64_t bytes)
{
    sq_mem *m = &ctx->mem;
    m->cur[dev][cat] += bytes;
    if (m->cur[dev][cat] > m->peak[dev][cat]) m->peak[dev][cat] = m->cur[dev][cat];
    m->total_cur[dev] += bytes;
    if (m->total_cur[dev] > m->total_peak[dev]) m->total_peak[dev] = m->total_cur[dev];
}

void sq_mem_sub(sq_ctx *ctx, sq_device dev, sq_mem_cat cat, int64_t bytes)
{
    ctx->mem.cur[dev][cat] -= bytes;
    ctx->mem.total_cur[dev] -= bytes;
}

void sq_mem_reset_peak(sq_ctx *ctx)
{
    sq_mem *m = &ctx->mem;
    for (int d = 0; d < SQ_NDEVICE; d++) {
        for (int c = 0; c < SQ_MEM_NCAT; c++) m->peak[d][c] = m->cur[d][c];
        m->total_peak[d] = m->total_cur[d];
    }
}

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void sq_rng_seed(sq_rng *r, uint64_t seed)
{
    uint64_t x = seed;
    r->seed = seed;
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t sq_rng_next(sq_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double sq_rng_uniform(sq_rng *r) { return (double)(sq_rng_next(r) >> 11) * 0x1.0p-53; }

double sq_rng_normal(sq_rng *r)
{
    /* Box-Muller; one draw per call keeps the stream position simple. */
    double u1 = sq_rng_uniform(r), u2 = sq_rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

uint64_t sq_rng_below(sq_rng *r, uint64_t n)
{
    if (n == 0) return 0;
    uint64_t lim = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do x = sq_rng_next(r); while (x >= lim);
    return x % n;
}
