/* l_store.c — Lua binding of the results store (engine/sq_store.h).
 *
 *   core.store_open(path [, mode [, busy_ms]]) -> store | nil, message
 *       mode: "main" (default; WAL), "shard" (rollback journal), "readonly"
 *   store:exec(sql)                   several statements, no parameters
 *   store:run(sql [, params])         -> changes, last_insert_rowid
 *   store:rows(sql [, params])        -> { {col = value, ...}, ... }, {col names}
 *   store:prepare(sql)                -> stmt (stmt:run(params), stmt:rows(params), stmt:close())
 *   store:merge(shard_path)           -> {attempts=, metrics=, artifacts=} | nil, message
 *   store:refresh_flat()              rebuild the pivoted `flat` view
 *   store:schema_version(), store:in_transaction(), store:close()
 *   core.store_encode(x)              -> value | nil, special | nil   (NaN/±inf)
 *   core.store_decode(value, special) -> number
 *   core.store_sqlite_version(), core.store_schema_version (integer)
 *   core.store_library_versions() -> {sqlite=, hdf5=, openblas=, lua=}  (provenance)
 *
 * params: an array binds ?1..?n (a nil hole binds NULL); a table with string
 * keys binds :name parameters.  Integers bind as INTEGER, floats as REAL (a
 * non-finite float is an argument error: encode it), booleans as 0/1,
 * strings as TEXT.  Row values come back as integer / float / string; NULL
 * columns are absent from the row table.
 *
 * SQL errors raise ("store.run: sql: no such table: x"); opening and merging
 * are environmental and return nil, message.  Userdata start empty and their
 * __gc / __close are idempotent; a statement keeps its store alive. */
#include "sq_lua.h"
#include "sq_store.h"

#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* OpenBLAS reports its build; weak so another BLAS links too. */
char *openblas_get_config(void) __attribute__((weak));

#define STORE_MT "squeeze.Store"
#define STMT_MT "squeeze.StoreStmt"

typedef struct { sq_store *s; } l_store;
typedef struct { sq_store_stmt *st; } l_stmt;

static l_store *check_store(lua_State *L, int arg) {
    l_store *u = luaL_checkudata(L, arg, STORE_MT);
    if (!u->s) luaL_argerror(L, arg, "store is closed");
    return u;
}

static l_stmt *check_stmt(lua_State *L, int arg) {
    l_stmt *u = luaL_checkudata(L, arg, STMT_MT);
    if (!u->st) luaL_argerror(L, arg, "statement is closed");
    /* the store it came from must still be open */
    lua_getiuservalue(L, arg, 1);
    l_store *s = luaL_testudata(L, -1, STORE_MT);
    if (!s || !s->s) luaL_argerror(L, arg, "its store is closed");
    lua_pop(L, 1);
    return u;
}

static int l_store_open(lua_State *L) {
    sq_ctx *ctx = sq_lua_ctx(L);
    const char *path = luaL_checkstring(L, 1);
    static const char *const modes[] = {"main", "shard", "readonly", NULL};
    int mode = luaL_checkoption(L, 2, "main", modes);
    lua_Integer busy = luaL_optinteger(L, 3, 30000);
    if (busy < 0 || busy > 3600000) return luaL_argerror(L, 3, "busy_ms must be in 0..3600000");
    l_store *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->s = NULL;
    luaL_setmetatable(L, STORE_MT);
    int flags = mode == 0 ? SQ_STORE_MAIN : mode == 1 ? SQ_STORE_SHARD : SQ_STORE_READONLY;
    sq_status st = sq_store_open(ctx, path, flags, (int)busy, &u->s);
    if (st != SQ_OK) {
        lua_pushnil(L);
        lua_pushstring(L, ctx->err);
        return 2;
    }
    return 1;
}

static int l_store_close(lua_State *L) {
    l_store *u = luaL_checkudata(L, 1, STORE_MT);
    sq_store_close(u->s);
    u->s = NULL;
    return 0;
}

