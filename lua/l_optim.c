/* l_optim.c — Lua binding of the optimizers (engine/sq_optim.h).
 *
 *   core.sgd(params, {lr=, momentum=0, dampening=0, nesterov=false, weight_decay=0}) -> optimizer
 *   core.adamw(params, {lr=1e-3, betas={0.9, 0.999} | beta1=, beta2=, eps=1e-8,
 *                       weight_decay=1e-2}) -> optimizer
 *       params: an array of float tensors (leaves).  sgd needs lr.
 *   opt:step()               one update; frozen parameters (requires_grad false)
 *                            and parameters without a gradient are skipped
 *   opt:zero_grad()          releases every parameter's gradient (grad() is nil after)
 *   opt:lr([new]) -> lr      current learning rate (after setting it when given)
 *   opt:steps([i]) -> n      updates parameter i (1-based) received, or step() calls
 *   opt:state_bytes() -> n   optimizer state allocated (the "optim" memory category)
 *   opt:kind() -> "sgd" | "adamw";  opt:num_params()
 *   opt:close()              frees the state now (also __gc / __close; idempotent)
 * Unknown option names and bad values are argument errors; a failing step
 * (a gradient of the wrong shape) raises "optim.step: ...". */
#include "sq_lua.h"
#include "sq_optim.h"

#include <string.h>

#define OPTIM_MT "squeeze.Optimizer"

typedef struct { sq_optim *o; } l_optim;

static l_optim *check_optim(lua_State *L, int arg)
{
    l_optim *u = luaL_checkudata(L, arg, OPTIM_MT);
    if (!u->o) luaL_argerror(L, arg, "optimizer is closed");
    return u;
}

/* Reads params (an array of tensors) into a GC-owned scratch array. */
static sq_tensor **check_params(lua_State *L, int arg, int *n)
{
    luaL_checktype(L, arg, LUA_TTABLE);
    lua_Integer len = luaL_len(L, arg);
    if (len > 1000000) luaL_argerror(L, arg, "too many parameters");
    sq_tensor **ps = lua_newuserdatauv(L, (size_t)(len > 0 ? len : 1) * sizeof *ps, 0);
    for (lua_Integer i = 1; i <= len; i++) {
        lua_geti(L, arg, i);
        sq_lua_tensor *ud = luaL_testudata(L, -1, SQ_LUA_TENSOR_MT);
        if (!ud || !ud->t)
            luaL_argerror(L, arg, lua_pushfstring(L, "entry %I is %s, not a tensor", i,
                                                  ud ? "a closed tensor" : luaL_typename(L, -1)));
        ps[i - 1] = ud->t;
        lua_pop(L, 1);
    }
    *n = (int)len;
    return ps;
}

/* Checks that every key of the options table is one of `allowed`. */
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

static double opt_number(lua_State *L, int arg, const char *key, double def, int required)
{
    int t = lua_getfield(L, arg, key);
    double v = def;
    if (t == LUA_TNIL) {
        if (required) luaL_argerror(L, arg, lua_pushfstring(L, "option '%s' is required", key));
    } else if (t != LUA_TNUMBER) {
        luaL_argerror(L, arg, lua_pushfstring(L, "option '%s' must be a number, got %s", key, luaL_typename(L, -1)));
    } else {
        v = lua_tonumber(L, -1);
    }
    lua_pop(L, 1);
    return v;
}

static int opt_bool(lua_State *L, int arg, const char *key, int def)
{
    int t = lua_getfield(L, arg, key);
    int v = def;
    if (t == LUA_TBOOLEAN) v = lua_toboolean(L, -1);
    else if (t != LUA_TNIL)
        luaL_argerror(L, arg, lua_pushfstring(L, "option '%s' must be a boolean, got %s", key, luaL_typename(L, -1)));
    lua_pop(L, 1);
    return v;
}

/* Pushes an empty optimizer userdata (o = NULL) and returns it. */
static l_optim *new_optim(lua_State *L)
{
    l_optim *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->o = NULL;
    luaL_setmetatable(L, OPTIM_MT);
    return u;
}

/* An init failure: a bad parameter is argument #1's fault, a bad setting
 * argument #2's; running out of memory is neither. */
static int init_error(lua_State *L, const char *fname, sq_status st)
{
    if (st == SQ_ERR_NOMEM) return sq_lua_raise(L, fname, st);
    const char *msg = sq_lua_ctx(L)->err;
    size_t n = strlen(fname);
    if (strncmp(msg, fname, n) == 0 && msg[n] == ':' && msg[n + 1] == ' ') msg += n + 2;
    return luaL_argerror(L, strncmp(msg, "parameter", 9) == 0 ? 1 : 2, msg);
}

static int l_sgd(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    lua_settop(L, 2); /* scratch pushed below must not look like an argument */
    int n;
    sq_tensor **ps = check_params(L, 1, &n);
    luaL_checktype(L, 2, LUA_TTABLE);
    static const char *const keys[] = {"lr", "momentum", "dampening", "nesterov", "weight_decay", NULL};
    check_keys(L, 2, keys);
    sq_sgd_cfg c;
    c.lr = opt_number(L, 2, "lr", 0, 1);
    c.momentum = opt_number(L, 2, "momentum", 0, 0);
    c.dampening = opt_number(L, 2, "dampening", 0, 0);
    c.weight_decay = opt_number(L, 2, "weight_decay", 0, 0);
    c.nesterov = opt_bool(L, 2, "nesterov", 0);
    l_optim *u = new_optim(L);
    sq_status st = sq_optim_sgd_init(ctx, n, ps, &c, &u->o);
    if (st != SQ_OK) return init_error(L, "sgd", st);
    return 1;
}

