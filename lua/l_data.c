/* l_data.c — Lua binding of the datasets (engine/sq_data.h).
 *
 *   core.fashion_mnist(split [, {dir=, flatten=true, mean=, std=}]) -> images, labels
 *       split "train" | "test"; images float32 (N,784) or (N,1,28,28) in [0,1]
 *       ((x - mean)/std when mean and std are given); labels int64 (N), 0-based
 *       classes 0..9
 *   core.permutation(n) -> int64 (n): a permutation of 0..n-1 from the seeded generator
 *   core.gather_rows(t, idx [, out]) -> rows t[idx[i]] along dim 1 (idx: 1-d int64/int32
 *       tensor of 0-based rows, the convention of every index tensor); into out when
 *       given (contiguous, same dtype, (#idx, ...)), else a new tensor
 *   core.text_corpus(path [, {split = {0.9, 0.05, 0.05}}]) -> corpus
 *       corpus:size() -> bytes
 *       corpus:split_bounds() -> {train = {lo, hi}, val = {lo, hi}, test = {lo, hi},
 *                                 offsets = {0, b1, b2, n}, fractions = {...}}
 *           byte offsets, 0-based and half-open like file offsets: the same
 *           numbers on every run for the same file and fractions
 *       corpus:sample(split, B, T) -> x, y: int64 (B,T) byte windows wholly inside
 *           the split, y the next byte of each x; split "train" | "val" | "test"
 *       corpus:tokens(split) -> int64 (len) every byte of the split, in order
 *       corpus:hash() -> FNV-1a 64 of the bytes as 16 hex digits; corpus:path()
 *       corpus:close() (also __gc / __close; idempotent)
 * Loaders RAISE on environmental failures (missing or corrupt files): a
 * script cannot go on without its data, and the message names the file,
 * what was expected, what was found (and, for Fashion-MNIST, the Debian
 * package to install). */
#include "sq_data.h"
#include "sq_lua.h"

#include <string.h>

#define CORPUS_MT "squeeze.TextCorpus"

typedef struct { sq_corpus *c; } l_corpus;

/* Pushes an empty tensor userdata (t = NULL) and returns its slot. */
static sq_lua_tensor *new_slot(lua_State *L)
{
    sq_lua_tensor *ud = lua_newuserdatauv(L, sizeof *ud, 0);
    ud->t = NULL;
    luaL_setmetatable(L, SQ_LUA_TENSOR_MT);
    return ud;
}

static void check_keys(lua_State *L, int arg, const char *const *allowed)
{
    lua_pushnil(L);
    while (lua_next(L, arg)) {
        int ok = 0;
        if (lua_type(L, -2) == LUA_TSTRING)
            for (const char *const *a = allowed; *a && !ok; a++) ok = strcmp(*a, lua_tostring(L, -2)) == 0;
        if (!ok) {
            const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : luaL_typename(L, -2);
            luaL_argerror(L, arg, lua_pushfstring(L, "unknown option '%s'", k));
        }
        lua_pop(L, 1);
    }
}

/* ---- Fashion-MNIST ----------------------------------------------------------- */

static int l_fashion_mnist(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    lua_settop(L, 2);
    static const char *const splits[] = {"train", "test", NULL};
    int split = luaL_checkoption(L, 1, NULL, splits);
    sq_mnist_opts o = {NULL, 1, 0, 0.0, 1.0};
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        static const char *const keys[] = {"dir", "flatten", "mean", "std", NULL};
        check_keys(L, 2, keys);
        if (lua_getfield(L, 2, "dir") != LUA_TNIL) {
            if (lua_type(L, -1) != LUA_TSTRING) luaL_argerror(L, 2, "option 'dir' must be a string");
            o.dir = lua_tostring(L, -1); /* stays on the stack, so stays alive */
        }
        int t = lua_getfield(L, 2, "flatten");
        if (t != LUA_TNIL && t != LUA_TBOOLEAN) luaL_argerror(L, 2, "option 'flatten' must be a boolean");
        if (t == LUA_TBOOLEAN) o.flatten = lua_toboolean(L, -1);
        lua_pop(L, 1);
        int tm = lua_getfield(L, 2, "mean"), ts = lua_getfield(L, 2, "std");
        if (tm != LUA_TNIL || ts != LUA_TNIL) {
            if (tm != LUA_TNUMBER || ts != LUA_TNUMBER)
                luaL_argerror(L, 2, "options 'mean' and 'std' must both be numbers");
            o.normalize = 1;
            o.mean = lua_tonumber(L, -2);
            o.std = lua_tonumber(L, -1);
            if (!(o.std > 0)) luaL_argerror(L, 2, lua_pushfstring(L, "option 'std' must be > 0, got %f", o.std));
        }
        lua_pop(L, 2);
    }
    sq_lua_tensor *x = new_slot(L), *y = new_slot(L);
    sq_status st = sq_data_fashion_mnist(ctx, splits[split], &o, &x->t, &y->t);
    if (st != SQ_OK) return sq_lua_raise(L, "fashion_mnist", st);
    return 2;
}

