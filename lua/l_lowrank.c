/* l_lowrank.c — Lua bindings for the SVD (sq_linalg.h) and low-rank
 * decomposition (sq_lowrank.h):
 *
 *   core.svd(W [, {driver = "auto"|"gesdd"|"gesvd", rank = r}]) -> U, S, Vt, info
 *   core.lowrank_linear(W, {rank = | ratio = | energy =, quantum = 1, driver =})
 *        -> A (M,r), B (r,K), info   (x Wᵀ + b ≈ (x Bᵀ) Aᵀ + b)
 *   core.tucker2(W, {rank_in =, rank_out =} | {ratio =, quantum =} [, driver =})
 *        -> first (r_in,C,1,1), core (r_out,r_in,kh,kw), last (O,r_out,1,1), info
 *   core.rank_for(M, K, {ratio = | rank =, quantum = 1}) -> rank, raw rank
 *   core.tucker2_rank_for(O, C, kh, kw, {ratio =, quantum = 1}) -> r_out, r_in
 *   core.lowrank_linear_cost(M, K, r [, {bias = true, rows = 1}]) -> cost table
 *   core.lowrank_conv_cost(O, C, kh, kw, r_out, r_in [, {bias, N, H, W, stride, pad}])
 *   core.lowrank_time(run [, {repeats = 5, warmup = 1}]) -> median seconds, samples
 *   core.lowrank_search(M, K, opts, make) -> best rank, trials
 *
 * Timing uses the engine's one clock (sq_proc_monotonic) with the Lua collector
 * stopped inside each timed call (and a full collection before it), so a
 * collection cycle is not charged to whichever candidate triggers it.
 *
 * Errors: a bad option value raises "bad argument #2 to 'lowrank_linear'
 * (rank 80 > min(64,128))"; a numeric failure raises "lowrank_linear: svd:
 * ...".  Result userdata are created empty before the engine runs, so a
 * failure leaks nothing. */
#include "sq_lua.h"
#include "sq_lowrank.h"
#include "sq_proc.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_REPEATS 1000
#define MAX_TRIALS 4096

/* ---- helpers ---------------------------------------------------------------------- */

static sq_lua_tensor *new_slot(lua_State *L)
{
    sq_lua_push_tensor(L, NULL); /* an empty userdata; its __gc is harmless */
    return lua_touserdata(L, -1);
}

/* Raises for an engine failure: argument and shape problems as a bad
 * argument (engine prefix such as "lowrank: " dropped), the rest as
 * "fname: message". */
static int fail(lua_State *L, const char *fname, sq_status st, int arg)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    if ((st == SQ_ERR_ARG || st == SQ_ERR_SHAPE) && arg > 0 && ctx->err[0]) {
        const char *msg = ctx->err;
        static const char *const prefixes[] = {"lowrank search: ", "lowrank: ", "tucker2: ", "svd: ", NULL};
        for (int i = 0; prefixes[i]; i++) {
            size_t n = strlen(prefixes[i]);
            if (strncmp(msg, prefixes[i], n) == 0) {
                msg += n;
                break;
            }
        }
        return luaL_argerror(L, arg, msg);
    }
    return sq_lua_raise(L, fname, st);
}

/* opts at arg must be nil/none or a table. */
static int check_opts(lua_State *L, int arg)
{
    if (lua_isnoneornil(L, arg)) return 0;
    luaL_checktype(L, arg, LUA_TTABLE);
    return 1;
}

/* Integer field of the options table (absent: *present = 0, def returned). */
static lua_Integer opt_int(lua_State *L, int arg, const char *field, lua_Integer def, int *present)
{
    if (present) *present = 0;
    if (!lua_istable(L, arg)) return def;
    int ty = lua_getfield(L, arg, field);
    lua_Integer v = def;
    if (ty != LUA_TNIL) {
        int ok = 0;
        v = lua_tointegerx(L, -1, &ok);
        if (!ok) {
            luaL_argerror(L, arg, lua_pushfstring(L, "%s must be an integer, got %s", field,
                                                  ty == LUA_TNUMBER ? "a fraction" : luaL_typename(L, -1)));
        }
        if (present) *present = 1;
    }
    lua_pop(L, 1);
    return v;
}

