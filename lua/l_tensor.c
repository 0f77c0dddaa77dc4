/* l_tensor.c — the tensor userdata (`squeeze.Tensor`), creation functions,
 * every op of sq_ops.h, autograd controls and memory accounting for Lua.
 *
 * Index conventions (Lua side):
 *  - dims are 1-based; negative dims count from the end (-1 is the last);
 *  - positions passed as Lua integers (get/set, narrow's start) are 1-based;
 *  - values stored INSIDE index tensors (class targets, token ids, the
 *    result of argmax, index_select / gather / embedding indices) are data
 *    and stay 0-based, exactly as datasets store them.
 *
 * Ownership: every binding checks its arguments first, then creates its
 * result userdata empty (t = NULL) before the engine allocates anything, so
 * an engine failure leaves only an empty userdata behind and the raise
 * leaks nothing; temporaries are released before raising.
 *
 * Devices: tensors live on the CPU or the GPU ("cuda"); creation takes
 * {device = "cuda"}, t:cuda() / t:cpu() / t:to("cuda") move, and ops run
 * where their inputs are.  Reading values from a GPU tensor (item, get,
 * tolist, printing, bytes) copies it to the CPU, which waits for the GPU:
 * that is where an error a kernel found (an index out of range) is raised. */
#include "sq_lua.h"
#include "sq_device.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define GUARD_MT "squeeze.GradMode"

/* ---- helpers ----------------------------------------------------------------- */

/* Pushes an empty tensor userdata (t = NULL) and returns its slot. */
static sq_lua_tensor *new_slot(lua_State *L)
{
    sq_lua_device_gc(L, SQ_LUA_GC_PRESSURE);
    sq_lua_tensor *ud = lua_newuserdatauv(L, sizeof *ud, 0);
    ud->t = NULL;
    luaL_setmetatable(L, SQ_LUA_TENSOR_MT);
    return ud;
}

/* Raises for an engine failure.  A shape mismatch is reported against the
 * argument it concerns ("bad argument #2 to 'matmul' (shapes 3x4 and 5x6 do
 * not match)"); anything else reads "name: <engine message>". */
static int fail(lua_State *L, const char *name, sq_status st, int shape_arg)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    if (st == SQ_ERR_SHAPE && shape_arg > 0 && ctx->err[0]) {
        const char *msg = ctx->err, *colon = strstr(msg, ": ");
        if (colon && (size_t)(colon - msg) < 32 && !memchr(msg, ' ', (size_t)(colon - msg)))
            msg = colon + 2; /* drop the engine's "op: " prefix */
        return luaL_argerror(L, shape_arg, msg);
    }
    return sq_lua_raise(L, name, st);
}

static const char *const dtype_names[] = {"float32", "float64", "int32", "int64", NULL};

static sq_dtype check_dtype_at(lua_State *L, int arg, int idx)
{
    const char *s = lua_tostring(L, idx);
    if (s) {
        for (int i = 0; dtype_names[i]; i++)
            if (strcmp(s, dtype_names[i]) == 0) return (sq_dtype)i;
        if (strcmp(s, "float") == 0) return SQ_F32;
        if (strcmp(s, "double") == 0) return SQ_F64;
        if (strcmp(s, "int") == 0) return SQ_I32;
        if (strcmp(s, "long") == 0) return SQ_I64;
    }
    luaL_argerror(L, arg, lua_pushfstring(L, "unknown dtype '%s' (float32, float64, int32 or int64)",
                                          s ? s : luaL_typename(L, idx)));
    return SQ_F32;
}

/* "cpu" | "cuda" at stack index idx, else an argument error at arg. */
static sq_device check_device_at(lua_State *L, int arg, int idx)
{
    const char *s = lua_tostring(L, idx);
    int d = sq_device_parse(s);
    if (d < 0)
        luaL_argerror(L, arg, lua_pushfstring(L, "unknown device '%s' (cpu or cuda)",
                                              s ? s : luaL_typename(L, idx)));
    return (sq_device)d;
}

/* Options at arg: nil, a dtype string, or a table {dtype=..., requires_grad=..., device=...}. */
typedef struct {
    sq_dtype dtype;
    int requires_grad;
    sq_device device;
} create_opts;

static create_opts check_opts_dev(lua_State *L, int arg, sq_dtype def, sq_device defdev)
{
    create_opts o = {def, 0, defdev};
    int ty = lua_type(L, arg);
    if (ty == LUA_TNONE || ty == LUA_TNIL) return o;
    if (ty == LUA_TSTRING) {
        o.dtype = check_dtype_at(L, arg, arg);
        return o;
    }
    if (ty != LUA_TTABLE) {
        luaL_typeerror(L, arg, "dtype string or options table");
        return o;
    }
    if (lua_getfield(L, arg, "dtype") != LUA_TNIL) o.dtype = check_dtype_at(L, arg, -1);
    lua_pop(L, 1);
    lua_getfield(L, arg, "requires_grad");
    o.requires_grad = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (lua_getfield(L, arg, "device") != LUA_TNIL) o.device = check_device_at(L, arg, -1);
    lua_pop(L, 1);
    return o;
}

static create_opts check_opts(lua_State *L, int arg, sq_dtype def)
{
    return check_opts_dev(L, arg, def, SQ_CPU);
}

/* Moves the tensor of slot (made on the CPU) to dev, in place of the slot's
 * tensor; requires_grad is set afterwards by the caller. */
static sq_status move_slot(lua_State *L, sq_lua_tensor *slot, sq_device dev)
{
    if (dev == SQ_CPU) return SQ_OK;
    sq_tensor *moved = NULL;
    sq_status st = sq_tensor_to_device(sq_lua_ctx(L), slot->t, dev, &moved);
    if (st != SQ_OK) return st;
    sq_tensor_release(slot->t);
    slot->t = moved;
    return SQ_OK;
}

/* t itself when on the CPU; else a CPU copy held by a slot pushed on the
 * stack (so a raise cannot leak it).  Copying waits for the GPU and
 * raises what its kernels reported. */
static sq_tensor *on_host(lua_State *L, sq_tensor *t, const char *name)
{
    if (t->storage->device == SQ_CPU) return t;
    sq_lua_tensor *slot = new_slot(L);
    sq_status st = sq_tensor_to_device(sq_lua_ctx(L), t, SQ_CPU, &slot->t);
    if (st != SQ_OK) {
        sq_ctx *ctx = sq_lua_ctx(L);
        const char *msg = ctx->err[0] ? ctx->err : sq_status_name(st);
        luaL_error(L, "%s: %s", name, msg);
    }
    return slot->t;
}

/* A number field of the options table at arg (default when absent). */
static double opt_field_number(lua_State *L, int arg, const char *key, double def)
{
    if (lua_type(L, arg) != LUA_TTABLE) return def;
    double v = def;
    if (lua_getfield(L, arg, key) != LUA_TNIL) {
        int ok = 0;
        v = lua_tonumberx(L, -1, &ok);
        if (!ok) luaL_argerror(L, arg, lua_pushfstring(L, "option '%s' must be a number", key));
    }
    lua_pop(L, 1);
    return v;
}

/* 1-based (or negative) Lua dim -> 0-based engine dim, range-checked. */
static int check_dim(lua_State *L, int arg, int ndim)
{
    lua_Integer d = luaL_checkinteger(L, arg);
    if (d == 0 || d > ndim || d < -ndim) {
        if (ndim == 0) return luaL_argerror(L, arg, "a scalar (0-d) tensor has no dims");
        return luaL_argerror(L, arg, lua_pushfstring(L, "dim %I out of range for a %d-d tensor "
                                                        "(dims are 1-based; -1 is the last)",
                                                     d, ndim));
    }
    return (int)(d > 0 ? d - 1 : d + ndim);
}

static int opt_dim(lua_State *L, int arg, int ndim)
{
    return lua_isnoneornil(L, arg) ? SQ_ALL_DIMS : check_dim(L, arg, ndim);
}

static int check_float_tensor(lua_State *L, int arg, const sq_tensor *t)
{
    if (!sq_is_float(t->dtype))
        return luaL_argerror(L, arg, lua_pushfstring(L, "float32 or float64 tensor expected, got %s",
                                                     sq_dtype_name(t->dtype)));
    return 0;
}

static int check_int_arg(lua_State *L, int arg, lua_Integer lo, const char *what)
{
    lua_Integer v = luaL_checkinteger(L, arg);
    if (v < lo || v > INT32_MAX)
        return luaL_argerror(L, arg, lua_pushfstring(L, "%s must be an integer >= %I", what, lo));
    return (int)v;
}

static void push_value(lua_State *L, sq_dtype dt, double v)
{
    if (sq_is_float(dt)) lua_pushnumber(L, v);
    else lua_pushinteger(L, (lua_Integer)v);
}

/* Element i of a contiguous tensor, reading 64-bit integers exactly. */
static void push_elem(lua_State *L, const sq_tensor *t, int64_t i)
{
    if (t->dtype == SQ_I64 && sq_tensor_is_contiguous(t))
        lua_pushinteger(L, (lua_Integer)((const int64_t *)sq_tensor_data(t))[i]);
    else push_value(L, t->dtype, sq_tensor_get_flat(t, i));
}

/* ---- lifetime: __gc / __close / close ------------------------------------------ */

static int t_gc(lua_State *L)
{
    sq_lua_tensor *ud = luaL_checkudata(L, 1, SQ_LUA_TENSOR_MT);
    sq_tensor_release(ud->t);
    ud->t = NULL;
    return 0;
}

static int t_is_closed(lua_State *L)
{
    sq_lua_tensor *ud = luaL_checkudata(L, 1, SQ_LUA_TENSOR_MT);
    lua_pushboolean(L, ud->t == NULL);
    return 1;
}