static int l_store_exec(lua_State *L) {
    l_store *u = check_store(L, 1);
    const char *sql = luaL_checkstring(L, 2);
    sq_status st = sq_store_exec(sq_lua_ctx(L), u->s, sql);
    if (st != SQ_OK) return sq_lua_raise(L, "store.exec", st);
    return 0;
}

/* Binds the params table at index arg (or nothing if none). */
static void bind_params(lua_State *L, sq_store_stmt *st, int arg, const char *fname) {
    sq_ctx *ctx = sq_lua_ctx(L);
    sq_store_reset(st);
    int n = sq_store_param_count(st);
    if (lua_isnoneornil(L, arg)) {
        if (n > 0)
            luaL_error(L, "%s: the statement has %d parameter(s) but no params table was given",
                       fname, n);
        return;
    }
    luaL_checktype(L, arg, LUA_TTABLE);
    for (int i = 1; i <= n; i++) {
        /* :name / @name / $name from the table's string keys; ? and ?N by position */
        const char *name = sq_store_param_name(st, i);
        int t = (name && (name[0] == ':' || name[0] == '@' || name[0] == '$'))
                    ? lua_getfield(L, arg, name + 1)
                    : lua_geti(L, arg, i);
        sq_status s = SQ_OK;
        switch (t) {
        case LUA_TNIL: s = sq_store_bind_null(ctx, st, i); break;
        case LUA_TBOOLEAN: s = sq_store_bind_int(ctx, st, i, lua_toboolean(L, -1)); break;
        case LUA_TNUMBER:
            if (lua_isinteger(L, -1)) {
                s = sq_store_bind_int(ctx, st, i, (int64_t)lua_tointeger(L, -1));
            } else {
                double v = lua_tonumber(L, -1);
                if (!isfinite(v))
                    luaL_error(L, "%s: parameter %d is %s: SQLite cannot hold it, encode it with "
                               "core.store_encode (value + special)", fname, i,
                               sq_store_encode(v));
                s = sq_store_bind_real(ctx, st, i, v);
            }
            break;
        case LUA_TSTRING: {
            size_t len;
            const char *p = lua_tolstring(L, -1, &len);
            s = sq_store_bind_text(ctx, st, i, p, len);
            break;
        }
        default:
            luaL_error(L, "%s: parameter %d is a %s (number, string, boolean or nil expected)",
                       fname, i, luaL_typename(L, -1));
        }
        lua_pop(L, 1);
        if (s != SQ_OK) sq_lua_raise(L, fname, s);
    }
}

static void push_column(lua_State *L, sq_store_stmt *st, int i) {
    switch (sq_store_column_type(st, i)) {
    case SQ_VAL_INT: lua_pushinteger(L, (lua_Integer)sq_store_column_int(st, i)); break;
    case SQ_VAL_REAL: lua_pushnumber(L, sq_store_column_real(st, i)); break;
    case SQ_VAL_TEXT:
    case SQ_VAL_BLOB: {
        size_t n;
        const char *p = sq_store_column_text(st, i, &n);
        lua_pushlstring(L, p, n);
        break;
    }
    default: lua_pushnil(L);
    }
}

/* Runs st with params at arg; pushes rows and column names when want_rows. */
static int run_stmt(lua_State *L, l_store *store, sq_store_stmt *st, int arg, int want_rows,
                    const char *fname) {
    sq_ctx *ctx = sq_lua_ctx(L);
    bind_params(L, st, arg, fname);
    int ncol = sq_store_column_count(st);
    if (want_rows) {
        lua_newtable(L);   /* rows */
        lua_createtable(L, ncol, 0);
        for (int c = 0; c < ncol; c++) {
            lua_pushstring(L, sq_store_column_name(st, c));
            lua_seti(L, -2, c + 1);
        }
    }
    int rows_idx = lua_gettop(L) - 1;
    lua_Integer nrow = 0;
    for (;;) {
        int row = 0;
        sq_status s = sq_store_step(ctx, st, &row);
        if (s != SQ_OK) {
            sq_store_reset(st);
            return sq_lua_raise(L, fname, s);
        }
        if (!row) break;
        if (!want_rows) continue;
        lua_createtable(L, 0, ncol);
        for (int c = 0; c < ncol; c++) {
            push_column(L, st, c);
            lua_setfield(L, -2, sq_store_column_name(st, c));
        }
        lua_seti(L, rows_idx, ++nrow);
    }
    sq_store_reset(st);
    if (want_rows) return 2;
    lua_pushinteger(L, (lua_Integer)sq_store_changes(store->s));
    lua_pushinteger(L, (lua_Integer)sq_store_last_rowid(store->s));
    return 2;
}

