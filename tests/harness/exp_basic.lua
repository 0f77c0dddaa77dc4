-- exp_basic.lua — a tiny experiment for the harness tests (milliseconds per point).
local experiment = require "squeeze.experiment"
local sweep = require "squeeze.sweep"
local core = require "squeeze.core"
return experiment {
  name = "basic",
  config = { lr = 1e-3, hidden = 64, seed = 0, fail_seed = -1, steps = 5, dt = 0.0,
             model = { depth = 2 } },
  sweep = sweep.grid { lr = { 1e-3, 1e-2 }, hidden = { 64, 128 }, seed = { 0, 1, 2 } },
  run = function(cfg, run)
    if cfg.seed == cfg.fail_seed then error("planned failure for seed " .. cfg.seed) end
    for step = 0, cfg.steps - 1 do
      if cfg.dt > 0 then core.proc_sleep(cfg.dt) end
      run:log("loss", 1 / (step + 1) + cfg.lr * cfg.hidden + 0.01 * cfg.seed, step)
    end
    run:log("odd", 0 / 0, 0)
    run:log("odd", 1 / 0, 1)
    run:log("odd", -1 / 0, 2)
    run:save_tensor("mask.fc1", core.ones({ 4, 3 }))
    run:summary { test_acc = 0.8 + cfg.lr * 5 + cfg.hidden / 1000 + 0.003 * cfg.seed }
  end,
}
