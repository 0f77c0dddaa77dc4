-- exp_slurm.lua — 21 points for the Slurm test: x = fail_x raises, x =
-- preempt_x sends itself the preemption signal on its first attempt (as
-- Slurm does before a time limit), checkpoints, requeues and resumes.
local experiment = require "squeeze.experiment"
local sweep = require "squeeze.sweep"
local core = require "squeeze.core"
return experiment {
  name = "slurmtest",
  config = { x = 0, fail_x = 13, preempt_x = 7, steps = 4, dt = 0.3 },
  sweep = sweep.grid { x = sweep.range(0, 21) },
  run = function(cfg, run)
    local start = 0
    local f = io.open(run:checkpoint_path("state.txt"))
    if f then start = tonumber(f:read("l")); f:close(); run:tag("resumed_from", start) end
    for step = start, cfg.steps - 1 do
      if cfg.x == cfg.fail_x then error("planned failure at x=" .. cfg.x) end
      core.proc_sleep(cfg.dt)
      run:log("y", cfg.x * step, step)
      run.step = step + 1
      if cfg.x == cfg.preempt_x and run.attempt == 1 and step == 1 then
        core.proc_kill(run.pid, "USR1")
        for _ = 1, 1e9 do end            -- the signal hook interrupts this loop
      end
    end
    run:summary { final = cfg.x * (cfg.steps - 1) }
  end,
  checkpoint = function(cfg, run)
    local f = assert(io.open(run:checkpoint_path("state.txt"), "w"))
    f:write(tostring(run.step or 0), "\n")
    f:close()
  end,
}