static int t_tostring(lua_State *L)
{
    sq_lua_tensor *ud = luaL_checkudata(L, 1, SQ_LUA_TENSOR_MT);
    if (!ud->t) {
        lua_pushliteral(L, "tensor(closed)");
        return 1;
    }
    int dev = ud->t->storage->device;
    const sq_tensor *t = on_host(L, ud->t, "tostring");
    char shape[128];
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    lua_pushfstring(L, "tensor(%s, %s%s%s){", sq_shape_str(t, shape, sizeof shape),
                    sq_dtype_name(t->dtype), dev == SQ_CUDA ? ", cuda" : "",
                    ud->t->requires_grad ? ", requires_grad" : "");
    luaL_addvalue(&b);
    int64_t n = sq_tensor_numel(t), show = n > 8 ? 6 : n;
    for (int64_t i = 0; i < show; i++) {
        char num[48];
        double v = sq_tensor_get_flat(t, i);
        if (sq_is_float(t->dtype)) snprintf(num, sizeof num, "%s%.6g", i ? ", " : "", v);
        else snprintf(num, sizeof num, "%s%lld", i ? ", " : "", (long long)v);
        luaL_addstring(&b, num);
    }
    if (show < n) luaL_addstring(&b, ", ...");
    luaL_addchar(&b, '}');
    luaL_pushresult(&b);
    return 1;
}

static int t_len(lua_State *L)
{
    sq_tensor *t = sq_lua_check_tensor(L, 1);
    if (t->ndim == 0) return luaL_argerror(L, 1, "a scalar (0-d) tensor has no length");
    lua_pushinteger(L, (lua_Integer)t->shape[0]);
    return 1;
}

/* ---- creation --------------------------------------------------------------------- */

typedef enum { FILL_EMPTY, FILL_ZEROS, FILL_ONES, FILL_RANDN, FILL_RAND } fill_kind;

/* f(shape... | {shape} [, opts]) */
static int create(lua_State *L, const char *name, fill_kind kind)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    int64_t shape[SQ_MAX_DIMS];
    int nd = sq_lua_check_shape(L, 1, shape);
    int optarg = lua_istable(L, 1) ? 2 : 1 + nd;
    for (int i = 0; i < nd; i++)
        if (shape[i] < 0) return luaL_argerror(L, 1, "sizes must be >= 0");
    create_opts o = check_opts(L, optarg, SQ_F32);
    if (o.device == SQ_CUDA && !sq_device_available(SQ_CUDA))
        return luaL_error(L, "%s: no usable GPU (squeeze.cuda.available() is false)", name);
    double a = 0, b = 1;
    if (kind == FILL_RANDN) {
        a = opt_field_number(L, optarg, "mean", 0.0);
        b = opt_field_number(L, optarg, "std", 1.0);
    } else if (kind == FILL_RAND) {
        a = opt_field_number(L, optarg, "low", 0.0);
        b = opt_field_number(L, optarg, "high", 1.0);
    }
    if ((kind == FILL_RANDN || kind == FILL_RAND || o.requires_grad) && !sq_is_float(o.dtype))
        return luaL_argerror(L, optarg, lua_pushfstring(L, "%s needs a float dtype, got %s", name,
                                                        sq_dtype_name(o.dtype)));
    sq_lua_tensor *slot = new_slot(L);
    sq_status st = SQ_OK;
    /* random values come from the context's generator on the CPU, so a seed
     * gives the same tensor on either device */
    switch (kind) {
    case FILL_EMPTY:
        st = sq_tensor_empty_dev(ctx, o.device, o.dtype, nd, shape, SQ_MEM_OTHER, &slot->t);
        break;
    case FILL_ZEROS: st = sq_tensor_zeros_dev(ctx, o.device, o.dtype, nd, shape, &slot->t); break;
    case FILL_ONES: st = sq_tensor_full_dev(ctx, o.device, o.dtype, nd, shape, 1.0, &slot->t); break;
    case FILL_RANDN: st = sq_tensor_randn(ctx, o.dtype, nd, shape, a, b, &slot->t); break;
    case FILL_RAND: st = sq_tensor_rand(ctx, o.dtype, nd, shape, a, b, &slot->t); break;
    }
    if (st == SQ_OK && (kind == FILL_RANDN || kind == FILL_RAND)) st = move_slot(L, slot, o.device);
    if (st != SQ_OK) return fail(L, name, st, 0);
    slot->t->requires_grad = o.requires_grad;
    return 1;
}

static int l_empty(lua_State *L) { return create(L, "empty", FILL_EMPTY); }
static int l_zeros(lua_State *L) { return create(L, "zeros", FILL_ZEROS); }
static int l_ones(lua_State *L) { return create(L, "ones", FILL_ONES); }
static int l_randn(lua_State *L) { return create(L, "randn", FILL_RANDN); }
static int l_rand(lua_State *L) { return create(L, "rand", FILL_RAND); }

/* full({shape}, value [, opts]) */
static int l_full(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    int64_t shape[SQ_MAX_DIMS];
    int nd = sq_lua_check_shape(L, 1, shape);
    for (int i = 0; i < nd; i++)
        if (shape[i] < 0) return luaL_argerror(L, 1, "sizes must be >= 0");
    double v = luaL_checknumber(L, 2);
    create_opts o = check_opts(L, 3, SQ_F32);
    sq_lua_tensor *slot = new_slot(L);
    sq_status st = sq_tensor_full_dev(ctx, o.device, o.dtype, nd, shape, v, &slot->t);
    if (st != SQ_OK) return fail(L, "full", st, 0);
    slot->t->requires_grad = o.requires_grad && sq_is_float(o.dtype);
    return 1;
}

/* zeros_like / ones_like (t [, opts]) */
static int like(lua_State *L, const char *name, double v)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    sq_tensor *t = sq_lua_check_tensor(L, 1);
    create_opts o = check_opts_dev(L, 2, t->dtype, t->storage->device);
    sq_lua_tensor *slot = new_slot(L);
    sq_status st = sq_tensor_full_dev(ctx, o.device, o.dtype, t->ndim, t->shape, v, &slot->t);
    if (st != SQ_OK) return fail(L, name, st, 0);
    slot->t->requires_grad = o.requires_grad && sq_is_float(o.dtype);
    return 1;
}

static int l_zeros_like(lua_State *L) { return like(L, "zeros_like", 0.0); }
static int l_ones_like(lua_State *L) { return like(L, "ones_like", 1.0); }

/* arange(stop) / arange(start, stop [, step]) [, opts]: values in [start, stop).
 * int64 when every bound is an integer (like torch), else float32. */
static int l_arange(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    int nnum = 0, allint = 1;
    double v[3] = {0, 0, 1};
    while (nnum < 3 && lua_type(L, nnum + 1) == LUA_TNUMBER) {
        allint &= lua_isinteger(L, nnum + 1);
        v[nnum] = lua_tonumber(L, nnum + 1);
        nnum++;
    }
    if (nnum == 0) return luaL_typeerror(L, 1, "number");
    double start = nnum == 1 ? 0 : v[0], stop = nnum == 1 ? v[0] : v[1], step = nnum == 3 ? v[2] : 1;
    if (step == 0) return luaL_argerror(L, 3, "step must be non-zero");
    create_opts o = check_opts(L, nnum + 1, allint ? SQ_I64 : SQ_F32);
    sq_lua_tensor *slot = new_slot(L);
    sq_status st = sq_tensor_arange(ctx, o.dtype, start, stop, step, &slot->t);
    if (st == SQ_OK) st = move_slot(L, slot, o.device);
    if (st != SQ_OK) return fail(L, "arange", st, 0);
    return 1;
}

/* Stores Lua number/integer at index -1 into element i of contiguous t. */
static int store_lua_number(lua_State *L, sq_tensor *t, int64_t i)
{
    void *p = sq_tensor_data(t);
    int isint = 0;
    switch (t->dtype) {
    case SQ_F32: ((float *)p)[i] = (float)lua_tonumber(L, -1); return 1;
    case SQ_F64: ((double *)p)[i] = lua_tonumber(L, -1); return 1;
    case SQ_I32: {
        lua_Integer v = lua_tointegerx(L, -1, &isint);
        if (!isint || v < INT32_MIN || v > INT32_MAX) return 0;
        ((int32_t *)p)[i] = (int32_t)v;
        return 1;
    }
    case SQ_I64: {
        lua_Integer v = lua_tointegerx(L, -1, &isint);
        if (!isint) return 0;
        ((int64_t *)p)[i] = (int64_t)v;
        return 1;
    }
    default: return 0;
    }
}

/* Fills t (contiguous) from the nested table at the top of the stack. */
static void fill_nested(lua_State *L, sq_tensor *t, int depth, int64_t *pos)
{
    luaL_checkstack(L, 4, "nested table too deep");
    lua_Integer len = luaL_len(L, -1);
    if (len != t->shape[depth])
        luaL_argerror(L, 1, lua_pushfstring(L, "ragged nested table: %I entries at depth %d where "
                                               "%I expected", len, depth + 1, (lua_Integer)t->shape[depth]));
    for (lua_Integer i = 1; i <= len; i++) {
        int ty = lua_geti(L, -1, i);
        if (depth + 1 < t->ndim) {
            if (ty != LUA_TTABLE)
                luaL_argerror(L, 1, lua_pushfstring(L, "entry at depth %d is a %s where a table is "
                                                       "expected", depth + 1, lua_typename(L, ty)));
            fill_nested(L, t, depth + 1, pos);
        } else {
            if (ty != LUA_TNUMBER)
                luaL_argerror(L, 1, lua_pushfstring(L, "entry at depth %d is a %s where a number is "
                                                       "expected", depth + 1, lua_typename(L, ty)));
            if (!store_lua_number(L, t, (*pos)++))
                luaL_argerror(L, 1, lua_pushfstring(L, "value %s does not fit dtype %s",
                                                    lua_tostring(L, -1), sq_dtype_name(t->dtype)));
        }
        lua_pop(L, 1);
    }
}