static int l_adamw(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    lua_settop(L, 2); /* scratch pushed below must not look like an argument */
    int n;
    sq_tensor **ps = check_params(L, 1, &n);
    if (lua_isnil(L, 2)) {
        lua_newtable(L);
        lua_replace(L, 2);
    }
    luaL_checktype(L, 2, LUA_TTABLE);
    static const char *const keys[] = {"lr", "betas", "beta1", "beta2", "eps", "weight_decay", NULL};
    check_keys(L, 2, keys);
    sq_adamw_cfg c = sq_adamw_defaults();
    c.lr = opt_number(L, 2, "lr", c.lr, 0);
    c.eps = opt_number(L, 2, "eps", c.eps, 0);
    c.weight_decay = opt_number(L, 2, "weight_decay", c.weight_decay, 0);
    int t = lua_getfield(L, 2, "betas");
    if (t == LUA_TTABLE) {
        if (luaL_len(L, -1) != 2) luaL_argerror(L, 2, "option 'betas' must be {beta1, beta2}");
        for (int i = 1; i <= 2; i++) {
            int isnum = 0;
            lua_geti(L, -1, i);
            double v = lua_tonumberx(L, -1, &isnum);
            if (!isnum) luaL_argerror(L, 2, "option 'betas' must hold two numbers");
            if (i == 1) c.beta1 = v;
            else c.beta2 = v;
            lua_pop(L, 1);
        }
    } else if (t != LUA_TNIL) {
        luaL_argerror(L, 2, "option 'betas' must be {beta1, beta2}");
    }
    lua_pop(L, 1);
    c.beta1 = opt_number(L, 2, "beta1", c.beta1, 0);
    c.beta2 = opt_number(L, 2, "beta2", c.beta2, 0);
    l_optim *u = new_optim(L);
    sq_status st = sq_optim_adamw_init(ctx, n, ps, &c, &u->o);
    if (st != SQ_OK) return init_error(L, "adamw", st);
    return 1;
}

static int o_step(lua_State *L)
{
    l_optim *u = check_optim(L, 1);
    sq_status st = sq_optim_step(sq_lua_ctx(L), u->o);
    if (st != SQ_OK) return sq_lua_raise(L, "optim.step", st);
    return 0;
}

static int o_zero_grad(lua_State *L)
{
    sq_optim_zero_grad(check_optim(L, 1)->o);
    return 0;
}

static int o_lr(lua_State *L)
{
    l_optim *u = check_optim(L, 1);
    if (!lua_isnoneornil(L, 2)) {
        double lr = luaL_checknumber(L, 2);
        if (sq_optim_set_lr(sq_lua_ctx(L), u->o, lr) != SQ_OK)
            return luaL_argerror(L, 2, lua_pushfstring(L, "lr %f must be finite and >= 0", lr));
    }
    lua_pushnumber(L, sq_optim_get_lr(u->o));
    return 1;
}

static int o_steps(lua_State *L)
{
    l_optim *u = check_optim(L, 1);
    if (lua_isnoneornil(L, 2)) {
        lua_pushinteger(L, (lua_Integer)u->o->calls);
        return 1;
    }
    lua_Integer i = luaL_checkinteger(L, 2);
    if (i < 1 || i > u->o->n)
        return luaL_argerror(L, 2, lua_pushfstring(L, "parameter %I out of 1..%d", i, u->o->n));
    lua_pushinteger(L, (lua_Integer)sq_optim_param_steps(u->o, (int)i - 1));
    return 1;
}

static int o_state_bytes(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)sq_optim_state_bytes(check_optim(L, 1)->o));
    return 1;
}

static int o_kind(lua_State *L)
{
    lua_pushstring(L, check_optim(L, 1)->o->kind == SQ_OPTIM_SGD ? "sgd" : "adamw");
    return 1;
}

static int o_num_params(lua_State *L)
{
    lua_pushinteger(L, check_optim(L, 1)->o->n);
    return 1;
}

static int o_close(lua_State *L)
{
    l_optim *u = luaL_checkudata(L, 1, OPTIM_MT);
    sq_optim_free(u->o);
    u->o = NULL;
    return 0;
}

static int o_tostring(lua_State *L)
{
    l_optim *u = luaL_checkudata(L, 1, OPTIM_MT);
    if (!u->o) lua_pushliteral(L, "optimizer(closed)");
    else
        lua_pushfstring(L, "optimizer(%s, %d params, lr %f, %I steps)", u->o->kind == SQ_OPTIM_SGD ? "sgd" : "adamw",
                        u->o->n, sq_optim_get_lr(u->o), (lua_Integer)u->o->calls);
    return 1;
}

static const luaL_Reg optim_methods[] = {
    {"step", o_step}, {"zero_grad", o_zero_grad}, {"lr", o_lr}, {"steps", o_steps},
    {"state_bytes", o_state_bytes}, {"kind", o_kind}, {"num_params", o_num_params},
    {"close", o_close}, {NULL, NULL},
};

static const luaL_Reg optim_fns[] = {
    {"sgd", l_sgd},
    {"adamw", l_adamw},
    {NULL, NULL},
};

void sq_lua_open_optim(lua_State *L, int ctx_index)
{
    sq_lua_new_class(L, OPTIM_MT, optim_methods, o_close, o_tostring, ctx_index);
    sq_lua_setfuncs(L, optim_fns, ctx_index);
}
