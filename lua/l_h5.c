/* l_h5.c — Lua binding of HDF5 checkpoints (engine/sq_h5.h).
 *
 *   core.h5_save(path, tensors [, meta]) -> true
 *       tensors: {name = tensor, ...} (saved in natural name order:
 *       "layers.2" before "layers.10") or an array of {name =, tensor = | param =}
 *       records (saved in array order; Module:named_parameters() fits);
 *       names are [A-Za-z0-9_-] parts joined by dots ("layers.1.weight").
 *       meta: {key = string | number | boolean}; numbers are written exactly
 *       (integers as integers, floats with 17 significant digits).
 *   core.h5_load(path) -> tensors, meta, names
 *       tensors {name = tensor}, meta {key = string}, names the array of
 *       names in file order (save order for files written by h5_save).
 *   core.h5_load_tensor(path, name) -> tensor
 * Every failure RAISES (a checkpoint that cannot be written or read leaves a
 * script nothing sensible to do): "h5_load: <path>: not an HDF5 file ...",
 * "h5_load_tensor: <path>: no dataset 'x'; the file has 3: a, b, c". */
#include "sq_h5.h"
#include "sq_lua.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct { const char *name; sq_tensor *t; } named;

/* Natural order: dot-separated parts, all-digit parts compared as numbers. */
static int natural_cmp(const char *a, const char *b)
{
    while (*a && *b) {
        if (*a >= '0' && *a <= '9' && *b >= '0' && *b <= '9') {
            const char *ea = a, *eb = b;
            while (*ea >= '0' && *ea <= '9') ea++;
            while (*eb >= '0' && *eb <= '9') eb++;
            while (*a == '0' && a + 1 < ea) a++; /* leading zeros */
            while (*b == '0' && b + 1 < eb) b++;
            if (ea - a != eb - b) return ea - a < eb - b ? -1 : 1;
            int c = strncmp(a, b, (size_t)(ea - a));
            if (c) return c;
            a = ea;
            b = eb;
            continue;
        }
        if (*a != *b) return (unsigned char)*a < (unsigned char)*b ? -1 : 1;
        a++;
        b++;
    }
    return *a ? 1 : *b ? -1 : 0;
}

static int named_cmp(const void *x, const void *y)
{
    return natural_cmp(((const named *)x)->name, ((const named *)y)->name);
}

static sq_tensor *entry_tensor(lua_State *L, int idx, const char *what, lua_Integer i)
{
    sq_lua_tensor *ud = luaL_testudata(L, idx, SQ_LUA_TENSOR_MT);
    if (!ud || !ud->t) {
        if (i) luaL_argerror(L, 2, lua_pushfstring(L, "entry %I: %s is %s, not a tensor", i, what,
                                                    ud ? "a closed tensor" : luaL_typename(L, idx)));
        luaL_argerror(L, 2, lua_pushfstring(L, "'%s' is %s, not a tensor", what,
                                            ud ? "a closed tensor" : luaL_typename(L, idx)));
    }
    return ud->t;
}

/* Reads argument 2 into a GC-owned array; the names stay alive in arg 2. */
static named *check_tensors(lua_State *L, int *n_out)
{
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_Integer len = luaL_len(L, 2);
    int n = 0, is_array = len > 0;
    if (!is_array) {
        lua_pushnil(L);
        while (lua_next(L, 2)) {
            n++;
            lua_pop(L, 1);
        }
    } else {
        n = (int)len;
    }
    named *v = lua_newuserdatauv(L, (size_t)(n > 0 ? n : 1) * sizeof *v, 0);
    int k = 0;
    if (is_array) {
        for (lua_Integer i = 1; i <= len; i++) {
            if (lua_geti(L, 2, i) != LUA_TTABLE)
                luaL_argerror(L, 2, lua_pushfstring(L, "entry %I must be {name =, tensor =}, got %s", i,
                                                    luaL_typename(L, -1)));
            if (lua_getfield(L, -1, "name") != LUA_TSTRING)
                luaL_argerror(L, 2, lua_pushfstring(L, "entry %I has no string 'name'", i));
            v[k].name = lua_tostring(L, -1); /* held by the record, held by arg 2 */
            lua_pop(L, 1);
            if (lua_getfield(L, -1, "tensor") == LUA_TNIL) {
                lua_pop(L, 1);
                lua_getfield(L, -1, "param");
            }
            v[k].t = entry_tensor(L, -1, v[k].name, i);
            lua_pop(L, 2);
            k++;
        }
    } else {
        lua_pushnil(L);
        while (lua_next(L, 2)) {
            if (lua_type(L, -2) != LUA_TSTRING)
                luaL_argerror(L, 2, lua_pushfstring(L, "keys must be tensor names, got a %s key", luaL_typename(L, -2)));
            v[k].name = lua_tostring(L, -2);
            v[k].t = entry_tensor(L, -1, v[k].name, 0);
            lua_pop(L, 1);
            k++;
        }
        qsort(v, (size_t)n, sizeof *v, named_cmp);
    }
    *n_out = n;
    return v;
}