/* tensor(nested table | number [, opts]) */
static int l_tensor(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    int ty = lua_type(L, 1);
    if (ty != LUA_TTABLE && ty != LUA_TNUMBER) return luaL_typeerror(L, 1, "table or number");
    create_opts o = check_opts(L, 2, SQ_F32);
    if (o.requires_grad && !sq_is_float(o.dtype))
        return luaL_argerror(L, 2, "requires_grad needs a float dtype");
    int64_t shape[SQ_MAX_DIMS];
    int nd = 0;
    if (ty == LUA_TTABLE) { /* shape from the first entry at every depth */
        lua_pushvalue(L, 1);
        while (lua_type(L, -1) == LUA_TTABLE) {
            if (nd == SQ_MAX_DIMS)
                return luaL_argerror(L, 1, lua_pushfstring(L, "more than %d nesting levels", SQ_MAX_DIMS));
            lua_Integer len = luaL_len(L, -1);
            shape[nd++] = (int64_t)len;
            if (len == 0) break;
            lua_geti(L, -1, 1);
            lua_remove(L, -2);
        }
        lua_pop(L, 1);
    }
    sq_lua_tensor *slot = new_slot(L); /* owns the tensor from here on */
    sq_status st = sq_tensor_empty(ctx, o.dtype, nd, shape, &slot->t);
    if (st != SQ_OK) return fail(L, "tensor", st, 0);
    int64_t pos = 0;
    lua_pushvalue(L, 1);
    if (nd == 0) {
        if (!store_lua_number(L, slot->t, 0))
            return luaL_argerror(L, 1, lua_pushfstring(L, "value does not fit dtype %s",
                                                       sq_dtype_name(o.dtype)));
    } else {
        fill_nested(L, slot->t, 0, &pos);
    }
    lua_pop(L, 1);
    st = move_slot(L, slot, o.device);
    if (st != SQ_OK) return fail(L, "tensor", st, 0);
    slot->t->requires_grad = o.requires_grad;
    return 1;
}

/* from_string(bytes, dtype [, shape]): raw native-endian bytes. */
static int l_from_string(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    sq_dtype dt = check_dtype_at(L, 2, 2);
    int64_t shape[SQ_MAX_DIMS];
    size_t es = sq_dtype_size(dt);
    int nd = 1;
    shape[0] = (int64_t)(len / es);
    if (!lua_isnoneornil(L, 3)) nd = sq_lua_check_shape(L, 3, shape);
    int64_t n = 1;
    for (int i = 0; i < nd; i++) {
        if (shape[i] < 0) return luaL_argerror(L, 3, "sizes must be >= 0");
        n *= shape[i];
    }
    if ((size_t)n * es != len)
        return luaL_argerror(L, 1, lua_pushfstring(L, "%I bytes do not hold %I %s values",
                                                   (lua_Integer)len, (lua_Integer)n, sq_dtype_name(dt)));
    sq_lua_tensor *slot = new_slot(L);
    sq_status st = sq_tensor_empty(ctx, dt, nd, shape, &slot->t);
    if (st != SQ_OK) return fail(L, "from_string", st, 0);
    if (len) memcpy(sq_tensor_data(slot->t), s, len);
    return 1;
}

static int t_bytes(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    sq_tensor *t = on_host(L, sq_lua_check_tensor(L, 1), "bytes"), *c;
    sq_status st = sq_tensor_contiguous_raw(ctx, t, &c);
    if (st != SQ_OK) return fail(L, "bytes", st, 0);
    /* lua_pushlstring may raise on OOM: copy through a Lua buffer first */
    size_t n = (size_t)sq_tensor_numel(c) * sq_dtype_size(c->dtype);
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, n);
    if (n) memcpy(p, sq_tensor_data(c), n);
    sq_tensor_release(c);
    luaL_pushresultsize(&b, n);
    return 1;
}

static int l_is_tensor(lua_State *L)
{
    lua_pushboolean(L, luaL_testudata(L, 1, SQ_LUA_TENSOR_MT) != NULL);
    return 1;
}

/* ---- queries ------------------------------------------------------------------------- */

static void push_int_table(lua_State *L, int n, const int64_t *v)
{
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_pushinteger(L, (lua_Integer)v[i]);
        lua_seti(L, -2, i + 1);
    }
}

static int t_shape(lua_State *L)
{
    sq_tensor *t = sq_lua_check_tensor(L, 1);
    push_int_table(L, t->ndim, t->shape);
    return 1;
}

static int t_size(lua_State *L)
{
    sq_tensor *t = sq_lua_check_tensor(L, 1);
    if (lua_isnoneornil(L, 2)) return t_shape(L);
    lua_pushinteger(L, (lua_Integer)t->shape[check_dim(L, 2, t->ndim)]);
    return 1;
}

static int t_stride(lua_State *L)
{
    sq_tensor *t = sq_lua_check_tensor(L, 1);
    if (lua_isnoneornil(L, 2)) push_int_table(L, t->ndim, t->stride);
    else lua_pushinteger(L, (lua_Integer)t->stride[check_dim(L, 2, t->ndim)]);
    return 1;
}

static int t_dim(lua_State *L)
{
    lua_pushinteger(L, sq_lua_check_tensor(L, 1)->ndim);
    return 1;
}

static int t_numel(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)sq_tensor_numel(sq_lua_check_tensor(L, 1)));
    return 1;
}

static int t_dtype(lua_State *L)
{
    lua_pushstring(L, sq_dtype_name(sq_lua_check_tensor(L, 1)->dtype));
    return 1;
}

static int t_is_contiguous(lua_State *L)
{
    lua_pushboolean(L, sq_tensor_is_contiguous(sq_lua_check_tensor(L, 1)));
    return 1;
}

/* Flat row-major index from 1-based (or negative) Lua indices at args 2.. */
static int64_t check_position(lua_State *L, const sq_tensor *t, int nidx)
{
    if (nidx != t->ndim)
        luaL_argerror(L, 2, lua_pushfstring(L, "%d indices given for a %d-d tensor", nidx, t->ndim));
    int64_t flat = 0;
    for (int d = 0; d < t->ndim; d++) {
        lua_Integer i = luaL_checkinteger(L, 2 + d);
        int64_t n = t->shape[d];
        if (i < 0) i += n + 1;
        if (i < 1 || i > n)
            luaL_argerror(L, 2 + d, lua_pushfstring(L, "index %I out of range 1..%I for dim %d",
                                                    luaL_checkinteger(L, 2 + d), (lua_Integer)n, d + 1));
        flat = flat * n + (i - 1);
    }
    return flat;
}

/* t:get(i, j, ...) — 1-based; negative indices count from the end. */
/* A 0-d view of the element at flat position `flat` of t. */
static sq_status element_view(sq_ctx *ctx, sq_tensor *t, int64_t flat, sq_tensor **out)
{
    int64_t off = t->offset, rem = flat;
    for (int d = t->ndim - 1; d >= 0; d--) {
        off += (rem % t->shape[d]) * t->stride[d];
        rem /= t->shape[d];
    }
    return sq_view_raw(ctx, t, 0, NULL, NULL, off, out);
}

static int t_get(lua_State *L)
{
    sq_tensor *t = sq_lua_check_tensor(L, 1);
    int64_t flat = check_position(L, t, lua_gettop(L) - 1);
    if (t->storage->device != SQ_CPU) { /* copy just the element back */
        sq_lua_tensor *e = new_slot(L);
        sq_status st = element_view(sq_lua_ctx(L), t, flat, &e->t);
        if (st != SQ_OK) return fail(L, "get", st, 0);
        t = on_host(L, e->t, "get");
        flat = 0;
    }
    if (t->dtype == SQ_I64) { /* exact 64-bit read through the strides */
        int64_t off = t->offset, rem = flat;
        for (int d = t->ndim - 1; d >= 0; d--) {
            off += (rem % t->shape[d]) * t->stride[d];
            rem /= t->shape[d];
        }
        lua_pushinteger(L, (lua_Integer)((const int64_t *)t->storage->data)[off]);
        return 1;
    }
    push_value(L, t->dtype, sq_tensor_get_flat(t, flat));
    return 1;
}

/* t:set(i, j, ..., value) */
static int t_set(lua_State *L)
{
    sq_tensor *t = sq_lua_check_tensor(L, 1);
    int top = lua_gettop(L);
    if (top < 2) return luaL_argerror(L, 2, "value expected");
    int64_t flat = check_position(L, t, top - 2);
    if (t->storage->device != SQ_CPU) { /* the value is written on the host, then copied over */
        sq_ctx *ctx = sq_lua_ctx(L);
        sq_lua_tensor *e = new_slot(L), *h = new_slot(L);
        sq_status st = element_view(ctx, t, flat, &e->t);
        if (st == SQ_OK) st = sq_tensor_empty(ctx, t->dtype, 0, NULL, &h->t);
        if (st != SQ_OK) return fail(L, "set", st, 0);
        if (sq_is_float(t->dtype)) {
            sq_tensor_set_flat(h->t, 0, luaL_checknumber(L, top));
        } else {
            lua_Integer v = luaL_checkinteger(L, top);
            if (t->dtype == SQ_I32 && (v < INT32_MIN || v > INT32_MAX))
                return luaL_argerror(L, top, "value does not fit int32");
            if (t->dtype == SQ_I64) *(int64_t *)sq_tensor_data(h->t) = (int64_t)v;
            else sq_tensor_set_flat(h->t, 0, (double)v);
        }
        st = sq_tensor_copy_(ctx, e->t, h->t);
        if (st != SQ_OK) return fail(L, "set", st, 0);
        lua_settop(L, 1);
        return 1;
    }
    if (sq_is_float(t->dtype)) {
        sq_tensor_set_flat(t, flat, luaL_checknumber(L, top));
    } else {
        lua_Integer v = luaL_checkinteger(L, top);
        if (t->dtype == SQ_I64) {
            int64_t off = t->offset, rem = flat;
            for (int d = t->ndim - 1; d >= 0; d--) {
                off += (rem % t->shape[d]) * t->stride[d];
                rem /= t->shape[d];
            }
            ((int64_t *)t->storage->data)[off] = (int64_t)v;
        } else {
            if (v < INT32_MIN || v > INT32_MAX) return luaL_argerror(L, top, "value does not fit int32");
            sq_tensor_set_flat(t, flat, (double)v);
        }
    }
    lua_settop(L, 1);
    return 1;
}

