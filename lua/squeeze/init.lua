-- squeeze — the public Lua module: the engine's core functions plus the
-- Lua-side libraries (nn, optim, data), the version and the script arguments.
local core = require "squeeze.core"

local M = {}
for k, v in pairs(core) do M[k] = v end

M.version = core.version
M.core = core

-- Sub-libraries load on first use.  optim and data come from other files
-- that may not exist yet: a missing module gives nil, a broken one raises.
local lazy = { nn = true, optim = true, data = true }

setmetatable(M, {
  __index = function(t, k)
    if k == "args" then return core.args or {} end
    if not lazy[k] then return nil end
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
