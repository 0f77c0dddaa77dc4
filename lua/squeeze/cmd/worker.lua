-- squeeze worker — runs one point of a frozen submission (internal: started
-- by `squeeze sweep` and by Slurm array tasks).
--   squeeze worker --dir SUBDIR --run RUN_ID [--attempt N]
--   squeeze worker --dir SUBDIR --tasks FILE --index I     (I: line I+1 of FILE)
-- Exit code: 0 finished, 1 failed, 2 killed, 3 preempted (requeued), 4 usage.
local runner = require "squeeze.runner"
local worker = require "squeeze.worker"
local store = require "squeeze.store"

local M = {}

local SPEC = {
  ["--dir"] = { "dir", "string" },
  ["--run"] = { "run", "string" },
  ["--attempt"] = { "attempt", "int" },
  ["--tasks"] = { "tasks", "string" },
  ["--index"] = { "index", "int" },
  ["--preempt-signal"] = { "preempt", "string" },
}

local function fail(msg)
  io.stderr:write("squeeze worker: ", msg, "\n")
  return 4
end

function M.main(argv)
  local ok, opts = pcall(runner.parse_cli, argv, SPEC, "see squeeze/cmd/worker.lua")
  if not ok then return fail(opts) end
  if not opts.dir then return fail("--dir SUBDIR is required") end
  local frozen
  ok, frozen = pcall(worker.read_frozen, opts.dir)
  if not ok then return fail(frozen) end
  local run_id = opts.run
  if not run_id then
    if not (opts.tasks and opts.index) then return fail("--run ID or --tasks FILE --index I is required") end
    local text = store.read_file(opts.tasks)
    if not text then return fail("cannot read " .. opts.tasks) end
    local i = 0
    for line in text:gmatch("[^\n]+") do
      if i == opts.index then run_id = line break end
      i = i + 1
    end
    if not run_id then return fail(("task index %d is past the end of %s"):format(opts.index, opts.tasks)) end
  end
  local rec = worker.find_point(frozen, run_id)
  if not rec then return fail("run " .. run_id .. " is not in " .. opts.dir .. "/points.json") end
  local status = worker.execute {
    results = frozen.results, sweep = frozen.sweep, point = worker.point_of(rec),
    attempt = opts.attempt, script = opts.dir .. "/script.lua",
    preempt_signal = opts.preempt or os.getenv("SQUEEZE_PREEMPT_SIGNAL"),
    requeue = os.getenv("SLURM_JOB_ID") ~= nil and frozen.mode == "slurm",
  }
  return worker.EXIT[status] or 1
end

return M