static int t_item(lua_State *L)
{
    sq_tensor *t = sq_lua_check_tensor(L, 1);
    int64_t n = sq_tensor_numel(t);
    if (n != 1)
        return luaL_argerror(L, 1, lua_pushfstring(L, "item() needs a one-element tensor, this one "
                                                      "has %I elements", (lua_Integer)n));
    t = on_host(L, t, "item");
    if (t->dtype == SQ_I64) lua_pushinteger(L, (lua_Integer)*(const int64_t *)sq_tensor_data(t));
    else push_value(L, t->dtype, sq_tensor_get_flat(t, 0));
    return 1;
}

static void tolist_rec(lua_State *L, const sq_tensor *c, int depth, int64_t *pos)
{
    if (depth == c->ndim) {
        push_elem(L, c, (*pos)++);
        return;
    }
    luaL_checkstack(L, 3, "tensor too deep");
    int64_t n = c->shape[depth];
    lua_createtable(L, n > INT32_MAX ? 0 : (int)n, 0);
    for (int64_t i = 0; i < n; i++) {
        tolist_rec(L, c, depth + 1, pos);
        lua_seti(L, -2, (lua_Integer)i + 1);
    }
}

/* nested Lua tables (a number for a 0-d tensor) */
static int t_tolist(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    sq_tensor *t = on_host(L, sq_lua_check_tensor(L, 1), "tolist");
    sq_lua_tensor *tmp = new_slot(L); /* holds the contiguous copy while we build */
    sq_status st = sq_tensor_contiguous_raw(ctx, t, &tmp->t);
    if (st != SQ_OK) return fail(L, "tolist", st, 0);
    int64_t pos = 0;
    tolist_rec(L, tmp->t, 0, &pos);
    return 1;
}

/* ---- conversions and copies --------------------------------------------------------- */

static int convert(lua_State *L, sq_tensor *t, sq_dtype dt)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    sq_lua_tensor *slot = new_slot(L);
    if (t->dtype == dt) {
        sq_tensor_retain(t);
        slot->t = t;
        return 1;
    }
    sq_status st = sq_tensor_to_dtype(ctx, t, dt, &slot->t);
    if (st != SQ_OK) return fail(L, "to", st, 0);
    return 1;
}

/* t:to(device) -> a copy on "cpu" / "cuda" (t itself when already there) */
static int move(lua_State *L, sq_tensor *t, sq_device dev, const char *name)
{
    if (dev == SQ_CUDA && !sq_device_available(SQ_CUDA))
        return luaL_error(L, "%s: no usable GPU (squeeze.cuda.available() is false)", name);
    sq_lua_tensor *slot = new_slot(L);
    sq_status st = sq_tensor_to_device(sq_lua_ctx(L), t, dev, &slot->t);
    if (st != SQ_OK) return fail(L, name, st, 0);
    return 1;
}

/* t:to(dtype | device | {dtype =, device =}) */
static int t_to(lua_State *L)
{
    sq_tensor *t = sq_lua_check_tensor(L, 1);
    const char *s = lua_tostring(L, 2);
    if (lua_type(L, 2) == LUA_TSTRING && sq_device_parse(s) >= 0)
        return move(L, t, (sq_device)sq_device_parse(s), "to");
    if (lua_istable(L, 2)) {
        create_opts o = check_opts_dev(L, 2, t->dtype, t->storage->device);
        convert(L, t, o.dtype);
        return move(L, sq_lua_check_tensor(L, -1), o.device, "to");
    }
    return convert(L, t, check_dtype_at(L, 2, 2));
}

static int t_cuda(lua_State *L) { return move(L, sq_lua_check_tensor(L, 1), SQ_CUDA, "cuda"); }
static int t_cpu(lua_State *L) { return move(L, sq_lua_check_tensor(L, 1), SQ_CPU, "cpu"); }

static int t_device(lua_State *L)
{
    lua_pushstring(L, sq_device_name(sq_lua_check_tensor(L, 1)->storage->device));
    return 1;
}

static int t_is_cuda(lua_State *L)
{
    lua_pushboolean(L, sq_lua_check_tensor(L, 1)->storage->device == SQ_CUDA);
    return 1;
}
static int t_float(lua_State *L) { return convert(L, sq_lua_check_tensor(L, 1), SQ_F32); }
static int t_double(lua_State *L) { return convert(L, sq_lua_check_tensor(L, 1), SQ_F64); }
static int t_long(lua_State *L) { return convert(L, sq_lua_check_tensor(L, 1), SQ_I64); }
static int t_int(lua_State *L) { return convert(L, sq_lua_check_tensor(L, 1), SQ_I32); }

/* clone: a contiguous copy; differentiable for float tensors */
static int t_clone(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    sq_tensor *t = sq_lua_check_tensor(L, 1);
    sq_lua_tensor *slot = new_slot(L);
    sq_status st = sq_is_float(t->dtype) ? sq_scale_shift(ctx, t, 1.0, 0.0, &slot->t)
                                         : sq_tensor_clone(ctx, t, &slot->t);
    if (st != SQ_OK) return fail(L, "clone", st, 0);
    return 1;
}

static int t_contiguous(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    sq_tensor *t = sq_lua_check_tensor(L, 1);
    sq_lua_tensor *slot = new_slot(L);
    sq_status st = sq_contiguous(ctx, t, &slot->t);
    if (st != SQ_OK) return fail(L, "contiguous", st, 0);
    return 1;
}

/* t:copy_(src): copies src's values (same number of elements; dtype converted).
 * Not recorded by autograd: for initialising and loading parameters. */
static int t_copy_(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    sq_tensor *t = sq_lua_check_tensor(L, 1), *s = sq_lua_check_tensor(L, 2);
    if (sq_tensor_numel(t) != sq_tensor_numel(s)) {
        char a[64], b[64];
        return luaL_argerror(L, 2, lua_pushfstring(L, "shapes %s and %s hold different numbers of "
                                                      "elements", sq_shape_str(t, a, sizeof a),
                                                   sq_shape_str(s, b, sizeof b)));
    }
    sq_status st = sq_tensor_copy_(ctx, t, s);
    if (st != SQ_OK) return fail(L, "copy_", st, 2);
    lua_settop(L, 1);
    return 1;
}

static int t_fill_(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    sq_tensor *t = sq_lua_check_tensor(L, 1);
    double v = sq_is_float(t->dtype) ? luaL_checknumber(L, 2) : (double)luaL_checkinteger(L, 2);
    sq_status st = sq_tensor_fill_(ctx, t, v);
    if (st != SQ_OK) return fail(L, "fill_", st, 0);
    lua_settop(L, 1);
    return 1;
}

static int t_zero_(lua_State *L)
{
    lua_settop(L, 1);
    lua_pushinteger(L, 0);
    return t_fill_(L);
}

/* t:add_(other [, alpha]): t += alpha * other in place (other: tensor that
 * broadcasts to t, or a number).  Not recorded by autograd. */
static int t_add_(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    sq_tensor *t = sq_lua_check_tensor(L, 1);
    check_float_tensor(L, 1, t);
    double alpha = luaL_optnumber(L, 3, 1.0);
    sq_tensor *o = NULL, *scaled = NULL, *sum = NULL;
    double num = 0;
    if (lua_type(L, 2) == LUA_TNUMBER) num = lua_tonumber(L, 2);
    else o = sq_lua_check_tensor(L, 2);
    int mode = ctx->grad_enabled;
    ctx->grad_enabled = 0;
    sq_status st;
    if (o) {
        SQ_CHECK(sq_scale_shift(ctx, o, alpha, 0.0, &scaled));
        SQ_CHECK(sq_add(ctx, t, scaled, &sum));
        if (!sq_shape_equal(sum, t)) {
            char a[64], b[64];
            st = sq_fail(ctx, SQ_ERR_SHAPE, "add_: %s does not broadcast to %s",
                         sq_shape_str(o, a, sizeof a), sq_shape_str(t, b, sizeof b));
            goto done;
        }
    } else {
        SQ_CHECK(sq_scale_shift(ctx, t, 1.0, alpha * num, &sum));
    }
    SQ_CHECK(sq_tensor_copy_(ctx, t, sum));
done:
    ctx->grad_enabled = mode;
    sq_tensor_release(scaled);
    sq_tensor_release(sum);
    if (st != SQ_OK) return fail(L, "add_", st, 2);
    lua_settop(L, 1);
    return 1;
}

/* ---- views ----------------------------------------------------------------------------- */

