/* l_core.c — `require "squeeze.core"`: the per-state engine context, the
 * core table, and the few functions that belong to no binding file
 * (seeding, BLAS threads, command-line argument parsing).
 *
 * The sq_ctx lives inside a userdata that every binding holds as its one
 * upvalue.  The tensor metatable's functions hold it too, and the metatable
 * sits in the registry, so the context can only die in lua_close — where
 * Lua runs every finalizer before it frees any memory.  The context's __gc
 * therefore has nothing to free: tensors finalized after it still find
 * their context intact. */
#include "sq_lua.h"
#include "sq_cpu.h"
#include "sq_device.h"
#include "cuda/sq_cuda.h"

#include <stdlib.h>
#include <string.h>

#define SQ_LUA_CTX_MT "squeeze.Context"

/* Written by other binding files; weak so the executable links before they
 * land (the lua/ sources are linked as objects, so a present file always resolves). */
void sq_lua_open_optim(lua_State *L, int ctx_index) __attribute__((weak));
void sq_lua_open_data(lua_State *L, int ctx_index) __attribute__((weak));
void sq_lua_open_h5(lua_State *L, int ctx_index) __attribute__((weak));
void sq_lua_open_lowrank(lua_State *L, int ctx_index) __attribute__((weak));
void sq_lua_open_store(lua_State *L, int ctx_index) __attribute__((weak));
void sq_lua_open_proc(lua_State *L, int ctx_index) __attribute__((weak));
void sq_lua_open_actprune(lua_State *L, int ctx_index) __attribute__((weak));
void sq_lua_open_cuda(lua_State *L, int ctx_index) __attribute__((weak));

static int ctx_gc(lua_State *L)
{
    /* The CUDA backend (stream, handles, cached device memory) is the one
     * thing outside the block.  Lua finalizes in reverse order of creation,
     * so every tensor went first; one finalized later would only find
     * ctx->cuda NULL, which its release handles. */
    sq_ctx *ctx = luaL_checkudata(L, 1, SQ_LUA_CTX_MT);
    sq_device_release_all(ctx);
    return 0;
}

static int ctx_tostring(lua_State *L)
{
    sq_ctx *ctx = luaL_checkudata(L, 1, SQ_LUA_CTX_MT);
    lua_pushfstring(L, "squeeze.Context(seed %I)", (lua_Integer)ctx->rng.seed);
    return 1;
}

/* squeeze.manual_seed(n): restarts the context's generator. */
static int l_manual_seed(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    lua_Integer s = luaL_checkinteger(L, 1);
    if (s < 0) return luaL_argerror(L, 1, "seed must be >= 0");
    sq_rng_seed(&ctx->rng, (uint64_t)s);
    sq_cuda_rng_seed(ctx, (uint64_t)s); /* the GPU's Philox stream restarts too (no-op before its first use) */
    return 0;
}

/* squeeze.seed() -> the seed the generator was last started from. */
static int l_seed(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)sq_lua_ctx(L)->rng.seed);
    return 1;
}

static int l_set_num_threads(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    lua_Integer n = luaL_checkinteger(L, 1);
    if (n < 0 || n > 4096) return luaL_argerror(L, 1, "thread count must be in 0..4096");
    ctx->num_threads = (int)n;
    sq_cpu_set_threads((int)n);
    return 0;
}

static int l_get_num_threads(lua_State *L)
{
    lua_pushinteger(L, sq_cpu_get_threads());
    return 1;
}

/* ---- key=value argument parsing ------------------------------------------ */

/* Pushes the Lua value of a command-line value string. */
static void push_arg_value(lua_State *L, const char *v)
{
    if (strcmp(v, "true") == 0) lua_pushboolean(L, 1);
    else if (strcmp(v, "false") == 0) lua_pushboolean(L, 0);
    else if (lua_stringtonumber(L, v) == 0) lua_pushstring(L, v);
}

/* Pushes one dotted-key segment: all-digit segments become integer keys. */
static void push_key_segment(lua_State *L, const char *s, size_t n)
{
    int digits = n > 0 && n < 16;
    for (size_t i = 0; i < n && digits; i++) digits = s[i] >= '0' && s[i] <= '9';
    if (digits) lua_pushinteger(L, (lua_Integer)strtoll(s, NULL, 10));
    else lua_pushlstring(L, s, n);
}

