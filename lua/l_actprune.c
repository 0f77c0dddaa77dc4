/* l_actprune.c — Lua bindings of structured activation pruning (sq_actprune.h,
 * sq_bsr.h):
 *
 *   core.linear_pruned(x, W, b|nil, opts) -> y, stats
 *   core.bsr_prune_pack(x, opts)          -> {rows, cols, block, nbr, nbc, nnzb,
 *                                             bytes, value_bytes, row_ptr, col_idx,
 *                                             values, dense}
 *   core.actprune_dw_error(x, dy, opts)   -> ‖dW − dŴ‖/‖dW‖
 *
 * opts = {block=32, keep=0.5, criterion="l2"|"random"|"topk_unstructured",
 *         scope="tensor"|"row", transpose_at_pack=false, time_compress=true};
 * missing fields take
 * the engine defaults (sq_actprune_cfg_default), unknown fields are an error.
 * Arguments are checked before the engine runs; result userdata are created
 * empty first, so a raise after an engine failure leaks nothing. */
#include "sq_actprune.h"
#include "sq_lua.h"

#include <stdio.h>
#include <string.h>

/* Reads opts at arg into cfg.  any_block: bsr_prune_pack accepts any b >= 1
 * (inspection), the layer only the sizes its kernels are built for. */
static void check_opts(lua_State *L, int arg, sq_actprune_cfg *cfg, int any_block)
{
    sq_actprune_cfg_default(cfg);
    if (lua_isnoneornil(L, arg)) return;
    luaL_checktype(L, arg, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, arg)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        if (!k) luaL_argerror(L, arg, "option keys must be strings");
        if (strcmp(k, "block") == 0) {
            int isint = 0;
            lua_Integer b = lua_tointegerx(L, -1, &isint);
            if (!isint) luaL_argerror(L, arg, "block must be an integer");
            if (any_block ? b < 1 : (b != 8 && b != 16 && b != 32 && b != 64))
                luaL_argerror(L, arg, lua_pushfstring(L, any_block ? "block %I must be >= 1"
                                                                   : "block %I is not one of 8, 16, 32, 64", b));
            cfg->block = (int64_t)b;
        } else if (strcmp(k, "keep") == 0) {
            int isnum = 0;
            lua_Number v = lua_tonumberx(L, -1, &isnum);
            if (!isnum) luaL_argerror(L, arg, "keep must be a number");
            if (!(v > 0 && v <= 1)) {
                char num[32];
                snprintf(num, sizeof num, "%g", (double)v);
                luaL_argerror(L, arg, lua_pushfstring(L, "keep %s must be in (0,1]", num));
            }
            cfg->keep = (double)v;
        } else if (strcmp(k, "criterion") == 0) {
            const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
            int c = sq_prune_criterion_parse(s);
            if (c < 0)
                luaL_argerror(L, arg, lua_pushfstring(L, "unknown criterion '%s' (l2, random, topk_unstructured)",
                                                      s ? s : luaL_typename(L, -1)));
            cfg->criterion = (sq_prune_criterion)c;
        } else if (strcmp(k, "scope") == 0) {
            const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
            int c = sq_prune_scope_parse(s);
            if (c < 0)
                luaL_argerror(L, arg, lua_pushfstring(L, "unknown scope '%s' (tensor, row)",
                                                      s ? s : luaL_typename(L, -1)));
            cfg->scope = (sq_prune_scope)c;
        } else if (strcmp(k, "transpose_at_pack") == 0) {
            cfg->transpose_at_pack = lua_toboolean(L, -1);
        } else if (strcmp(k, "time_compress") == 0) {
            cfg->time_compress = lua_toboolean(L, -1);
        } else {
            luaL_argerror(L, arg, lua_pushfstring(L, "unknown option '%s' (block, keep, criterion, "
                                                     "scope, transpose_at_pack, time_compress)", k));
        }
        lua_pop(L, 1);
    }
}

/* Engine failure: a shape mismatch names the argument, the rest "name: msg". */
static int fail(lua_State *L, const char *name, sq_status st, int shape_arg)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    size_t n = strlen(name);
    if (st == SQ_ERR_SHAPE && shape_arg > 0 && ctx->err[0]) {
        const char *msg = ctx->err;
        if (strncmp(msg, name, n) == 0 && msg[n] == ':' && msg[n + 1] == ' ') msg += n + 2;
        return luaL_argerror(L, shape_arg, msg);
    }
    return sq_lua_raise(L, name, st);
}

static void set_int(lua_State *L, const char *k, int64_t v)
{
    lua_pushinteger(L, (lua_Integer)v);
    lua_setfield(L, -2, k);
}

static void set_num(lua_State *L, const char *k, double v)
{
    lua_pushnumber(L, (lua_Number)v);
    lua_setfield(L, -2, k);
}