static int t_reshape(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    sq_tensor *t = sq_lua_check_tensor(L, 1);
    int64_t shape[SQ_MAX_DIMS];
    int nd = sq_lua_check_shape(L, 2, shape);
    sq_lua_tensor *slot = new_slot(L);
    sq_status st = sq_reshape(ctx, t, nd, shape, &slot->t);
    if (st != SQ_OK) return fail(L, "reshape", st, 2);
    return 1;
}

/* transpose(t [, d1, d2]): defaults swap the last two dims */
static int t_transpose(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    sq_tensor *t = sq_lua_check_tensor(L, 1);
    if (t->ndim < 2 && lua_isnoneornil(L, 2))
        return luaL_argerror(L, 1, "transpose needs a tensor of at least 2 dims");
    int d0 = lua_isnoneornil(L, 2) ? t->ndim - 2 : check_dim(L, 2, t->ndim);
    int d1 = lua_isnoneornil(L, 3) ? t->ndim - 1 : check_dim(L, 3, t->ndim);
    sq_lua_tensor *slot = new_slot(L);
    sq_status st = sq_transpose(ctx, t, d0, d1, &slot->t);
    if (st != SQ_OK) return fail(L, "transpose", st, 0);
    return 1;
}

/* permute(t, p1, ..., pn | {p1, ..., pn}): 1-based dims */
static int t_permute(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    sq_tensor *t = sq_lua_check_tensor(L, 1);
    int64_t p64[SQ_MAX_DIMS];
    int n = sq_lua_check_shape(L, 2, p64), perm[SQ_MAX_DIMS], seen[SQ_MAX_DIMS] = {0};
    if (n != t->ndim)
        return luaL_argerror(L, 2, lua_pushfstring(L, "permutation of %d dims given for a %d-d tensor",
                                                   n, t->ndim));
    for (int i = 0; i < n; i++) {
        int64_t d = p64[i];
        if (d < 0) d += n + 1;
        if (d < 1 || d > n || seen[d - 1])
            return luaL_argerror(L, 2, lua_pushfstring(L, "not a permutation of 1..%d", n));
        seen[d - 1] = 1;
        perm[i] = (int)d - 1;
    }
    sq_lua_tensor *slot = new_slot(L);
    sq_status st = sq_permute(ctx, t, perm, &slot->t);
    if (st != SQ_OK) return fail(L, "permute", st, 0);
    return 1;
}

/* narrow(t, dim, start, len): start is 1-based (negative counts from the end) */
static int t_narrow(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    sq_tensor *t = sq_lua_check_tensor(L, 1);
    int dim = check_dim(L, 2, t->ndim);
    lua_Integer start = luaL_checkinteger(L, 3), len = luaL_checkinteger(L, 4);
    int64_t size = t->shape[dim];
    if (start < 0) start += size + 1;
    if (start < 1 || start > size + 1)
        return luaL_argerror(L, 3, lua_pushfstring(L, "start %I out of range 1..%I",
                                                   luaL_checkinteger(L, 3), (lua_Integer)size));
    if (len < 0 || len > size - (start - 1))
        return luaL_argerror(L, 4, lua_pushfstring(L, "length %I from %I runs past size %I", len,
                                                   start, (lua_Integer)size));
    sq_lua_tensor *slot = new_slot(L);
    sq_status st = sq_narrow(ctx, t, dim, start - 1, len, &slot->t);
    if (st != SQ_OK) return fail(L, "narrow", st, 0);
    return 1;
}

/* expand(t, shape...): -1 keeps a dim */
static int t_expand(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    sq_tensor *t = sq_lua_check_tensor(L, 1);
    int64_t shape[SQ_MAX_DIMS];
    int nd = sq_lua_check_shape(L, 2, shape);
    sq_lua_tensor *slot = new_slot(L);
    sq_status st = sq_expand(ctx, t, nd, shape, &slot->t);
    if (st != SQ_OK) return fail(L, "expand", st, 2);
    return 1;
}

static int reshape_to(lua_State *L, const char *name, sq_tensor *t, int nd, const int64_t *shape)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    sq_lua_tensor *slot = new_slot(L);
    sq_status st = sq_reshape(ctx, t, nd, shape, &slot->t);
    if (st != SQ_OK) return fail(L, name, st, 0);
    return 1;
}

/* unsqueeze(t, dim): a new size-1 dim at position dim (1..ndim+1; -1 appends) */
static int t_unsqueeze(lua_State *L)
{
    sq_tensor *t = sq_lua_check_tensor(L, 1);
    lua_Integer d = luaL_checkinteger(L, 2);
    int nd = t->ndim + 1;
    if (d < 0) d += nd + 1;
    if (d < 1 || d > nd || nd > SQ_MAX_DIMS)
        return luaL_argerror(L, 2, lua_pushfstring(L, "dim %I out of range for unsqueeze of a %d-d "
                                                      "tensor", luaL_checkinteger(L, 2), t->ndim));
    int64_t shape[SQ_MAX_DIMS];
    for (int i = 0, j = 0; i < nd; i++) shape[i] = (i == d - 1) ? 1 : t->shape[j++];
    return reshape_to(L, "unsqueeze", t, nd, shape);
}

/* squeeze(t [, dim]): drops size-1 dims (all, or just dim) */
static int t_squeeze(lua_State *L)
{
    sq_tensor *t = sq_lua_check_tensor(L, 1);
    int only = lua_isnoneornil(L, 2) ? -1 : check_dim(L, 2, t->ndim);
    int64_t shape[SQ_MAX_DIMS];
    int nd = 0;
    for (int i = 0; i < t->ndim; i++)
        if (t->shape[i] != 1 || (only >= 0 && i != only)) shape[nd++] = t->shape[i];
    return reshape_to(L, "squeeze", t, nd, shape);
}

/* flatten(t [, first=1 [, last=-1]]) */
static int t_flatten(lua_State *L)
{
    sq_tensor *t = sq_lua_check_tensor(L, 1);
    if (t->ndim == 0) return reshape_to(L, "flatten", t, 1, (int64_t[]){1});
    int a = lua_isnoneornil(L, 2) ? 0 : check_dim(L, 2, t->ndim);
    int b = lua_isnoneornil(L, 3) ? t->ndim - 1 : check_dim(L, 3, t->ndim);
    if (b < a) return luaL_argerror(L, 3, "last dim comes before the first");
    int64_t shape[SQ_MAX_DIMS];
    int nd = 0;
    for (int i = 0; i < t->ndim; i++) {
        if (i <= a || i > b) shape[nd++] = t->shape[i];
        else shape[nd - 1] *= t->shape[i];
    }
    return reshape_to(L, "flatten", t, nd, shape);
}

/* ---- arithmetic ------------------------------------------------------------------------- */

static const char *const binop_names[] = {"add", "sub", "mul", "div"};

/* a op b where either side may be a number. */
static int arith(lua_State *L, sq_binop op)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    const char *name = binop_names[op];
    int na = lua_type(L, 1) == LUA_TNUMBER, nb = lua_type(L, 2) == LUA_TNUMBER;
    if (na && nb) return luaL_typeerror(L, 1, "tensor");
    if (!na && !nb) {
        sq_tensor *a = sq_lua_check_tensor(L, 1), *b = sq_lua_check_tensor(L, 2);
        check_float_tensor(L, 1, a);
        check_float_tensor(L, 2, b);
        if (a->dtype != b->dtype)
            return luaL_argerror(L, 2, lua_pushfstring(L, "dtypes %s and %s differ",
                                                       sq_dtype_name(a->dtype), sq_dtype_name(b->dtype)));
        sq_lua_tensor *slot = new_slot(L);
        sq_status st = sq_binary(ctx, op, a, b, &slot->t);
        if (st != SQ_OK) return fail(L, name, st, 2);
        return 1;
    }
    int targ = na ? 2 : 1;
    sq_tensor *t = sq_lua_check_tensor(L, targ);
    check_float_tensor(L, targ, t);
    double s = lua_tonumber(L, na ? 1 : 2);
    sq_lua_tensor *slot = new_slot(L);
    sq_status st = SQ_OK;
    switch (op) {
    case SQ_BIN_ADD: st = sq_scale_shift(ctx, t, 1.0, s, &slot->t); break;
    case SQ_BIN_SUB: st = na ? sq_scale_shift(ctx, t, -1.0, s, &slot->t)
                             : sq_scale_shift(ctx, t, 1.0, -s, &slot->t); break;
    case SQ_BIN_MUL: st = sq_scale_shift(ctx, t, s, 0.0, &slot->t); break;
    case SQ_BIN_DIV:
        if (!na) {
            st = sq_scale_shift(ctx, t, 1.0 / s, 0.0, &slot->t);
        } else { /* s / t = s * t^-1 */
            sq_tensor *inv = NULL;
            st = sq_pow_scalar(ctx, t, -1.0, &inv);
            if (st == SQ_OK) st = sq_scale_shift(ctx, inv, s, 0.0, &slot->t);
            sq_tensor_release(inv);
        }
        break;
    }
    if (st != SQ_OK) return fail(L, name, st, 0);
    return 1;
}

static int t_add(lua_State *L) { return arith(L, SQ_BIN_ADD); }
static int t_sub(lua_State *L) { return arith(L, SQ_BIN_SUB); }
static int t_mul(lua_State *L) { return arith(L, SQ_BIN_MUL); }
static int t_div(lua_State *L) { return arith(L, SQ_BIN_DIV); }

/* scale_shift(t, mul [, add]) = t*mul + add */
static int t_scale_shift(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    sq_tensor *t = sq_lua_check_tensor(L, 1);
    check_float_tensor(L, 1, t);
    double m = luaL_checknumber(L, 2), a = luaL_optnumber(L, 3, 0.0);
    sq_lua_tensor *slot = new_slot(L);
    sq_status st = sq_scale_shift(ctx, t, m, a, &slot->t);
    if (st != SQ_OK) return fail(L, "scale_shift", st, 0);
    return 1;
}