/* squeeze.parse_args{ "lr=0.1", "model.depth=4", "--seed=3", "extra" }
 *   -> { lr = 0.1, model = { depth = 4 }, seed = 3, "extra" }
 * Values "true"/"false" become booleans and numerals numbers; a dotted key
 * builds nested tables; an argument without '=' is appended positionally. */
static int l_parse_args(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_Integer n = luaL_len(L, 1), npos = 0;
    lua_newtable(L); /* result, index 2 */
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, 1, i);
        const char *a = lua_tostring(L, -1);
        if (!a) return luaL_argerror(L, 1, lua_pushfstring(L, "entry %I is not a string", i));
        const char *eq = strchr(a, '=');
        if (!eq) {
            lua_pushvalue(L, -1);
            lua_seti(L, 2, ++npos);
            lua_pop(L, 1);
            continue;
        }
        const char *key = a;
        while (*key == '-') key++;
        if (key == eq)
            return luaL_error(L, "bad argument '%s' (empty key before '=')", a);
        /* walk / create the nested tables for every segment but the last */
        int top = lua_gettop(L); /* the argument string */
        lua_pushvalue(L, 2);     /* top+1: the current table */
        const char *seg = key;
        for (;;) {
            const char *dot = memchr(seg, '.', (size_t)(eq - seg));
            size_t len = (size_t)((dot ? dot : eq) - seg);
            if (len == 0) return luaL_error(L, "bad argument '%s' (empty key segment)", a);
            push_key_segment(L, seg, len); /* top+2: the key */
            if (!dot) break;
            lua_pushvalue(L, top + 2);
            int ty = lua_rawget(L, top + 1);
            if (ty == LUA_TNIL) {
                lua_pop(L, 1);
                lua_newtable(L);
                lua_pushvalue(L, top + 2);
                lua_pushvalue(L, -2);
                lua_rawset(L, top + 1);
            } else if (ty != LUA_TTABLE) {
                return luaL_error(L, "bad argument '%s' (key '%s' already holds a value)", a,
                                  lua_pushlstring(L, key, (size_t)(dot - key)));
            }
            lua_replace(L, top + 1);
            lua_settop(L, top + 1);
            seg = dot + 1;
        }
        lua_pushvalue(L, top + 2);
        if (lua_rawget(L, top + 1) == LUA_TTABLE)
            return luaL_error(L, "bad argument '%s' (key already holds sub-keys)", a);
        lua_pop(L, 1);
        push_arg_value(L, eq + 1);
        lua_rawset(L, top + 1);
        lua_settop(L, top - 1);
    }
    return 1;
}

static const luaL_Reg core_fns[] = {
    {"manual_seed", l_manual_seed},
    {"seed", l_seed},
    {"set_num_threads", l_set_num_threads},
    {"get_num_threads", l_get_num_threads},
    {"parse_args", l_parse_args},
    {NULL, NULL},
};

int luaopen_squeeze_core(lua_State *L)
{
    /* the context: created in a usable state before anything refers to it */
    sq_lua_state *state = lua_newuserdatauv(L, sizeof *state, 0);
    memset(state, 0, sizeof *state);
    sq_ctx *ctx = &state->ctx;
    sq_ctx_init(ctx, 0);
    if (luaL_newmetatable(L, SQ_LUA_CTX_MT)) {
        lua_pushcfunction(L, ctx_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, ctx_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_setmetatable(L, -2);
    int ctx_index = lua_gettop(L);

    lua_newtable(L);
    sq_lua_setfuncs(L, core_fns, ctx_index);
    lua_pushvalue(L, ctx_index);
    lua_setfield(L, -2, "context");
    lua_pushliteral(L, SQ_VERSION);
    lua_setfield(L, -2, "version");

    sq_lua_open_tensor(L, ctx_index);
    if (sq_lua_open_optim) sq_lua_open_optim(L, ctx_index);
    if (sq_lua_open_data) sq_lua_open_data(L, ctx_index);
    if (sq_lua_open_h5) sq_lua_open_h5(L, ctx_index);
    if (sq_lua_open_lowrank) sq_lua_open_lowrank(L, ctx_index);
    if (sq_lua_open_store) sq_lua_open_store(L, ctx_index);
    if (sq_lua_open_proc) sq_lua_open_proc(L, ctx_index);
    if (sq_lua_open_actprune) sq_lua_open_actprune(L, ctx_index);
    if (sq_lua_open_cuda) sq_lua_open_cuda(L, ctx_index);
    return 1;
}
