/* l_cuda.c — the GPU from Lua (wrapped by lua/squeeze/cuda.lua as squeeze.cuda):
 *
 *   core.cuda_available() -> boolean     a driver and a GPU are present (creates nothing)
 *   core.cuda_init() -> description      creates the context's GPU backend now (it is
 *                                        otherwise created by the first GPU tensor)
 *   core.cuda_device() -> string | nil   "NVIDIA H100 ... (device 0, sm_90, ...)" once initialised
 *   core.cuda_synchronize()              waits for the GPU; raises what its kernels reported
 *   core.cuda_set_tf32(on) -> previous   float32 matmuls on TF32 tensor cores (default off)
 *   core.cuda_tf32() -> boolean
 *   core.cuda_memory() -> table          the caching allocator's counters plus the
 *                                        context's current/peak GPU bytes by category
 *   core.cuda_reset_peak()               restarts the allocator's and the context's GPU peaks
 *   core.cuda_empty_cache()              gives cached blocks back to the driver
 *   core.cuda_event() -> event           ev:record(); ev:elapsed_ms(later_event) (waits for it)
 *   core.cuda_profile_begin([n]); core.cuda_profile_end() -> text
 *                                        GPU time per kernel between the two (sq_cuda_profile_end)
 *
 * Errors: "cuda: <what failed>" for a GPU that cannot be used or a failed
 * CUDA call; argument errors as usual. */
#include "sq_lua.h"
#include "sq_device.h"
#include "cuda/sq_cuda.h"

#include <string.h>

#define EVENT_MT "squeeze.CudaEvent"

typedef struct { sq_cuda_event *ev; int recorded; } l_event;

static void need_backend(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    sq_status st = sq_device_ensure(ctx, SQ_CUDA);
    if (st != SQ_OK) sq_lua_raise(L, "cuda", st);
}

static int l_available(lua_State *L)
{
    lua_pushboolean(L, sq_device_available(SQ_CUDA));
    return 1;
}

static int l_init(lua_State *L)
{
    need_backend(L);
    char buf[512];
    lua_pushstring(L, sq_cuda_device_str(sq_lua_ctx(L), buf, sizeof buf));
    return 1;
}

static int l_device(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    if (!ctx->cuda) {
        lua_pushnil(L);
        return 1;
    }
    char buf[512];
    lua_pushstring(L, sq_cuda_device_str(ctx, buf, sizeof buf));
    return 1;
}

static int l_synchronize(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    sq_status st = sq_device_sync(ctx, SQ_CUDA);
    if (st != SQ_OK) return sq_lua_raise(L, "cuda.synchronize", st);
    return 0;
}

static int l_set_tf32(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    luaL_checktype(L, 1, LUA_TBOOLEAN);
    lua_pushboolean(L, sq_cuda_get_tf32(ctx));
    sq_cuda_set_tf32(ctx, lua_toboolean(L, 1));
    return 1;
}

static int l_tf32(lua_State *L)
{
    lua_pushboolean(L, sq_cuda_get_tf32(sq_lua_ctx(L)));
    return 1;
}

static void set_int(lua_State *L, const char *k, int64_t v)
{
    lua_pushinteger(L, (lua_Integer)v);
    lua_setfield(L, -2, k);
}

static void push_cats(lua_State *L, const int64_t *v, int64_t total)
{
    lua_createtable(L, 0, SQ_MEM_NCAT + 1);
    for (int c = 0; c < SQ_MEM_NCAT; c++) set_int(L, sq_mem_cat_name((sq_mem_cat)c), v[c]);
    set_int(L, "total", total);
}

/* {current = {param=, ...}, peak = {...}, allocator = {requested=, in_use=, cached=,
 *  reserved=, peak_reserved=, live_blocks=, cuda_mallocs=, cache_hits=, cache_flushes=,
 *  backend_device=, backend_pinned=}} in bytes / counts */
static int l_memory(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    sq_cuda_mem_stats ms;
    sq_cuda_mem_get(ctx, &ms);
    lua_createtable(L, 0, 3);
    push_cats(L, ctx->mem.cur[SQ_CUDA], ctx->mem.total_cur[SQ_CUDA]);
    lua_setfield(L, -2, "current");
    push_cats(L, ctx->mem.peak[SQ_CUDA], ctx->mem.total_peak[SQ_CUDA]);
    lua_setfield(L, -2, "peak");
    lua_createtable(L, 0, 11);
    set_int(L, "requested", ms.requested);
    set_int(L, "in_use", ms.in_use);
    set_int(L, "cached", ms.cached);
    set_int(L, "reserved", ms.reserved);
    set_int(L, "peak_reserved", ms.peak_reserved);
    set_int(L, "live_blocks", ms.live_blocks);
    set_int(L, "cuda_mallocs", ms.cuda_mallocs);
    set_int(L, "cache_hits", ms.cache_hits);
    set_int(L, "cache_flushes", ms.cache_flushes);
    set_int(L, "backend_device", ms.backend_device);
    set_int(L, "backend_pinned", ms.backend_pinned);
    lua_setfield(L, -2, "allocator");
    return 1;
}