static int t_pow(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    sq_tensor *t = sq_lua_check_tensor(L, 1);
    check_float_tensor(L, 1, t);
    if (lua_type(L, 2) != LUA_TNUMBER) return luaL_typeerror(L, 2, "number (exponent)");
    double p = lua_tonumber(L, 2);
    sq_lua_tensor *slot = new_slot(L);
    sq_status st = sq_pow_scalar(ctx, t, p, &slot->t);
    if (st != SQ_OK) return fail(L, "pow", st, 0);
    return 1;
}

static int unary(lua_State *L, sq_unop op)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    sq_tensor *t = sq_lua_check_tensor(L, 1);
    check_float_tensor(L, 1, t);
    sq_lua_tensor *slot = new_slot(L);
    sq_status st = sq_unary(ctx, op, t, &slot->t);
    if (st != SQ_OK) return fail(L, sq_unop_name(op), st, 0);
    return 1;
}

static int t_neg(lua_State *L) { return unary(L, SQ_UN_NEG); }
static int t_exp(lua_State *L) { return unary(L, SQ_UN_EXP); }
static int t_log(lua_State *L) { return unary(L, SQ_UN_LOG); }
static int t_sqrt(lua_State *L) { return unary(L, SQ_UN_SQRT); }
static int t_abs(lua_State *L) { return unary(L, SQ_UN_ABS); }
static int t_relu(lua_State *L) { return unary(L, SQ_UN_RELU); }
static int t_gelu(lua_State *L) { return unary(L, SQ_UN_GELU); }
static int t_sigmoid(lua_State *L) { return unary(L, SQ_UN_SIGMOID); }
static int t_tanh(lua_State *L) { return unary(L, SQ_UN_TANH); }

/* ---- reductions ------------------------------------------------------------------------ */

typedef sq_status (*reduce_fn)(sq_ctx *, sq_tensor *, int, int, sq_tensor **);

/* f(t [, dim [, keepdim]]): no dim reduces every element */
static int reduce(lua_State *L, const char *name, reduce_fn fn)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    sq_tensor *t = sq_lua_check_tensor(L, 1);
    check_float_tensor(L, 1, t);
    int dim = opt_dim(L, 2, t->ndim);
    int keep = lua_toboolean(L, 3);
    sq_lua_tensor *slot = new_slot(L);
    sq_status st = fn(ctx, t, dim, keep, &slot->t);
    if (st != SQ_OK) return fail(L, name, st, 0);
    return 1;
}

static int t_sum(lua_State *L) { return reduce(L, "sum", sq_sum); }
static int t_mean(lua_State *L) { return reduce(L, "mean", sq_mean); }
static int t_max(lua_State *L) { return reduce(L, "max", sq_max); }

/* argmax(t [, dim [, keepdim]]): int64 positions, 0-based (data, like class
 * targets); without dim, the flat position of the largest element. */
static int t_argmax(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    sq_tensor *t = sq_lua_check_tensor(L, 1);
    check_float_tensor(L, 1, t);
    int dim = lua_isnoneornil(L, 2) ? SQ_ALL_DIMS : check_dim(L, 2, t->ndim);
    int keep = lua_toboolean(L, 3);
    sq_lua_tensor *slot = new_slot(L);
    sq_tensor *flat = NULL, *r = NULL;
    sq_status st;
    if (dim == SQ_ALL_DIMS) {
        int64_t n = sq_tensor_numel(t);
        SQ_CHECK(sq_reshape(ctx, t, 1, &n, &flat));
        SQ_CHECK(sq_argmax(ctx, flat, 0, &r));
    } else {
        SQ_CHECK(sq_argmax(ctx, t, dim, &r));
    }
    if (keep) { /* put the reduced dim(s) back as size 1 */
        int64_t shape[SQ_MAX_DIMS];
        for (int i = 0; i < t->ndim; i++) shape[i] = (dim == SQ_ALL_DIMS || i == dim) ? 1 : t->shape[i];
        SQ_CHECK(sq_reshape(ctx, r, t->ndim, shape, &slot->t));
    } else {
        slot->t = r;
        r = NULL;
    }
done:
    sq_tensor_release(flat);
    sq_tensor_release(r);
    if (st != SQ_OK) return fail(L, "argmax", st, 0);
    return 1;
}

/* ---- linear algebra and nn ops ---------------------------------------------------------- */

/* matmul(a, b [, scale]) = scale * (a @ b), the scale applied inside the GEMM */
static int t_matmul(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    sq_tensor *a = sq_lua_check_tensor(L, 1), *b = sq_lua_check_tensor(L, 2);
    double scale = luaL_optnumber(L, 3, 1.0);
    if (!isfinite(scale)) return luaL_argerror(L, 3, "scale must be finite");
    sq_lua_tensor *slot = new_slot(L);
    sq_status st = sq_matmul_scaled(ctx, a, b, scale, &slot->t);
    if (st != SQ_OK) return fail(L, "matmul", st, 2);
    return 1;
}

/* linear(x, weight [, bias]) = x W^T + b */
static int t_linear(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    sq_tensor *x = sq_lua_check_tensor(L, 1), *w = sq_lua_check_tensor(L, 2);
    sq_tensor *b = sq_lua_opt_tensor(L, 3);
    int shape_arg = 2;
    if (b && b->ndim == 1 && w->ndim == 2 && b->shape[0] != w->shape[0]) shape_arg = 3;
    sq_lua_tensor *slot = new_slot(L);
    sq_status st = sq_linear(ctx, x, w, b, &slot->t);
    if (st != SQ_OK) return fail(L, "linear", st, shape_arg);
    return 1;
}

/* softmax options at arg: nil | causal boolean | dim number (must be the last)
 * | {dim=..., causal=...} */
static int softmax_causal(lua_State *L, int arg, const sq_tensor *t)
{
    int causal = 0, ty = lua_type(L, arg);
    if (ty == LUA_TNONE || ty == LUA_TNIL) return 0;
    if (ty == LUA_TBOOLEAN) return lua_toboolean(L, arg);
    int dimidx = 0;
    if (ty == LUA_TNUMBER) {
        dimidx = arg;
        causal = lua_toboolean(L, arg + 1);
    } else if (ty == LUA_TTABLE) {
        lua_getfield(L, arg, "causal");
        causal = lua_toboolean(L, -1);
        lua_pop(L, 1);
        if (lua_getfield(L, arg, "dim") != LUA_TNIL) lua_replace(L, arg), dimidx = arg;
        else lua_pop(L, 1);
    } else {
        return luaL_typeerror(L, arg, "dim, causal flag or options table");
    }
    if (dimidx && check_dim(L, dimidx, t->ndim) != t->ndim - 1)
        return luaL_argerror(L, arg, "softmax runs over the last dim only (-1)");
    return causal;
}

static int softmax_impl(lua_State *L, int logsm)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    const char *name = logsm ? "log_softmax" : "softmax";
    sq_tensor *x = sq_lua_check_tensor(L, 1);
    int causal = softmax_causal(L, 2, x);
    if (causal && (x->ndim < 2 || x->shape[x->ndim - 1] != x->shape[x->ndim - 2])) {
        char b[64];
        return luaL_argerror(L, 1, lua_pushfstring(L, "causal %s needs (...,T,T) scores, got %s", name,
                                                   sq_shape_str(x, b, sizeof b)));
    }
    sq_lua_tensor *slot = new_slot(L);
    sq_status st = logsm ? sq_log_softmax(ctx, x, causal, &slot->t) : sq_softmax(ctx, x, causal, &slot->t);
    if (st != SQ_OK) return fail(L, name, st, 1);
    return 1;
}

static int t_softmax(lua_State *L) { return softmax_impl(L, 0); }
static int t_log_softmax(lua_State *L) { return softmax_impl(L, 1); }

/* An index argument (class targets, token ids, positions): int64 or int32. */
static sq_tensor *check_index_tensor(lua_State *L, int arg, const char *what)
{
    sq_tensor *t = sq_lua_check_tensor(L, arg);
    if (t->dtype != SQ_I64 && t->dtype != SQ_I32)
        luaL_argerror(L, arg, lua_pushfstring(L, "%s must be int64 or int32, got %s", what,
                                              sq_dtype_name(t->dtype)));
    return t;
}

/* cross_entropy(logits (N,C), targets (N) int64/int32, 0-based classes) */
static int t_cross_entropy(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    sq_tensor *x = sq_lua_check_tensor(L, 1), *y = check_index_tensor(L, 2, "targets");
    sq_lua_tensor *slot = new_slot(L);
    sq_status st = sq_cross_entropy(ctx, x, y, &slot->t);
    if (st != SQ_OK) return fail(L, "cross_entropy", st, 2);
    return 1;
}

/* layer_norm(x [, weight [, bias [, eps=1e-5]]]) over the last dim */
static int t_layer_norm(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    sq_tensor *x = sq_lua_check_tensor(L, 1);
    sq_tensor *w = sq_lua_opt_tensor(L, 2), *b = sq_lua_opt_tensor(L, 3);
    double eps = luaL_optnumber(L, 4, 1e-5);
    if (!(eps > 0)) return luaL_argerror(L, 4, "eps must be > 0");
    sq_lua_tensor *slot = new_slot(L);
    sq_status st = sq_layer_norm(ctx, x, w, b, eps, &slot->t);
    if (st != SQ_OK) return fail(L, "layer_norm", st, 2);
    return 1;
}