static int l_h5_save(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    lua_settop(L, 3); /* scratch pushed below must not look like an argument */
    const char *path = luaL_checkstring(L, 1);
    int n;
    named *v = check_tensors(L, &n);
    int nattr = 0;
    lua_newtable(L); /* holds converted meta values alive */
    int hold = lua_gettop(L);
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        lua_pushnil(L);
        while (lua_next(L, 3)) {
            if (lua_type(L, -2) != LUA_TSTRING)
                luaL_argerror(L, 3, lua_pushfstring(L, "meta keys must be strings, got a %s key", luaL_typename(L, -2)));
            const char *key = lua_tostring(L, -2);
            char num[64];
            switch (lua_type(L, -1)) {
            case LUA_TSTRING: lua_pushvalue(L, -1); break;
            case LUA_TBOOLEAN: lua_pushstring(L, lua_toboolean(L, -1) ? "true" : "false"); break;
            case LUA_TNUMBER:
                if (lua_isinteger(L, -1)) snprintf(num, sizeof num, "%lld", (long long)lua_tointeger(L, -1));
                else snprintf(num, sizeof num, "%.17g", lua_tonumber(L, -1));
                lua_pushstring(L, num);
                break;
            default:
                return luaL_argerror(L, 3, lua_pushfstring(L, "meta '%s' is a %s; use a string, number or boolean", key,
                                                           luaL_typename(L, -1)));
            }
            lua_setfield(L, hold, key);
            lua_pop(L, 1);
            nattr++;
        }
    }
    const char **names = lua_newuserdatauv(L, (size_t)(n + 1) * sizeof *names, 0);
    sq_tensor **ts = lua_newuserdatauv(L, (size_t)(n + 1) * sizeof *ts, 0);
    const char **keys = lua_newuserdatauv(L, (size_t)(nattr + 1) * sizeof *keys, 0);
    const char **vals = lua_newuserdatauv(L, (size_t)(nattr + 1) * sizeof *vals, 0);
    for (int i = 0; i < n; i++) {
        names[i] = v[i].name;
        ts[i] = v[i].t;
    }
    int k = 0;
    lua_pushnil(L);
    while (lua_next(L, hold)) { /* keys and values both live in `hold` */
        keys[k] = lua_tostring(L, -2);
        vals[k] = lua_tostring(L, -1);
        k++;
        lua_pop(L, 1);
    }
    sq_status st = sq_h5_save(ctx, path, n, names, ts, nattr, keys, vals);
    if (st != SQ_OK) return sq_lua_raise(L, "h5_save", st);
    lua_pushboolean(L, 1);
    return 1;
}

/* Pushes a tensor userdata that takes one new reference of t. */
static void push_retained(lua_State *L, sq_tensor *t)
{
    sq_lua_tensor *ud = lua_newuserdatauv(L, sizeof *ud, 0);
    ud->t = NULL;
    luaL_setmetatable(L, SQ_LUA_TENSOR_MT);
    sq_tensor_retain(t);
    ud->t = t;
}

#define SET_MT "squeeze.H5SetHolder"

/* The loaded set lives in a userdata with __gc until its tensors are handed
 * to Lua, so a memory error while building the result tables leaks nothing. */
static int set_gc(lua_State *L)
{
    sq_h5_set **p = luaL_checkudata(L, 1, SET_MT);
    sq_h5_set_free(*p);
    *p = NULL;
    return 0;
}

static int l_h5_load(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    const char *path = luaL_checkstring(L, 1);
    sq_h5_set **holder = lua_newuserdatauv(L, sizeof *holder, 0);
    *holder = NULL;
    if (luaL_newmetatable(L, SET_MT)) {
        lua_pushcfunction(L, set_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    sq_status st = sq_h5_load(ctx, path, holder);
    if (st != SQ_OK) return sq_lua_raise(L, "h5_load", st);
    sq_h5_set *s = *holder;
    lua_createtable(L, 0, s->n);     /* tensors */
    lua_createtable(L, 0, s->nattr); /* meta */
    lua_createtable(L, s->n, 0);     /* names */
    for (int i = 0; i < s->n; i++) {
        push_retained(L, s->tensors[i]);
        lua_setfield(L, -4, s->names[i]);
        lua_pushstring(L, s->names[i]);
        lua_rawseti(L, -2, i + 1);
    }
    for (int i = 0; i < s->nattr; i++) {
        lua_pushstring(L, s->values[i]);
        lua_setfield(L, -3, s->keys[i]);
    }
    sq_h5_set_free(s); /* the userdata hold their own references now */
    *holder = NULL;
    return 3;
}

static int l_h5_load_tensor(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    const char *path = luaL_checkstring(L, 1);
    const char *name = luaL_checkstring(L, 2);
    sq_lua_tensor *ud = lua_newuserdatauv(L, sizeof *ud, 0);
    ud->t = NULL;
    luaL_setmetatable(L, SQ_LUA_TENSOR_MT);
    sq_status st = sq_h5_load_tensor(ctx, path, name, &ud->t);
    if (st != SQ_OK) return sq_lua_raise(L, "h5_load_tensor", st);
    return 1;
}

static const luaL_Reg h5_fns[] = {
    {"h5_save", l_h5_save},
    {"h5_load", l_h5_load},
    {"h5_load_tensor", l_h5_load_tensor},
    {NULL, NULL},
};

void sq_lua_open_h5(lua_State *L, int ctx_index)
{
    sq_lua_setfuncs(L, h5_fns, ctx_index);
}