/* ---- shuffling and batching -------------------------------------------------- */

static int l_permutation(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    lua_Integer n = luaL_checkinteger(L, 1);
    if (n < 0) return luaL_argerror(L, 1, lua_pushfstring(L, "n = %I must be >= 0", n));
    sq_lua_tensor *slot = new_slot(L);
    sq_status st = sq_data_permutation(ctx, (int64_t)n, &slot->t);
    if (st != SQ_OK) return sq_lua_raise(L, "permutation", st);
    return 1;
}

static int l_gather_rows(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    lua_settop(L, 3);
    sq_tensor *src = sq_lua_check_tensor(L, 1);
    sq_tensor *idx = sq_lua_check_tensor(L, 2);
    sq_tensor *out = sq_lua_opt_tensor(L, 3);
    if (idx->ndim != 1 || (idx->dtype != SQ_I64 && idx->dtype != SQ_I32)) {
        char b[64];
        return luaL_argerror(L, 2, lua_pushfstring(L, "need a 1-d int64 or int32 tensor of row indices, got %s %s",
                                                   sq_dtype_name(idx->dtype), sq_shape_str(idx, b, sizeof b)));
    }
    if (src->ndim < 1) return luaL_argerror(L, 1, "need at least 1 dim");
    if (idx->storage->device != SQ_CPU) /* the row copies run on the CPU */
        return luaL_argerror(L, 2, "row indices must be on the cpu");
    /* the engine takes a contiguous int64 array: convert only when needed */
    sq_lua_tensor *tmp = NULL;
    sq_tensor *ix = idx;
    if (idx->dtype != SQ_I64 || !sq_tensor_is_contiguous(idx)) {
        tmp = new_slot(L); /* GC-owned, so a raise below cannot leak it */
        sq_status st = sq_tensor_to_dtype(ctx, idx, SQ_I64, &tmp->t);
        if (st != SQ_OK) return sq_lua_raise(L, "gather_rows", st);
        ix = tmp->t;
    }
    const int64_t *ip = sq_tensor_data(ix);
    int64_t n = ix->shape[0];
    sq_status st;
    if (out) {
        st = sq_data_gather_rows_into(ctx, out, src, ip, n);
        if (st != SQ_OK) return sq_lua_raise(L, "gather_rows", st);
        lua_pushvalue(L, 3);
    } else {
        sq_lua_tensor *slot = new_slot(L);
        st = sq_data_gather_rows(ctx, src, ip, n, &slot->t);
        if (st != SQ_OK) return sq_lua_raise(L, "gather_rows", st);
    }
    if (tmp) { /* free the converted indices now rather than at the next GC */
        sq_tensor_release(tmp->t);
        tmp->t = NULL;
    }
    return 1;
}

/* ---- text corpora ----------------------------------------------------------- */

static l_corpus *check_corpus(lua_State *L, int arg)
{
    l_corpus *u = luaL_checkudata(L, arg, CORPUS_MT);
    if (!u->c) luaL_argerror(L, arg, "corpus is closed");
    return u;
}

static int check_split(lua_State *L, int arg)
{
    const char *name = luaL_checkstring(L, arg);
    int s = sq_corpus_split_id(name);
    if (s < 0) luaL_argerror(L, arg, lua_pushfstring(L, "split must be 'train', 'val' or 'test', got '%s'", name));
    return s;
}

static int l_text_corpus(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    lua_settop(L, 2);
    const char *path = luaL_checkstring(L, 1);
    double frac[SQ_NSPLIT] = {0.9, 0.05, 0.05};
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        static const char *const keys[] = {"split", NULL};
        check_keys(L, 2, keys);
        int t = lua_getfield(L, 2, "split");
        if (t != LUA_TNIL) {
            if (t != LUA_TTABLE || luaL_len(L, -1) != SQ_NSPLIT)
                luaL_argerror(L, 2, "option 'split' must be {train, val, test} fractions");
            for (int i = 0; i < SQ_NSPLIT; i++) {
                int isnum = 0;
                lua_geti(L, -1, i + 1);
                frac[i] = lua_tonumberx(L, -1, &isnum);
                if (!isnum) luaL_argerror(L, 2, "option 'split' must hold three numbers");
                lua_pop(L, 1);
            }
        }
        lua_pop(L, 1);
    }
    l_corpus *u = lua_newuserdatauv(L, sizeof *u, 1);
    u->c = NULL;
    luaL_setmetatable(L, CORPUS_MT);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1); /* the path, for corpus:path() */
    sq_status st = sq_corpus_load(ctx, path, frac, &u->c);
    if (st == SQ_ERR_ARG) return luaL_argerror(L, 2, ctx->err + (strncmp(ctx->err, "text_corpus: ", 13) ? 0 : 13));
    if (st != SQ_OK) return sq_lua_raise(L, "text_corpus", st);
    return 1;
}

