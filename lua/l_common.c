/* l_common.c — the helpers every binding file shares (declared in sq_lua.h):
 * the ctx upvalue, tensor userdata checks and pushes, shape reading and
 * turning an engine failure into a Lua error. */
#include "sq_lua.h"

#include <string.h>

sq_ctx *sq_lua_ctx(lua_State *L)
{
    sq_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
    if (!ctx) luaL_error(L, "squeeze: binding registered without its context upvalue");
    return ctx;
}

/* Lua's collector sees a tensor userdata as a few bytes, not the megabytes
 * behind it, so dead tensors would pile up between collections (a CPU
 * worker reached 7 GB).  Collections are paced by the bytes the engine has
 * allocated on any device since the last one. */
static int64_t allocated_total(const sq_mem *m)
{
    int64_t n = 0;
    for (int d = 0; d < SQ_NDEVICE; d++) n += m->allocated[d];
    return n;
}

void sq_lua_device_gc(lua_State *L, int when)
{
    sq_lua_state *s = (sq_lua_state *)sq_lua_ctx(L);
    const sq_mem *m = &s->ctx.mem;
    const int64_t budget = (int64_t)128 << 20, gib = (int64_t)1 << 30;
    int64_t now = allocated_total(m), since = now - s->gc_mark;
    if (since <= 0) return; /* nothing allocated since the last collection */
    if (when == SQ_LUA_GC_PRESSURE && since < budget) return;
    /* A tensor alive across two young collections (a layer's input during
     * its forward, say) is old when it dies, and only a full collection
     * finds it: one whenever 1 GiB has been allocated since the last (also
     * under no_grad, where no backward pass comes: evaluating a large model
     * ran the GPU out of memory on old dead activations), and after at
     * least every 64th backward pass.  A full collection costs ~50 us. */
    int full = now - s->gc_full_mark > gib ||
               (when == SQ_LUA_GC_AFTER_BACKWARD && ++s->gc_backwards % 64 == 0);
    if (!s->gc_generational) {
        lua_gc(L, LUA_GCGEN, 0, 0); /* enters with a full collection */
        s->gc_generational = 1;
        full = 1;
    } else if (full) {
        lua_gc(L, LUA_GCCOLLECT);
    } else {
        lua_gc(L, LUA_GCSTEP, 0); /* a young collection in generational mode */
    }
    if (full) s->gc_full_mark = now;
    s->gc_mark = now;
}

sq_tensor *sq_lua_check_tensor(lua_State *L, int arg)
{
    sq_lua_tensor *ud = luaL_testudata(L, arg, SQ_LUA_TENSOR_MT);
    if (!ud) luaL_typeerror(L, arg, "tensor");
    if (!ud->t) luaL_argerror(L, arg, "tensor is closed");
    return ud->t;
}

sq_tensor *sq_lua_opt_tensor(lua_State *L, int arg)
{
    if (lua_isnoneornil(L, arg)) return NULL;
    return sq_lua_check_tensor(L, arg);
}

void sq_lua_push_tensor(lua_State *L, sq_tensor *t)
{
    /* The userdata starts empty (t = NULL) so that its __gc is harmless
     * whatever happens before the tensor is stored into it. */
    if (t) sq_lua_device_gc(L, SQ_LUA_GC_PRESSURE);
    sq_lua_tensor *ud = lua_newuserdatauv(L, sizeof *ud, 0);
    ud->t = NULL;
    luaL_setmetatable(L, SQ_LUA_TENSOR_MT);
    ud->t = t;
}

int sq_lua_raise(lua_State *L, const char *fname, sq_status st)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    const char *msg = ctx->err[0] ? ctx->err : sq_status_name(st);
    size_t n = strlen(fname);
    /* engine messages usually start with the op's own name already */
    if (strncmp(msg, fname, n) == 0 && msg[n] == ':') return luaL_error(L, "%s", msg);
    return luaL_error(L, "%s: %s", fname, msg);
}

/* An integer size, or -1 where an op infers it. */
static int64_t check_size(lua_State *L, int arg, int isnum, lua_Integer v, int pos)
{
    if (!isnum) return luaL_argerror(L, arg, lua_pushfstring(L, "shape entry %d is not an integer", pos));
    if (v < -1) return luaL_argerror(L, arg, lua_pushfstring(L, "negative size %I in the shape", v));
    return (int64_t)v;
}

int sq_lua_check_shape(lua_State *L, int arg, int64_t *shape)
{
    int nd = 0;
    if (lua_istable(L, arg)) {
        lua_Integer len = luaL_len(L, arg);
        if (len > SQ_MAX_DIMS)
            return luaL_argerror(L, arg, lua_pushfstring(L, "shape has %I dims, at most %d allowed",
                                                         len, SQ_MAX_DIMS));
        for (int i = 1; i <= (int)len; i++) {
            lua_geti(L, arg, i);
            int isnum = 0;
            lua_Integer v = lua_tointegerx(L, -1, &isnum);
            lua_pop(L, 1);
            shape[nd] = check_size(L, arg, isnum, v, i);
            nd++;
        }
        return nd;
    }
    int top = lua_gettop(L);
    for (int a = arg; a <= top && lua_type(L, a) == LUA_TNUMBER; a++) {
        if (nd == SQ_MAX_DIMS)
            return luaL_argerror(L, a, lua_pushfstring(L, "too many dims (at most %d)", SQ_MAX_DIMS));
        int isnum = 0;
        lua_Integer v = lua_tointegerx(L, a, &isnum);
        if (!isnum) luaL_argerror(L, a, "size must be an integer");
        shape[nd] = check_size(L, a, 1, v, nd + 1);
        nd++;
    }
    if (nd == 0 && !lua_isnoneornil(L, arg) && lua_type(L, arg) != LUA_TSTRING)
        luaL_typeerror(L, arg, "shape (table or integers)");
    return nd;
}

void sq_lua_setfuncs(lua_State *L, const luaL_Reg *fns, int ctx_index)
{
    for (; fns->name; fns++) {
        lua_pushvalue(L, ctx_index);
        lua_pushcclosure(L, fns->func, 1);
        lua_setfield(L, -2, fns->name);
    }
}

void sq_lua_new_class(lua_State *L, const char *name, const luaL_Reg *methods,
                      lua_CFunction close, lua_CFunction tostr, int ctx_index)
{
    if (!luaL_newmetatable(L, name)) {
        lua_pop(L, 1);
        return;
    }
    lua_newtable(L);
    sq_lua_setfuncs(L, methods, ctx_index);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, close);
    lua_setfield(L, -2, "__close");
    if (tostr) {
        lua_pushcfunction(L, tostr);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 1);
}
