-- exp_slow.lua — points that take about steps * dt seconds, for kill tests.
local experiment = require "squeeze.experiment"
local core = require "squeeze.core"
return experiment {
  name = "slow",
  config = { x = 0, steps = 20, dt = 0.04 },
  sweep = { x = { 1, 2, 3, 4, 5, 6, 7, 8 } },
  run = function(cfg, run)
    for step = 0, cfg.steps - 1 do
      core.proc_sleep(cfg.dt)
      run:log("y", cfg.x * step, step)
    end
    run:save_tensor("w", core.full({ 64, 64 }, cfg.x))
    run:summary { final = cfg.x * (cfg.steps - 1) }
  end,
}