static double opt_num(lua_State *L, int arg, const char *field, double def, int *present)
{
    if (present) *present = 0;
    if (!lua_istable(L, arg)) return def;
    int ty = lua_getfield(L, arg, field);
    double v = def;
    if (ty != LUA_TNIL) {
        if (ty != LUA_TNUMBER)
            luaL_argerror(L, arg, lua_pushfstring(L, "%s must be a number, got %s", field,
                                                  luaL_typename(L, -1)));
        v = lua_tonumber(L, -1);
        if (present) *present = 1;
    }
    lua_pop(L, 1);
    return v;
}

static int opt_bool(lua_State *L, int arg, const char *field, int def)
{
    if (!lua_istable(L, arg)) return def;
    int ty = lua_getfield(L, arg, field);
    int v = ty == LUA_TNIL ? def : lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

static sq_svd_driver opt_driver(lua_State *L, int arg)
{
    static const char *const names[] = {"auto", "gesdd", "gesvd", NULL};
    if (!lua_istable(L, arg)) return SQ_SVD_AUTO;
    int ty = lua_getfield(L, arg, "driver");
    sq_svd_driver d = SQ_SVD_AUTO;
    if (ty != LUA_TNIL) {
        const char *s = lua_tostring(L, -1);
        int found = -1;
        for (int i = 0; s && names[i]; i++)
            if (strcmp(s, names[i]) == 0) found = i;
        if (ty != LUA_TSTRING || found < 0)
            luaL_argerror(L, arg, lua_pushfstring(L, "driver must be \"auto\", \"gesdd\" or \"gesvd\", got %s",
                                                  s ? s : luaL_typename(L, -1)));
        d = (sq_svd_driver)found;
    }
    lua_pop(L, 1);
    return d;
}

static lua_Integer check_size(lua_State *L, int arg, const char *what)
{
    lua_Integer v = luaL_checkinteger(L, arg);
    if (v < 1) luaL_argerror(L, arg, lua_pushfstring(L, "%s must be >= 1, got %I", what, v));
    /* sizes multiply into parameter and FLOP counts: keep those in int64 */
    if (v > ((lua_Integer)1 << 24))
        luaL_argerror(L, arg, lua_pushfstring(L, "%s = %I is larger than 2^24", what, v));
    return v;
}

static void set_int(lua_State *L, const char *k, int64_t v)
{
    lua_pushinteger(L, (lua_Integer)v);
    lua_setfield(L, -2, k);
}

static void set_num(lua_State *L, const char *k, double v)
{
    lua_pushnumber(L, v);
    lua_setfield(L, -2, k);
}

static void set_str(lua_State *L, const char *k, const char *v)
{
    lua_pushstring(L, v);
    lua_setfield(L, -2, k);
}

static void push_svd_info(lua_State *L, const sq_svd_info *i)
{
    lua_createtable(L, 0, 3);
    set_str(L, "driver", sq_svd_driver_name(i->used));
    lua_pushboolean(L, i->fell_back);
    lua_setfield(L, -2, "fell_back");
    set_int(L, "gesdd_info", i->gesdd_info);
}

static void push_cost(lua_State *L, const sq_lowrank_cost *c)
{
    lua_createtable(L, 0, 4);
    set_int(L, "params_dense", c->params_dense);
    set_int(L, "params_lowrank", c->params_lowrank);
    set_num(L, "flops_dense", c->flops_dense);
    set_num(L, "flops_lowrank", c->flops_lowrank);
}

/* ---- svd / decompositions ---------------------------------------------------------- */

static int l_svd(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    sq_tensor *W = sq_lua_check_tensor(L, 1);
    check_opts(L, 2);
    sq_svd_opts o = {opt_driver(L, 2), 0};
    lua_Integer rank = opt_int(L, 2, "rank", 0, NULL);
    if (rank < 0) return luaL_argerror(L, 2, lua_pushfstring(L, "rank %I < 1", rank));
    sq_lua_tensor *u = new_slot(L), *s = new_slot(L), *vt = new_slot(L);
    sq_svd_info info;
    sq_status st = sq_svd(ctx, W, rank, &o, &u->t, &s->t, &vt->t, &info);
    if (st != SQ_OK) return fail(L, "svd", st, st == SQ_ERR_SHAPE ? 1 : 2);
    push_svd_info(L, &info);
    return 4;
}

static int l_lowrank_linear(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    sq_tensor *W = sq_lua_check_tensor(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    int has_rank, has_ratio, has_energy;
    sq_lowrank_cfg cfg = sq_lowrank_cfg_default();
    cfg.rank = opt_int(L, 2, "rank", 0, &has_rank);
    cfg.ratio = opt_num(L, 2, "ratio", 0, &has_ratio);
    cfg.energy = opt_num(L, 2, "energy", 0, &has_energy);
    cfg.quantum = opt_int(L, 2, "quantum", 1, NULL);
    cfg.svd.driver = opt_driver(L, 2);
    if (has_rank + has_ratio + has_energy != 1)
        return luaL_argerror(L, 2, "give exactly one of rank, ratio, energy");
    cfg.mode = has_rank ? SQ_RANK_FIXED : has_ratio ? SQ_RANK_RATIO : SQ_RANK_ENERGY;
    sq_lua_tensor *a = new_slot(L), *b = new_slot(L);
    sq_lowrank_info info;
    sq_status st = sq_lowrank_linear(ctx, W, &cfg, &a->t, &b->t, &info);
    if (st != SQ_OK) return fail(L, "lowrank_linear", st, st == SQ_ERR_SHAPE ? 1 : 2);
    int64_t M = W->shape[0], K = W->shape[1];
    sq_lowrank_cost c = sq_lowrank_linear_cost(M, K, info.rank, 0, 1);
    lua_createtable(L, 0, 10);
    set_int(L, "rank", info.rank);
    set_int(L, "rank_raw", info.rank_raw);
    set_num(L, "energy_kept", info.energy_kept);
    set_num(L, "tail_sq", info.tail_sq);
    set_num(L, "total_sq", info.total_sq);
    set_int(L, "params_dense", c.params_dense);
    set_int(L, "params_lowrank", c.params_lowrank);
    set_str(L, "driver", sq_svd_driver_name(info.svd.used));
    lua_pushboolean(L, info.svd.fell_back);
    lua_setfield(L, -2, "fell_back");
    return 3;
}

static int l_tucker2(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    sq_tensor *W = sq_lua_check_tensor(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    int has_in, has_out, has_ratio;
    lua_Integer r_in = opt_int(L, 2, "rank_in", 0, &has_in);
    lua_Integer r_out = opt_int(L, 2, "rank_out", 0, &has_out);
    double ratio = opt_num(L, 2, "ratio", 0, &has_ratio);
    lua_Integer q = opt_int(L, 2, "quantum", 1, NULL);
    sq_svd_opts o = {opt_driver(L, 2), 0};
    if (has_ratio ? (has_in || has_out) : !(has_in && has_out))
        return luaL_argerror(L, 2, "give rank_in and rank_out, or ratio");
    if (W->ndim != 4) {
        char sb[64];
        return luaL_argerror(L, 1, lua_pushfstring(L, "weight must be 4-d (O,C,kh,kw), got %s",
                                                   sq_shape_str(W, sb, sizeof sb)));
    }
    sq_status st;
    if (has_ratio) {
        int64_t ro, ri;
        st = sq_lowrank_tucker2_rank_ratio(ctx, W->shape[0], W->shape[1], W->shape[2], W->shape[3],
                                           ratio, q, &ro, &ri);
        if (st != SQ_OK) return fail(L, "tucker2", st, 2);
        r_out = ro;
        r_in = ri;
    }
    sq_lua_tensor *f = new_slot(L), *g = new_slot(L), *l = new_slot(L);
    sq_tucker2_info info;
    st = sq_lowrank_tucker2(ctx, W, r_out, r_in, &o, &f->t, &g->t, &l->t, &info);
    if (st != SQ_OK) return fail(L, "tucker2", st, st == SQ_ERR_SHAPE ? 1 : 2);
    sq_lowrank_cost c = sq_lowrank_conv_cost(W->shape[0], W->shape[1], W->shape[2], W->shape[3],
                                             r_out, r_in, 0, 0, 0, 0, 1, 0);
    lua_createtable(L, 0, 8);
    set_int(L, "rank_out", r_out);
    set_int(L, "rank_in", r_in);
    set_num(L, "energy_out", info.energy_out);
    set_num(L, "energy_in", info.energy_in);
    set_int(L, "params_dense", c.params_dense);
    set_int(L, "params_lowrank", c.params_lowrank);
    set_str(L, "driver", sq_svd_driver_name(info.svd_out.used));
    lua_pushboolean(L, info.svd_out.fell_back || info.svd_in.fell_back);
    lua_setfield(L, -2, "fell_back");
    return 4;
}

static int l_rank_for(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    lua_Integer M = check_size(L, 1, "M"), K = check_size(L, 2, "K");
    luaL_checktype(L, 3, LUA_TTABLE);
    int has_ratio, has_rank;
    double ratio = opt_num(L, 3, "ratio", 0, &has_ratio);
    lua_Integer rank = opt_int(L, 3, "rank", 0, &has_rank);
    lua_Integer q = opt_int(L, 3, "quantum", 1, NULL);
    if (has_ratio + has_rank != 1) return luaL_argerror(L, 3, "give exactly one of ratio, rank");
    int64_t raw = rank, rq;
    sq_status st = SQ_OK;
    if (has_ratio) st = sq_lowrank_rank_ratio(ctx, M, K, ratio, &raw);
    if (st == SQ_OK) st = sq_lowrank_quantize(ctx, raw, q, M, K, &rq);
    if (st != SQ_OK) return fail(L, "rank_for", st, 3);
    lua_pushinteger(L, (lua_Integer)rq);
    lua_pushinteger(L, (lua_Integer)raw);
    return 2;
}

static int l_tucker2_rank_for(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    lua_Integer O = check_size(L, 1, "O"), C = check_size(L, 2, "C");
    lua_Integer kh = check_size(L, 3, "kh"), kw = check_size(L, 4, "kw");
    luaL_checktype(L, 5, LUA_TTABLE);
    int has_ratio;
    double ratio = opt_num(L, 5, "ratio", 0, &has_ratio);
    lua_Integer q = opt_int(L, 5, "quantum", 1, NULL);
    if (!has_ratio) return luaL_argerror(L, 5, "ratio is required");
    int64_t ro, ri;
    sq_status st = sq_lowrank_tucker2_rank_ratio(ctx, O, C, kh, kw, ratio, q, &ro, &ri);
    if (st != SQ_OK) return fail(L, "tucker2_rank_for", st, 5);
    lua_pushinteger(L, (lua_Integer)ro);
    lua_pushinteger(L, (lua_Integer)ri);
    return 2;
}

static int l_linear_cost(lua_State *L)
{
    lua_Integer M = check_size(L, 1, "M"), K = check_size(L, 2, "K"), r = check_size(L, 3, "rank");
    check_opts(L, 4);
    int bias = opt_bool(L, 4, "bias", 1);
    lua_Integer rows = opt_int(L, 4, "rows", 1, NULL);
    if (rows < 0) return luaL_argerror(L, 4, "rows must be >= 0");
    sq_lowrank_cost c = sq_lowrank_linear_cost(M, K, r, bias, rows);
    push_cost(L, &c);
    return 1;
}

static int l_conv_cost(lua_State *L)
{
    lua_Integer O = check_size(L, 1, "O"), C = check_size(L, 2, "C");
    lua_Integer kh = check_size(L, 3, "kh"), kw = check_size(L, 4, "kw");
    lua_Integer ro = check_size(L, 5, "rank_out"), ri = check_size(L, 6, "rank_in");
    check_opts(L, 7);
    int bias = opt_bool(L, 7, "bias", 1);
    lua_Integer N = opt_int(L, 7, "N", 1, NULL), H = opt_int(L, 7, "H", kh, NULL);
    lua_Integer Wd = opt_int(L, 7, "W", kw, NULL), stride = opt_int(L, 7, "stride", 1, NULL);
    lua_Integer pad = opt_int(L, 7, "pad", 0, NULL);
    if (N < 0 || H < 1 || Wd < 1 || stride < 1 || pad < 0 || stride > 1 << 20 || pad > 1 << 20)
        return luaL_argerror(L, 7, "need N >= 0, H, W, stride >= 1 and pad >= 0");
    sq_lowrank_cost c = sq_lowrank_conv_cost(O, C, kh, kw, ro, ri, bias, N, H, Wd, (int)stride, (int)pad);
    push_cost(L, &c);
    return 1;
}

/* ---- timing -------------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Calls the function at index fn warmup + repeats times; the last `repeats`
 * calls are timed one by one into samples.  Returns 0, or 1 with the Lua
 * error object on the top of the stack. */
static int time_calls(lua_State *L, int fn, int warmup, int repeats, double *samples)
{
    for (int i = 0; i < warmup + repeats; i++) {
        lua_gc(L, LUA_GCCOLLECT);
        lua_gc(L, LUA_GCSTOP);
        lua_pushvalue(L, fn);
        double t0 = sq_proc_monotonic();
        int rc = lua_pcall(L, 0, 0, 0);
        double t1 = sq_proc_monotonic();
        lua_gc(L, LUA_GCRESTART);
        if (rc != LUA_OK) return 1;
        if (i >= warmup) samples[i - warmup] = t1 - t0;
    }
    return 0;
}

static void read_timing_opts(lua_State *L, int arg, int *warmup, int *repeats)
{
    lua_Integer r = opt_int(L, arg, "repeats", 5, NULL), w = opt_int(L, arg, "warmup", 1, NULL);
    if (r < 1 || r > MAX_REPEATS)
        luaL_argerror(L, arg, lua_pushfstring(L, "repeats must be in 1..%d", MAX_REPEATS));
    if (w < 0 || w > MAX_REPEATS)
        luaL_argerror(L, arg, lua_pushfstring(L, "warmup must be in 0..%d", MAX_REPEATS));
    *repeats = (int)r;
    *warmup = (int)w;
}

static void push_samples(lua_State *L, const double *s, int n)
{
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_pushnumber(L, s[i]);
        lua_rawseti(L, -2, i + 1);
    }
}

/* lowrank_time(run [, {repeats, warmup}]) -> median seconds, samples (in call order) */
static int l_time(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    check_opts(L, 2);
    int warmup, repeats;
    read_timing_opts(L, 2, &warmup, &repeats);
    double *s = lua_newuserdatauv(L, 2 * (size_t)repeats * sizeof(double), 0);
    if (time_calls(L, 1, warmup, repeats, s)) return lua_error(L);
    memcpy(s + repeats, s, (size_t)repeats * sizeof(double));
    lua_pushnumber(L, median(s + repeats, repeats));
    push_samples(L, s, repeats);
    return 2;
}

/* The search's time callback: make(rank) -> run; run timed. */
typedef struct {
    lua_State *L;
    int make, errslot, samples_tbl;
    int warmup, repeats;
    double *buf;
} search_bench;

static sq_status bench_rank(sq_ctx *ctx, int64_t rank, void *arg, double *seconds)
{
    search_bench *b = arg;
    lua_State *L = b->L;
    lua_pushvalue(L, b->make);
    lua_pushinteger(L, (lua_Integer)rank);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) goto lua_failed;
    if (lua_type(L, -1) != LUA_TFUNCTION) {
        lua_pushfstring(L, "make(%I) must return a function to time, got %s", (lua_Integer)rank,
                        luaL_typename(L, -1));
        lua_remove(L, -2);
        goto lua_failed;
    }
    int fn = lua_gettop(L);
    if (time_calls(L, fn, b->warmup, b->repeats, b->buf)) {
        lua_remove(L, fn);
        goto lua_failed;
    }
    lua_pop(L, 1);
    push_samples(L, b->buf, b->repeats);
    lua_rawseti(L, b->samples_tbl, (lua_Integer)rank);
    *seconds = median(b->buf, b->repeats);
    return SQ_OK;
lua_failed:
    lua_replace(L, b->errslot); /* the error object, raised after the search */
    return sq_fail(ctx, SQ_ERR_STATE, "lowrank search: the timing callback failed at rank %lld",
                   (long long)rank);
}

/* Parameter count of a Tucker-2 candidate with r_in = r_out = rank. */
typedef struct { int64_t O, C, S; } conv_shape;

static int64_t conv_params(int64_t rank, void *arg)
{
    const conv_shape *c = arg;
    return rank * c->C + rank * rank * c->S + c->O * rank;
}

/* lowrank_search(M, K, {r0 = | ratio =, quantum =, window = 2, max_params = 0,
 *                       time_over_budget = false, repeats = 5, warmup = 1,
 *                       kernel = {kh, kw}}, make)
 *   make(rank) -> run: builds the candidate (untimed); run() is timed.
 *   For a conv, M = out channels, K = in channels and kernel = {kh, kw}: a
 *   candidate uses rank for both Tucker-2 ranks (kernel 1x1: the SVD split).
 * -> best, trials = { {rank=, params=, within_budget=, seconds= (nil if
 *    untimed), samples = {...}}, ... } in ascending rank order */
static int l_search(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    lua_Integer M = check_size(L, 1, "M"), K = check_size(L, 2, "K");
    luaL_checktype(L, 3, LUA_TTABLE);
    luaL_checktype(L, 4, LUA_TFUNCTION);
    int has_r0, has_ratio;
    sq_rank_search_cfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.M = M;
    cfg.K = K;
    cfg.r0 = opt_int(L, 3, "r0", 0, &has_r0);
    double ratio = opt_num(L, 3, "ratio", 0, &has_ratio);
    cfg.quantum = opt_int(L, 3, "quantum", 1, NULL);
    cfg.window = opt_int(L, 3, "window", 2, NULL);
    cfg.max_params = opt_int(L, 3, "max_params", 0, NULL);
    cfg.time_over_budget = opt_bool(L, 3, "time_over_budget", 0);
    search_bench b = {L, 4, 0, 0, 0, 0, NULL};
    read_timing_opts(L, 3, &b.warmup, &b.repeats);
    conv_shape cs = {M, K, 1};
    if (lua_getfield(L, 3, "kernel") != LUA_TNIL) {
        if (!lua_istable(L, -1)) return luaL_argerror(L, 3, "kernel must be {kh, kw}");
        lua_geti(L, -1, 1);
        lua_geti(L, -2, 2);
        lua_Integer kh = lua_tointeger(L, -2), kw = lua_tointeger(L, -1);
        if (kh < 1 || kw < 1) return luaL_argerror(L, 3, "kernel must be {kh, kw} with sizes >= 1");
        lua_pop(L, 2);
        cs.S = kh * kw;
        if (cs.S > 1) { /* Tucker-2; 1x1 is the SVD split and counts like a linear layer */
            cfg.params = conv_params;
            cfg.params_arg = &cs;
        }
    }
    lua_pop(L, 1);
    if (has_r0 + has_ratio != 1) return luaL_argerror(L, 3, "give exactly one of r0, ratio");
    if (cfg.window < 0) return luaL_argerror(L, 3, lua_pushfstring(L, "window %I < 0", (lua_Integer)cfg.window));
    if (cfg.window > MAX_TRIALS / 2) return luaL_argerror(L, 3, lua_pushfstring(L, "window must be <= %d", MAX_TRIALS / 2));
    sq_status st = SQ_OK;
    if (has_ratio) {
        int64_t r0;
        st = sq_lowrank_rank_ratio(ctx, M, K, ratio, &r0);
        if (st != SQ_OK) return fail(L, "lowrank_search", st, 3);
        cfg.r0 = r0;
    }
    int cap = (int)(2 * cfg.window + 1);
    lua_settop(L, 4);
    lua_pushnil(L); /* 5: error slot */
    b.errslot = 5;
    lua_newtable(L); /* 6: rank -> samples */
    b.samples_tbl = 6;
    sq_rank_trial *trials = lua_newuserdatauv(L, (size_t)cap * sizeof *trials, 0); /* 7 */
    b.buf = lua_newuserdatauv(L, (size_t)b.repeats * sizeof(double), 0);        /* 8 */
    int n = 0;
    int64_t best = 0;
    st = sq_lowrank_search(ctx, &cfg, bench_rank, &b, trials, cap, &n, &best);
    if (!lua_isnil(L, b.errslot)) { /* the callback's own error, with its traceback text */
        lua_pushvalue(L, b.errslot);
        return lua_error(L);
    }
    if (st != SQ_OK) return fail(L, "lowrank_search", st, 3);
    lua_pushinteger(L, (lua_Integer)best);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_createtable(L, 0, 5);
        set_int(L, "rank", trials[i].rank);
        set_int(L, "params", trials[i].params);
        lua_pushboolean(L, trials[i].within_budget);
        lua_setfield(L, -2, "within_budget");
        if (trials[i].timed) {
            set_num(L, "seconds", trials[i].seconds);
            lua_rawgeti(L, b.samples_tbl, (lua_Integer)trials[i].rank);
            lua_setfield(L, -2, "samples");
        }
        lua_rawseti(L, -2, i + 1);
    }
    return 2;
}

static const luaL_Reg lowrank_fns[] = {
    {"svd", l_svd},
    {"lowrank_linear", l_lowrank_linear},
    {"tucker2", l_tucker2},
    {"rank_for", l_rank_for},
    {"tucker2_rank_for", l_tucker2_rank_for},
    {"lowrank_linear_cost", l_linear_cost},
    {"lowrank_conv_cost", l_conv_cost},
    {"lowrank_time", l_time},
    {"lowrank_search", l_search},
    {NULL, NULL},
};

void sq_lua_open_lowrank(lua_State *L, int ctx_index)
{
    sq_lua_setfuncs(L, lowrank_fns, ctx_index);
}
