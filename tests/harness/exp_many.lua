-- exp_many.lua — many short points that log a lot, for the concurrency test.
local experiment = require "squeeze.experiment"
local sweep = require "squeeze.sweep"
return experiment {
  name = "many",
  config = { a = 0, b = 0, n = 200 },
  sweep = sweep.grid { a = sweep.range(0, 8), b = sweep.range(0, 6) },
  run = function(cfg, run)
    for step = 0, cfg.n - 1 do
      run:log { u = cfg.a * step, v = cfg.b - step }
      run:log("w", step * 0.5, step)
    end
    run:tag("kind", "stress")
  end,
}
