-- exp_fail.lua — one point per way of failing: a Lua error, running out of
-- memory, a crash (SIGSEGV), an abort, and a point that finishes.
local experiment = require "squeeze.experiment"
local core = require "squeeze.core"
return experiment {
  name = "fail",
  config = { mode = "ok" },
  sweep = { mode = { "ok", "error", "oom", "segv", "abort" } },
  run = function(cfg, run)
    run:log("started", 1, 0)
    if cfg.mode == "error" then error({ code = 42 }) end   -- a non-string error object
    if cfg.mode == "oom" then
      local t = {}
      for i = 1, 64 do t[i] = string.rep("x", 1 << 40) end  -- 1 TiB: the allocator refuses
    end
    if cfg.mode == "segv" then core.proc_kill(run.pid, "SEGV") core.proc_sleep(5) end
    if cfg.mode == "abort" then core.proc_kill(run.pid, "ABRT") core.proc_sleep(5) end
    run:summary { ok = 1 }
  end,
}