static int c_size(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)check_corpus(L, 1)->c->n);
    return 1;
}

static void push_range(lua_State *L, int64_t lo, int64_t hi)
{
    lua_createtable(L, 2, 0);
    lua_pushinteger(L, (lua_Integer)lo);
    lua_rawseti(L, -2, 1);
    lua_pushinteger(L, (lua_Integer)hi);
    lua_rawseti(L, -2, 2);
}

static int c_split_bounds(lua_State *L)
{
    const sq_corpus *c = check_corpus(L, 1)->c;
    lua_createtable(L, 0, 5);
    for (int s = 0; s < SQ_NSPLIT; s++) {
        push_range(L, c->bounds[s], c->bounds[s + 1]);
        lua_setfield(L, -2, sq_corpus_split_name(s));
    }
    lua_createtable(L, SQ_NSPLIT + 1, 0);
    for (int i = 0; i <= SQ_NSPLIT; i++) {
        lua_pushinteger(L, (lua_Integer)c->bounds[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "offsets");
    lua_createtable(L, SQ_NSPLIT, 0);
    for (int i = 0; i < SQ_NSPLIT; i++) {
        lua_pushnumber(L, c->frac[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "fractions");
    return 1;
}

static int c_sample(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    const sq_corpus *c = check_corpus(L, 1)->c;
    int split = check_split(L, 2);
    lua_Integer B = luaL_checkinteger(L, 3), T = luaL_checkinteger(L, 4);
    if (B < 1) return luaL_argerror(L, 3, lua_pushfstring(L, "batch size %I must be >= 1", B));
    if (T < 1) return luaL_argerror(L, 4, lua_pushfstring(L, "window length %I must be >= 1", T));
    int64_t len = c->bounds[split + 1] - c->bounds[split];
    if (T + 1 > len)
        return luaL_argerror(L, 4, lua_pushfstring(L, "window length %I needs %I bytes; the %s split has %I", T, T + 1,
                                                   sq_corpus_split_name(split), (lua_Integer)len));
    sq_lua_tensor *x = new_slot(L), *y = new_slot(L);
    sq_status st = sq_corpus_sample(ctx, c, split, (int64_t)B, (int64_t)T, &x->t, &y->t);
    if (st != SQ_OK) return sq_lua_raise(L, "corpus.sample", st);
    return 2;
}

static int c_tokens(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    const sq_corpus *c = check_corpus(L, 1)->c;
    int split = check_split(L, 2);
    sq_lua_tensor *slot = new_slot(L);
    sq_status st = sq_corpus_split_tokens(ctx, c, split, &slot->t);
    if (st != SQ_OK) return sq_lua_raise(L, "corpus.tokens", st);
    return 1;
}

static int c_hash(lua_State *L)
{
    const sq_corpus *c = check_corpus(L, 1)->c;
    char buf[17];
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) buf[i] = hex[(c->hash >> (60 - 4 * i)) & 15];
    buf[16] = 0;
    lua_pushstring(L, buf);
    return 1;
}

static int c_path(lua_State *L)
{
    check_corpus(L, 1);
    lua_getiuservalue(L, 1, 1);
    return 1;
}

static int c_close(lua_State *L)
{
    l_corpus *u = luaL_checkudata(L, 1, CORPUS_MT);
    sq_corpus_free(u->c);
    u->c = NULL;
    return 0;
}

static int c_tostring(lua_State *L)
{
    l_corpus *u = luaL_checkudata(L, 1, CORPUS_MT);
    if (!u->c) {
        lua_pushliteral(L, "text_corpus(closed)");
        return 1;
    }
    lua_getiuservalue(L, 1, 1);
    lua_pushfstring(L, "text_corpus(%s, %I bytes)", lua_tostring(L, -1), (lua_Integer)u->c->n);
    return 1;
}

static const luaL_Reg corpus_methods[] = {
    {"size", c_size}, {"split_bounds", c_split_bounds}, {"sample", c_sample}, {"tokens", c_tokens},
    {"hash", c_hash}, {"path", c_path}, {"close", c_close}, {NULL, NULL},
};

static const luaL_Reg data_fns[] = {
    {"fashion_mnist", l_fashion_mnist},
    {"permutation", l_permutation},
    {"gather_rows", l_gather_rows},
    {"text_corpus", l_text_corpus},
    {NULL, NULL},
};

void sq_lua_open_data(lua_State *L, int ctx_index)
{
    sq_lua_new_class(L, CORPUS_MT, corpus_methods, c_close, c_tostring, ctx_index);
    sq_lua_setfuncs(L, data_fns, ctx_index);
}