/* linear_pruned(x, W, b|nil, opts) -> y, stats */
static int l_linear_pruned(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    sq_tensor *x = sq_lua_check_tensor(L, 1), *w = sq_lua_check_tensor(L, 2);
    sq_tensor *b = sq_lua_opt_tensor(L, 3);
    sq_actprune_cfg cfg;
    check_opts(L, 4, &cfg, 0);
    sq_actprune_stats s;
    sq_lua_push_tensor(L, NULL); /* empty result slot */
    sq_lua_tensor *slot = lua_touserdata(L, -1);
    sq_status st = sq_linear_pruned(ctx, x, w, b, &cfg, &slot->t, &s);
    if (st != SQ_OK) return fail(L, "linear_pruned", st, 2);
    lua_createtable(L, 0, 10);
    lua_pushboolean(L, s.pruned);
    lua_setfield(L, -2, "pruned");
    set_int(L, "kept_blocks", s.kept_blocks);
    set_int(L, "total_blocks", s.total_blocks);
    set_int(L, "saved_bytes", s.saved_bytes);
    set_int(L, "value_bytes", s.value_bytes);
    set_int(L, "dense_bytes", s.dense_bytes);
    set_num(L, "compress_s", s.compress_s);
    set_int(L, "compress_timed", s.compress_timed);
    set_num(L, "dw_flops", s.dw_flops);
    set_num(L, "dense_dw_flops", s.dense_dw_flops);
    return 2;
}

/* bsr_prune_pack(x, opts) -> table (see the top of the file); x is 2-d. */
static int l_bsr_prune_pack(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    sq_tensor *x = sq_lua_check_tensor(L, 1);
    if (x->ndim != 2)
        return luaL_argerror(L, 1, lua_pushfstring(L, "need a 2-d (R,K) tensor, got %d dims", x->ndim));
    sq_actprune_cfg cfg;
    check_opts(L, 2, &cfg, 1);
    /* slots first: row_ptr, col_idx, values, dense */
    sq_lua_tensor *slot[4];
    for (int i = 0; i < 4; i++) {
        sq_lua_push_tensor(L, NULL);
        slot[i] = lua_touserdata(L, -1);
    }
    sq_bsr *m = NULL;
    sq_status st = sq_bsr_prune_pack(ctx, x, cfg.block, cfg.keep, cfg.criterion, cfg.scope,
                                     SQ_MEM_OTHER, &m);
    if (st != SQ_OK) return fail(L, "bsr_prune_pack", st, 1);
    st = sq_bsr_to_dense(ctx, m, &slot[3]->t);
    if (st != SQ_OK) {
        sq_bsr_free(m);
        return fail(L, "bsr_prune_pack", st, 0);
    }
    sq_tensor *parts[3] = {m->row_ptr, m->col_idx, m->values};
    for (int i = 0; i < 3; i++) {
        sq_tensor_retain(parts[i]);
        slot[i]->t = parts[i];
    }
    int64_t info[8] = {m->rows, m->cols, m->b, m->nbr, m->nbc, m->nnzb, sq_bsr_bytes(m),
                       sq_bsr_value_bytes(m)};
    sq_bsr_free(m); /* the tensors live on in their userdata */
    static const char *const names[8] = {"rows", "cols", "block", "nbr", "nbc", "nnzb", "bytes",
                                         "value_bytes"};
    static const char *const tnames[4] = {"row_ptr", "col_idx", "values", "dense"};
    int base = lua_gettop(L) - 3;
    lua_createtable(L, 0, 12);
    for (int i = 0; i < 8; i++) set_int(L, names[i], info[i]);
    for (int i = 0; i < 4; i++) {
        lua_pushvalue(L, base + i);
        lua_setfield(L, -2, tnames[i]);
    }
    return 1;
}

/* actprune_dw_error(x, dy, opts) -> relative Frobenius error of dW */
static int l_actprune_dw_error(lua_State *L)
{
    sq_ctx *ctx = sq_lua_ctx(L);
    sq_tensor *x = sq_lua_check_tensor(L, 1), *dy = sq_lua_check_tensor(L, 2);
    sq_actprune_cfg cfg;
    check_opts(L, 3, &cfg, 0);
    double rel = 0;
    sq_status st = sq_actprune_dw_error(ctx, x, dy, &cfg, &rel);
    if (st != SQ_OK) return fail(L, "actprune_dw_error", st, 2);
    lua_pushnumber(L, rel);
    return 1;
}

static const luaL_Reg actprune_fns[] = {
    {"linear_pruned", l_linear_pruned},
    {"bsr_prune_pack", l_bsr_prune_pack},
    {"actprune_dw_error", l_actprune_dw_error},
    {NULL, NULL},
};

void sq_lua_open_actprune(lua_State *L, int ctx_index)
{
    sq_lua_setfuncs(L, actprune_fns, ctx_index);
}