/* A one-shot statement lives in a userdata so a raised error cannot leak it. */
static int one_shot(lua_State *L, int want_rows, const char *fname) {
    l_store *u = check_store(L, 1);
    const char *sql = luaL_checkstring(L, 2);
    lua_settop(L, 3);   /* params (maybe nil) at 3, the statement above it */
    l_stmt *w = lua_newuserdatauv(L, sizeof *w, 1);
    w->st = NULL;
    luaL_setmetatable(L, STMT_MT);
    int widx = lua_gettop(L);
    sq_status s = sq_store_prepare(sq_lua_ctx(L), u->s, sql, &w->st);
    if (s != SQ_OK) return sq_lua_raise(L, fname, s);
    int n = run_stmt(L, u, w->st, 3, want_rows, fname);
    sq_store_finalize(w->st);
    w->st = NULL;
    lua_remove(L, widx);
    return n;
}

static int l_store_run(lua_State *L) { return one_shot(L, 0, "store.run"); }
static int l_store_rows(lua_State *L) { return one_shot(L, 1, "store.rows"); }

static int l_store_prepare(lua_State *L) {
    l_store *u = check_store(L, 1);
    const char *sql = luaL_checkstring(L, 2);
    l_stmt *w = lua_newuserdatauv(L, sizeof *w, 1);
    w->st = NULL;
    luaL_setmetatable(L, STMT_MT);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);   /* the statement keeps its store alive */
    sq_status s = sq_store_prepare(sq_lua_ctx(L), u->s, sql, &w->st);
    if (s != SQ_OK) return sq_lua_raise(L, "store.prepare", s);
    return 1;
}

static int l_stmt_run(lua_State *L) {
    l_stmt *w = check_stmt(L, 1);
    lua_getiuservalue(L, 1, 1);
    l_store *u = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return run_stmt(L, u, w->st, 2, 0, "stmt.run");
}

static int l_stmt_rows(lua_State *L) {
    l_stmt *w = check_stmt(L, 1);
    lua_getiuservalue(L, 1, 1);
    l_store *u = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return run_stmt(L, u, w->st, 2, 1, "stmt.rows");
}

static int l_stmt_close(lua_State *L) {
    l_stmt *w = luaL_checkudata(L, 1, STMT_MT);
    sq_store_finalize(w->st);
    w->st = NULL;
    return 0;
}

static int l_store_merge(lua_State *L) {
    l_store *u = check_store(L, 1);
    const char *path = luaL_checkstring(L, 2);
    sq_ctx *ctx = sq_lua_ctx(L);
    sq_store_merge_info info;
    sq_status st = sq_store_merge_shard(ctx, u->s, path, &info);
    if (st != SQ_OK) {
        lua_pushnil(L);
        lua_pushstring(L, ctx->err);
        return 2;
    }
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, (lua_Integer)info.attempts);
    lua_setfield(L, -2, "attempts");
    lua_pushinteger(L, (lua_Integer)info.metrics);
    lua_setfield(L, -2, "metrics");
    lua_pushinteger(L, (lua_Integer)info.artifacts);
    lua_setfield(L, -2, "artifacts");
    return 1;
}

static int l_store_refresh_flat(lua_State *L) {
    l_store *u = check_store(L, 1);
    sq_status st = sq_store_refresh_flat(sq_lua_ctx(L), u->s);
    if (st != SQ_OK) return sq_lua_raise(L, "store.refresh_flat", st);
    return 0;
}