/* Both GPU peaks (the context's by category, the allocator's reservation);
 * the CPU's stay (squeeze.reset_peak restarts all). */
static int l_reset_peak(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    sq_mem *m = &ctx->mem;
    for (int c = 0; c < SQ_MEM_NCAT; c++) m->peak[SQ_CUDA][c] = m->cur[SQ_CUDA][c];
    m->total_peak[SQ_CUDA] = m->total_cur[SQ_CUDA];
    sq_cuda_mem_reset_peak(ctx);
    return 0;
}

static int l_empty_cache(lua_State *L)
{
    sq_cuda_empty_cache(sq_lua_ctx(L));
    return 0;
}

/* cuda_profile_begin([max launches = 65536]); cuda_profile_end() -> table text */
static int l_profile_begin(lua_State *L)
{
    lua_Integer cap = luaL_optinteger(L, 1, 65536);
    if (cap < 2 || cap > (1 << 24)) return luaL_argerror(L, 1, "launch count must be in 2..16777216");
    need_backend(L);
    sq_status st = sq_cuda_profile_begin(sq_lua_ctx(L), (int)cap);
    if (st != SQ_OK) return sq_lua_raise(L, "cuda.profile", st);
    return 0;
}

static int l_profile_end(lua_State *L)
{
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, 16384);
    sq_status st = sq_cuda_profile_end(sq_lua_ctx(L), p, 16384);
    if (st != SQ_OK) return sq_lua_raise(L, "cuda.profile", st);
    luaL_pushresultsize(&b, strlen(p));
    return 1;
}

/* ---- events ------------------------------------------------------------------------ */

static l_event *check_event(lua_State *L, int arg)
{
    l_event *e = luaL_checkudata(L, arg, EVENT_MT);
    if (!e->ev) luaL_argerror(L, arg, "event is closed");
    return e;
}

static int ev_gc(lua_State *L)
{
    l_event *e = luaL_checkudata(L, 1, EVENT_MT);
    sq_cuda_event_free(e->ev);
    e->ev = NULL;
    return 0;
}

static int l_event_new(lua_State *L)
{
    need_backend(L);
    l_event *e = lua_newuserdatauv(L, sizeof *e, 0);
    e->ev = NULL;
    e->recorded = 0;
    luaL_setmetatable(L, EVENT_MT);
    sq_status st = sq_cuda_event_new(sq_lua_ctx(L), &e->ev);
    if (st != SQ_OK) return sq_lua_raise(L, "cuda.event", st);
    return 1;
}

static int ev_record(lua_State *L)
{
    l_event *e = check_event(L, 1);
    sq_status st = sq_cuda_event_record(sq_lua_ctx(L), e->ev);
    if (st != SQ_OK) return sq_lua_raise(L, "event:record", st);
    e->recorded = 1;
    lua_settop(L, 1);
    return 1;
}

/* start:elapsed_ms(stop) -> milliseconds from start to stop (waits for stop) */
static int ev_elapsed(lua_State *L)
{
    l_event *a = check_event(L, 1), *b = check_event(L, 2);
    if (!a->recorded || !b->recorded)
        return luaL_argerror(L, a->recorded ? 2 : 1, "event was never recorded");
    double ms = 0;
    sq_status st = sq_cuda_event_elapsed(sq_lua_ctx(L), a->ev, b->ev, &ms);
    if (st != SQ_OK) return sq_lua_raise(L, "event:elapsed_ms", st);
    lua_pushnumber(L, ms);
    return 1;
}

static const luaL_Reg event_methods[] = {
    {"record", ev_record}, {"elapsed_ms", ev_elapsed}, {"close", ev_gc}, {NULL, NULL}};

static const luaL_Reg cuda_fns[] = {
    {"cuda_available", l_available}, {"cuda_init", l_init}, {"cuda_device", l_device},
    {"cuda_synchronize", l_synchronize}, {"cuda_set_tf32", l_set_tf32}, {"cuda_tf32", l_tf32},
    {"cuda_memory", l_memory}, {"cuda_reset_peak", l_reset_peak},
    {"cuda_empty_cache", l_empty_cache}, {"cuda_event", l_event_new},
    {"cuda_profile_begin", l_profile_begin}, {"cuda_profile_end", l_profile_end},
    {NULL, NULL}};

void sq_lua_open_cuda(lua_State *L, int ctx_index)
{
    sq_lua_new_class(L, EVENT_MT, event_methods, ev_gc, NULL, ctx_index);
    sq_lua_setfuncs(L, cuda_fns, ctx_index);
}