/* affine(x, alpha [, beta]): per-channel x*alpha + beta on the last dim */
static int t_affine(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    sq_tensor *x = sq_lua_check_tensor(L, 1), *a = sq_lua_check_tensor(L, 2);
    sq_tensor *b = sq_lua_opt_tensor(L, 3);
    sq_lua_tensor *slot = new_slot(L);
    sq_status st = sq_affine(ctx, x, a, b, &slot->t);
    if (st != SQ_OK) return fail(L, "affine", st, 2);
    return 1;
}

/* embedding(idx, weight): idx int64/int32 of 0-based rows of weight (V,D) */
static int t_embedding(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    sq_tensor *idx = check_index_tensor(L, 1, "indices"), *w = sq_lua_check_tensor(L, 2);
    sq_lua_tensor *slot = new_slot(L);
    sq_status st = sq_embedding(ctx, idx, w, &slot->t);
    if (st != SQ_OK) return fail(L, "embedding", st, 2);
    return 1;
}

/* dropout(x, p [, training=true]) */
static int t_dropout(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    sq_tensor *x = sq_lua_check_tensor(L, 1);
    double p = luaL_checknumber(L, 2);
    if (!(p >= 0 && p < 1)) return luaL_argerror(L, 2, "p must be in [0, 1)");
    int training = lua_isnoneornil(L, 3) ? 1 : lua_toboolean(L, 3);
    sq_lua_tensor *slot = new_slot(L);
    sq_status st = sq_dropout(ctx, x, p, training, &slot->t);
    if (st != SQ_OK) return fail(L, "dropout", st, 0);
    return 1;
}

/* Integer option: positional number at arg, or field key of a table at tblarg. */
static int conv_opt(lua_State *L, int arg, int tblarg, const char *key, int def, int lo)
{
    if (lua_type(L, tblarg) == LUA_TTABLE) {
        int v = def;
        if (lua_getfield(L, tblarg, key) != LUA_TNIL) {
            int ok = 0;
            lua_Integer x = lua_tointegerx(L, -1, &ok);
            if (!ok || x < lo || x > INT32_MAX)
                luaL_argerror(L, tblarg, lua_pushfstring(L, "option '%s' must be an integer >= %d", key, lo));
            v = (int)x;
        }
        lua_pop(L, 1);
        return v;
    }
    if (lua_isnoneornil(L, arg)) return def;
    return check_int_arg(L, arg, lo, key);
}

/* conv2d(x (N,C,H,W), w (O,C,kh,kw) [, b (O) [, stride=1 [, pad=0]]])
 * or conv2d(x, w, b, {stride=, pad=}) */
static int t_conv2d(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    sq_tensor *x = sq_lua_check_tensor(L, 1), *w = sq_lua_check_tensor(L, 2);
    sq_tensor *b = sq_lua_opt_tensor(L, 3);
    int stride = conv_opt(L, 4, 4, "stride", 1, 1);
    int pad = conv_opt(L, 5, 4, "pad", 0, 0);
    sq_lua_tensor *slot = new_slot(L);
    sq_status st = sq_conv2d(ctx, x, w, b, stride, pad, &slot->t);
    if (st != SQ_OK) return fail(L, "conv2d", st, 2);
    return 1;
}

typedef sq_status (*pool_fn)(sq_ctx *, sq_tensor *, int, int, int, sq_tensor **);

/* pool(x, k [, stride=k [, pad=0]]) or pool(x, k, {stride=, pad=}) */
static int pool(lua_State *L, const char *name, pool_fn fn)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    sq_tensor *x = sq_lua_check_tensor(L, 1);
    int k = check_int_arg(L, 2, 1, "kernel size");
    int stride = conv_opt(L, 3, 3, "stride", k, 1);
    int pad = conv_opt(L, 4, 3, "pad", 0, 0);
    if (pad * 2 > k) return luaL_argerror(L, 4, "pad must be at most half the kernel size");
    sq_lua_tensor *slot = new_slot(L);
    sq_status st = fn(ctx, x, k, stride, pad, &slot->t);
    if (st != SQ_OK) return fail(L, name, st, 1);
    return 1;
}

static int t_max_pool2d(lua_State *L)
{
    return pool(L, "max_pool2d", sq_max_pool2d);
}

static int t_avg_pool2d(lua_State *L)
{
    return pool(L, "avg_pool2d", sq_avg_pool2d);
}

/* concat({t1, t2, ...} [, dim=1]) */
static int l_concat(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 2); /* the dim slot stays at 2 whatever we push later */
    lua_Integer n = luaL_len(L, 1);
    if (n < 1) return luaL_argerror(L, 1, "at least one tensor expected");
    if (n > 1 << 20) return luaL_argerror(L, 1, "too many tensors");
    /* the pointer array lives in a userdata so a raise cannot leak it */
    sq_tensor **ts = lua_newuserdatauv(L, (size_t)n * sizeof *ts, 0);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, 1, i);
        sq_lua_tensor *ud = luaL_testudata(L, -1, SQ_LUA_TENSOR_MT);
        if (!ud || !ud->t)
            return luaL_argerror(L, 1, lua_pushfstring(L, "entry %I is %s", i,
                                                       ud ? "a closed tensor" : "not a tensor"));
        ts[i - 1] = ud->t;
        lua_pop(L, 1);
    }
    int dim = lua_isnoneornil(L, 2) ? 0 : check_dim(L, 2, ts[0]->ndim);
    sq_lua_tensor *slot = new_slot(L);
    sq_status st = sq_concat(ctx, (int)n, ts, dim, &slot->t);
    if (st != SQ_OK) return fail(L, "concat", st, 1);
    return 1;
}

/* x, dim, idx -> op(x, dim, idx): idx holds 0-based positions (int64/int32) */
typedef sq_status (*index_op_fn)(sq_ctx *, sq_tensor *, int, sq_tensor *, sq_tensor **);

static int index_op(lua_State *L, const char *name, index_op_fn op)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    sq_tensor *x = sq_lua_check_tensor(L, 1);
    int dim = check_dim(L, 2, x->ndim);
    sq_tensor *idx = check_index_tensor(L, 3, "indices");
    sq_lua_tensor *slot = new_slot(L);
    sq_status st = op(ctx, x, dim, idx, &slot->t);
    if (st != SQ_OK) return fail(L, name, st, 3);
    return 1;
}

/* index_select(x, dim, idx): idx 1-d */
static int t_index_select(lua_State *L) { return index_op(L, "index_select", sq_index_select); }

/* gather(x, dim, idx): like torch.gather */
static int t_gather(lua_State *L) { return index_op(L, "gather", sq_gather); }

/* ---- autograd -------------------------------------------------------------------------- */

/* t:requires_grad() -> boolean;  t:requires_grad(flag) -> t (leaves only) */
static int t_requires_grad(lua_State *L)
{
    sq_tensor *t = sq_lua_check_tensor(L, 1);
    if (lua_isnone(L, 2)) {
        lua_pushboolean(L, t->requires_grad);
        return 1;
    }
    luaL_checktype(L, 2, LUA_TBOOLEAN);
    int flag = lua_toboolean(L, 2);
    if (t->grad_fn)
        return luaL_argerror(L, 1, "only leaf tensors can change requires_grad (use detach())");
    if (flag && !sq_is_float(t->dtype))
        return luaL_argerror(L, 2, lua_pushfstring(L, "a %s tensor cannot require a gradient",
                                                   sq_dtype_name(t->dtype)));
    t->requires_grad = flag;
    lua_settop(L, 1);
    return 1;
}

static int t_is_leaf(lua_State *L)
{
    lua_pushboolean(L, sq_lua_check_tensor(L, 1)->grad_fn == NULL);
    return 1;
}

static int t_grad(lua_State *L)
{
    sq_tensor *t = sq_lua_check_tensor(L, 1);
    if (!t->grad) {
        lua_pushnil(L);
        return 1;
    }
    sq_lua_tensor *slot = new_slot(L);
    sq_tensor_retain(t->grad);
    slot->t = t->grad;
    return 1;
}

/* Drops the gradient (its memory returns to the pool; grad() is nil after). */
static int t_zero_grad(lua_State *L)
{
    sq_tensor *t = sq_lua_check_tensor(L, 1);
    sq_tensor_release(t->grad);
    t->grad = NULL;
    lua_settop(L, 1);
    return 1;
}

static int t_backward(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    sq_tensor *t = sq_lua_check_tensor(L, 1);
    sq_tensor *g = sq_lua_opt_tensor(L, 2);
    if (!t->requires_grad)
        return luaL_argerror(L, 1, "tensor does not require a gradient (nothing feeding it does)");
    if (g && sq_tensor_numel(g) != sq_tensor_numel(t)) {
        char a[64], b[64];
        return luaL_argerror(L, 2, lua_pushfstring(L, "gradient of shape %s for an output of shape %s",
                                                   sq_shape_str(g, a, sizeof a), sq_shape_str(t, b, sizeof b)));
    }
    if (g && g->dtype != t->dtype)
        return luaL_argerror(L, 2, lua_pushfstring(L, "gradient is %s, output is %s",
                                                   sq_dtype_name(g->dtype), sq_dtype_name(t->dtype)));
    sq_lua_device_gc(L, SQ_LUA_GC_BEFORE_BACKWARD); /* the forward's dead results go before the peak */
    sq_status st = sq_backward(ctx, t, g);
    if (st != SQ_OK) return fail(L, "backward", st, 0);
    sq_lua_device_gc(L, SQ_LUA_GC_AFTER_BACKWARD); /* the step's activations just died */
    return 0;
}

/* detach(t): shares storage, no history, does not require a gradient */
static int t_detach(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    sq_tensor *t = sq_lua_check_tensor(L, 1);
    sq_lua_tensor *slot = new_slot(L);
    sq_status st = sq_view_raw(ctx, t, t->ndim, t->shape, t->stride, t->offset, &slot->t);
    if (st != SQ_OK) return fail(L, "detach", st, 0);
    return 1;
}