static int l_store_schema_version(lua_State *L) {
    l_store *u = check_store(L, 1);
    int v = 0;
    sq_status st = sq_store_schema_version(sq_lua_ctx(L), u->s, &v);
    if (st != SQ_OK) return sq_lua_raise(L, "store.schema_version", st);
    lua_pushinteger(L, v);
    return 1;
}

static int l_store_in_tx(lua_State *L) {
    l_store *u = check_store(L, 1);
    lua_pushboolean(L, sq_store_in_transaction(u->s));
    return 1;
}

static int l_store_tostring(lua_State *L) {
    l_store *u = luaL_checkudata(L, 1, STORE_MT);
    lua_pushfstring(L, "squeeze.Store(%s)", u->s ? "open" : "closed");
    return 1;
}

static int l_store_encode(lua_State *L) {
    double v = luaL_checknumber(L, 1);
    const char *sp = sq_store_encode(v);
    if (sp) {
        lua_pushnil(L);
        lua_pushstring(L, sp);
    } else {
        lua_pushvalue(L, 1);
        lua_pushnil(L);
    }
    return 2;
}

static int l_store_decode(lua_State *L) {
    double v = luaL_optnumber(L, 1, 0.0);
    const char *sp = luaL_optstring(L, 2, NULL);
    if (sp && strcmp(sp, "nan") != 0 && strcmp(sp, "inf") != 0 && strcmp(sp, "-inf") != 0)
        return luaL_argerror(L, 2, "special must be 'nan', 'inf', '-inf' or nil");
    if (!sp && lua_isinteger(L, 1)) {
        lua_pushvalue(L, 1);
        return 1;
    }
    lua_pushnumber(L, sq_store_decode(v, sp));
    return 1;
}

static int l_store_sqlite_version(lua_State *L) {
    lua_pushstring(L, sq_store_sqlite_version());
    return 1;
}

static int l_store_library_versions(lua_State *L) {
    lua_createtable(L, 0, 4);
    lua_pushstring(L, sq_store_sqlite_version());
    lua_setfield(L, -2, "sqlite");
    unsigned maj = 0, min = 0, rel = 0;
    char buf[64];
    if (H5get_libversion(&maj, &min, &rel) >= 0) {
        snprintf(buf, sizeof buf, "%u.%u.%u", maj, min, rel);
        lua_pushstring(L, buf);
    } else {
        lua_pushliteral(L, "unknown");
    }
    lua_setfield(L, -2, "hdf5");
    lua_pushstring(L, openblas_get_config ? openblas_get_config() : "not OpenBLAS");
    lua_setfield(L, -2, "openblas");
    lua_pushliteral(L, LUA_RELEASE);
    lua_setfield(L, -2, "lua");
    return 1;
}

static const luaL_Reg store_methods[] = {
    {"exec", l_store_exec},
    {"run", l_store_run},
    {"rows", l_store_rows},
    {"prepare", l_store_prepare},
    {"merge", l_store_merge},
    {"refresh_flat", l_store_refresh_flat},
    {"schema_version", l_store_schema_version},
    {"in_transaction", l_store_in_tx},
    {"close", l_store_close},
    {NULL, NULL},
};

static const luaL_Reg stmt_methods[] = {
    {"run", l_stmt_run},
    {"rows", l_stmt_rows},
    {"close", l_stmt_close},
    {NULL, NULL},
};

static const luaL_Reg store_fns[] = {
    {"store_open", l_store_open},
    {"store_encode", l_store_encode},
    {"store_decode", l_store_decode},
    {"store_sqlite_version", l_store_sqlite_version},
    {"store_library_versions", l_store_library_versions},
    {NULL, NULL},
};


void sq_lua_open_store(lua_State *L, int ctx_index) {
    sq_lua_new_class(L, STORE_MT, store_methods, l_store_close, l_store_tostring, ctx_index);
    sq_lua_new_class(L, STMT_MT, stmt_methods, l_stmt_close, NULL, ctx_index);
    sq_lua_setfuncs(L, store_fns, ctx_index);
    lua_pushinteger(L, SQ_STORE_SCHEMA_VERSION);
    lua_setfield(L, -2, "store_schema_version");
}
