-- squeeze — the public Lua module: the engine's core functions plus the
-- Lua-side libraries (nn, optim, data), the version and the script arguments.
--
-- Conventions: dims are 1-based (negative dims count from the end, -1 is the
-- last); positions given as Lua integers (t:get(i, j), narrow's start) are
-- 1-based; values stored inside index tensors (class targets, token ids,
-- argmax results, embedding / index_select / gather indices) are data and
-- stay 0-based, as datasets store them.
local core = require "squeeze.core"

local M = {}
for k, v in pairs(core) do M[k] = v end
-- squeeze.cuda is the module lua/squeeze/cuda.lua (loaded on first use, and
-- callable: squeeze.cuda(t) is t:cuda()), not the tensor method of that name.
M.cuda = nil

M.version = core.version
-- Wall-clock seconds from a monotonic clock (the engine's one timer).
M.clock = core.proc_monotonic
M.core = core

-- Sub-libraries (squeeze.nn, squeeze.optim, squeeze.data, ...) load on
-- first use: squeeze.X is require("squeeze.X") when that module exists.  A
-- missing module gives nil (optim and data live in other files that may be
-- absent); a broken one raises its error.
setmetatable(M, {
  __index = function(t, k)
    if k == "args" then return core.args or {} end
    if type(k) ~= "string" or not k:match("^[%a_][%w_]*$") or k == "cmd" then return nil end
    local name = "squeeze." .. k
    if not package.loaded[name] and not package.preload[name]
       and not package.searchpath(name, package.path) then
      return nil
    end
    local mod = require(name)
    rawset(t, k, mod)
    return mod
  end,
})

return M