typedef struct {
    sq_ctx *ctx;
    int saved;
    int active;
} grad_guard;

static int guard_close(lua_State *L)
{
    grad_guard *g = luaL_checkudata(L, 1, GUARD_MT);
    if (g->active) {
        g->ctx->grad_enabled = g->saved;
        g->active = 0;
    }
    return 0;
}

/* no_grad(fn, ...): calls fn(...) with grad mode off; the mode comes back on
 * return and on error alike (a to-be-closed guard restores it, so the error's
 * traceback is left untouched).  Returns fn's results. */
static int l_no_grad(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    luaL_checktype(L, 1, LUA_TFUNCTION);
    int nargs = lua_gettop(L) - 1;
    grad_guard *g = lua_newuserdatauv(L, sizeof *g, 0);
    g->ctx = ctx;
    g->saved = ctx->grad_enabled;
    g->active = 0;
    luaL_setmetatable(L, GUARD_MT);
    lua_toclose(L, -1);
    int guard = lua_gettop(L);
    g->active = 1;
    ctx->grad_enabled = 0;
    lua_pushvalue(L, 1);
    for (int i = 0; i < nargs; i++) lua_pushvalue(L, 2 + i);
    lua_call(L, nargs, LUA_MULTRET);
    lua_closeslot(L, guard);
    return lua_gettop(L) - guard;
}

static int l_is_grad_enabled(lua_State *L)
{
    lua_pushboolean(L, sq_lua_ctx(L)->grad_enabled);
    return 1;
}

/* set_grad_enabled(flag) -> previous flag */
static int l_set_grad_enabled(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    luaL_checktype(L, 1, LUA_TBOOLEAN);
    lua_pushboolean(L, ctx->grad_enabled);
    ctx->grad_enabled = lua_toboolean(L, 1);
    return 1;
}

/* ---- memory and work counters ------------------------------------------------------------ */

static void push_mem_cats(lua_State *L, const int64_t *v, int64_t total)
{
    lua_createtable(L, 0, SQ_MEM_NCAT + 1);
    for (int c = 0; c < SQ_MEM_NCAT; c++) {
        lua_pushinteger(L, (lua_Integer)v[c]);
        lua_setfield(L, -2, sq_mem_cat_name((sq_mem_cat)c));
    }
    lua_pushinteger(L, (lua_Integer)total);
    lua_setfield(L, -2, "total");
}

/* memory() -> {cpu = {current = {param=, grad=, ..., total=}, peak = {...}}}
 * in bytes; a device appears once it has held memory. */
static int l_memory(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    const sq_mem *m = &ctx->mem;
    lua_newtable(L);
    for (int d = 0; d < SQ_NDEVICE; d++) {
        if (d != SQ_CPU && m->total_peak[d] == 0 && !(d == SQ_CUDA && ctx->cuda)) continue;
        lua_createtable(L, 0, 2);
        push_mem_cats(L, m->cur[d], m->total_cur[d]);
        lua_setfield(L, -2, "current");
        push_mem_cats(L, m->peak[d], m->total_peak[d]);
        lua_setfield(L, -2, "peak");
        lua_setfield(L, -2, sq_device_name((sq_device)d));
    }
    return 1;
}

static int l_reset_peak(lua_State *L)
{
    sq_mem_reset_peak(sq_lua_ctx(L));
    return 0;
}

static int l_stats(lua_State *L)
{
    const sq_stats *s = &sq_lua_ctx(L)->stats;
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, (lua_Integer)s->gemm_calls);
    lua_setfield(L, -2, "gemm_calls");
    lua_pushnumber(L, s->gemm_flops);
    lua_setfield(L, -2, "gemm_flops");
    lua_pushinteger(L, (lua_Integer)s->weight_grad_gemms);
    lua_setfield(L, -2, "weight_grad_gemms");
    return 1;
}

static int l_reset_stats(lua_State *L)
{
    memset(&sq_lua_ctx(L)->stats, 0, sizeof(sq_stats));
    return 0;
}

/* t:set_category("param"|"grad"|"optim"|"workspace"|"other") -> t.
 * "saved" belongs to autograd and cannot be chosen. */
static int t_set_category(lua_State *L)
{
    static const char *const cats[] = {"param", "grad", "optim", "saved", "workspace", "other", NULL};
    sq_tensor *t = sq_lua_check_tensor(L, 1);
    int c = luaL_checkoption(L, 2, NULL, cats);
    if (c == SQ_MEM_SAVED) return luaL_argerror(L, 2, "'saved' is managed by autograd");
    sq_storage_set_category(t->storage, (sq_mem_cat)c);
    lua_settop(L, 1);
    return 1;
}

static int t_category(lua_State *L)
{
    sq_tensor *t = sq_lua_check_tensor(L, 1);
    lua_pushstring(L, sq_mem_cat_name(t->storage->saved_refs > 0 ? SQ_MEM_SAVED : t->storage->cat));
    return 1;
}

/* ---- registration ------------------------------------------------------------------------- */

/* Functions that are both squeeze.f(t, ...) and t:f(...). */
static const luaL_Reg tensor_methods[] = {
    {"shape", t_shape}, {"size", t_size}, {"stride", t_stride}, {"dim", t_dim},
    {"numel", t_numel}, {"dtype", t_dtype}, {"is_contiguous", t_is_contiguous},
    {"get", t_get}, {"set", t_set}, {"item", t_item}, {"tolist", t_tolist},
    {"totable", t_tolist}, {"bytes", t_bytes},
    {"to", t_to}, {"cuda", t_cuda}, {"cpu", t_cpu}, {"device", t_device}, {"is_cuda", t_is_cuda},
    {"float", t_float}, {"double", t_double}, {"long", t_long}, {"int", t_int},
    {"clone", t_clone}, {"contiguous", t_contiguous}, {"copy_", t_copy_}, {"fill_", t_fill_},
    {"zero_", t_zero_}, {"add_", t_add_},
    {"reshape", t_reshape}, {"view", t_reshape}, {"transpose", t_transpose}, {"t", t_transpose},
    {"permute", t_permute}, {"narrow", t_narrow}, {"expand", t_expand},
    {"unsqueeze", t_unsqueeze}, {"squeeze", t_squeeze}, {"flatten", t_flatten},
    {"add", t_add}, {"sub", t_sub}, {"mul", t_mul}, {"div", t_div},
    {"scale_shift", t_scale_shift}, {"pow", t_pow},
    {"neg", t_neg}, {"exp", t_exp}, {"log", t_log}, {"sqrt", t_sqrt}, {"abs", t_abs},
    {"relu", t_relu}, {"gelu", t_gelu}, {"sigmoid", t_sigmoid}, {"tanh", t_tanh},
    {"sum", t_sum}, {"mean", t_mean}, {"max", t_max}, {"argmax", t_argmax},
    {"matmul", t_matmul}, {"linear", t_linear},
    {"softmax", t_softmax}, {"log_softmax", t_log_softmax}, {"cross_entropy", t_cross_entropy},
    {"layer_norm", t_layer_norm}, {"affine", t_affine}, {"embedding", t_embedding},
    {"dropout", t_dropout}, {"conv2d", t_conv2d}, {"max_pool2d", t_max_pool2d},
    {"avg_pool2d", t_avg_pool2d}, {"index_select", t_index_select}, {"gather", t_gather},
    {"requires_grad", t_requires_grad}, {"is_leaf", t_is_leaf}, {"grad", t_grad},
    {"zero_grad", t_zero_grad}, {"backward", t_backward}, {"detach", t_detach},
    {"set_category", t_set_category}, {"category", t_category},
    {"close", t_gc}, {"is_closed", t_is_closed},
    {NULL, NULL},
};

static const luaL_Reg tensor_meta[] = {
    {"__gc", t_gc}, {"__close", t_gc}, {"__tostring", t_tostring}, {"__len", t_len},
    {"__add", t_add}, {"__sub", t_sub}, {"__mul", t_mul}, {"__div", t_div},
    {"__unm", t_neg}, {"__pow", t_pow},
    {NULL, NULL},
};

static const luaL_Reg core_fns[] = {
    {"tensor", l_tensor}, {"zeros", l_zeros}, {"ones", l_ones}, {"empty", l_empty},
    {"full", l_full}, {"randn", l_randn}, {"rand", l_rand}, {"arange", l_arange},
    {"zeros_like", l_zeros_like}, {"ones_like", l_ones_like},
    {"from_string", l_from_string}, {"is_tensor", l_is_tensor}, {"concat", l_concat},
    {"no_grad", l_no_grad}, {"is_grad_enabled", l_is_grad_enabled},
    {"set_grad_enabled", l_set_grad_enabled},
    {"memory", l_memory}, {"reset_peak", l_reset_peak}, {"stats", l_stats},
    {"reset_stats", l_reset_stats},
    {NULL, NULL},
};

void sq_lua_open_tensor(lua_State *L, int ctx_index)
{
    if (luaL_newmetatable(L, GUARD_MT)) {
        lua_pushcfunction(L, guard_close);
        lua_setfield(L, -2, "__close");
    }
    lua_pop(L, 1);

    if (luaL_newmetatable(L, SQ_LUA_TENSOR_MT)) {
        sq_lua_setfuncs(L, tensor_meta, ctx_index);
        lua_newtable(L);
        sq_lua_setfuncs(L, tensor_methods, ctx_index);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);

    /* the core table is at the top of the stack */
    sq_lua_setfuncs(L, core_fns, ctx_index);
    sq_lua_setfuncs(L, tensor_methods, ctx_index);
    luaL_getmetatable(L, SQ_LUA_TENSOR_MT);
    lua_setfield(L, -2, "Tensor");
}
