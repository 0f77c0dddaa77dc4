-- squeeze submit SCRIPT --slurm [options] [key=value ...] — a sweep as Slurm job arrays.
local runner = require "squeeze.runner"
local slurm = require "squeeze.slurm"
local store = require "squeeze.store"

local M = {}
local fmt = string.format

M.usage = [==[
usage: squeeze submit SCRIPT --slurm [--partition P] [--time T] [--gpus G] [--cpus C]
                      [--mem M] [--account A] [--qos Q] [--throttle N] [--signal SIG@SECS]
                      [--sbatch "OPTION"]... [--retry-failed] [--dry-run] [--name NAME]
                      [--results DIR] [key=value ...]

Freezes every point's config (and a copy of SCRIPT) in the results folder,
then submits the points that are not finished as job arrays (`%N` throttle).
Arrays larger than the cluster's MaxArraySize are split and chained so the
throttle holds.  Each task writes its own shard; fold them into the main
database with `squeeze merge`, watch with `squeeze status`.
With --time, tasks get SIGUSR1 90 s before the limit (or --signal SIG@SECS):
the checkpoint hook runs and the task requeues itself.
Overrides are those of `squeeze sweep` (see squeeze sweep --help).]==]

local SPEC = {
  ["--slurm"] = { "slurm", "flag" },
  ["--partition"] = { "partition", "string", "-p" },
  ["--time"] = { "time", "string", "-t" },
  ["--gpus"] = { "gpus", "string" },
  ["--cpus"] = { "cpus", "int" },
  ["--mem"] = { "mem", "string" },
  ["--account"] = { "account", "string" },
  ["--qos"] = { "qos", "string" },
  ["--throttle"] = { "throttle", "int" },
  ["--signal"] = { "signal", "string" },
  ["--sbatch"] = { "sbatch", "list" },
  ["--retry-failed"] = { "retry_failed", "flag" },
  ["--dry-run"] = { "dry_run", "flag" },
  ["--name"] = { "name", "string" },
  ["--results"] = { "results", "string" },
}

local function fail(msg, code)
  io.stderr:write("squeeze submit: ", msg, "\n")
  return code or 2
end

function M.main(argv)
  local ok, opts, pos, overrides = pcall(runner.parse_cli, argv, SPEC, M.usage)
  if not ok then return fail(opts) end
  if opts.help then print(M.usage) return 0 end
  if #pos ~= 1 then return fail("one SCRIPT expected\n" .. M.usage) end
  if not opts.slurm then
    return fail("only --slurm is supported (for a local run use `squeeze sweep " .. pos[1] .. "`)")
  end
  local sopts
  ok, sopts = pcall(slurm.check_options, opts)
  if not ok then return fail(sopts) end
  local exp, points
  ok, exp, points = pcall(runner.prepare, pos[1], overrides, { name = opts.name })
  if not ok then return fail(exp) end
  local cfg, err = slurm.config()
  if not cfg then return fail(err, 3) end
  local max = cfg.max_array_size
  if opts.dry_run then
    local ids = {}
    for i, p in ipairs(points) do ids[i] = p.id end
    local chunks = slurm.chunks(ids, max)
    print(fmt("sweep '%s': %d point(s) (before skipping finished ones); MaxArraySize %d -> %d array(s)",
              exp.name, #points, max, #chunks))
    print(slurm.batch_script { sweep = exp.name, sub = "K", chunk = 0, n = #chunks[1], opts = sopts,
                               logdir = "RESULTS/sweeps/" .. exp.name .. "/logs", cwd = store.abspath("."),
                               exe = "squeeze", subdir = "SUBDIR", tasks = "SUBDIR/tasks-0.txt" })
    return 0
  end
  local plan
  ok, plan = pcall(runner.freeze, { exp = exp, points = points, results = opts.results, script = pos[1],
                                     argv = { "squeeze", "submit", table.unpack(argv) }, mode = "slurm",
                                     retry_failed = opts.retry_failed, status = "queued",
                                     reconcile = slurm.reconcile })
  if not ok then return fail(plan) end
  local c = plan.counts
  if #plan.scheduled == 0 then
    plan.db:close()
    print(fmt("[%s] nothing to submit: %d finished, %d failed (--retry-failed reruns them), %d queued or running",
              exp.name, c.finished, c.failed_skipped, c.busy))
    return 0
  end
  local jobs, chunks
  ok, jobs, chunks = pcall(slurm.submit, plan, sopts, max)
  plan.db:close()
  if not ok then return fail(jobs, 1) end
  print(fmt("[%s] submitted %d point(s) as %d array job(s): %s (MaxArraySize %d%s%s)", exp.name,
            #plan.scheduled, #jobs, table.concat(jobs, ", "), max,
            sopts.throttle and (", at most " .. sopts.throttle .. " running") or "",
            #jobs > 1 and ", arrays chained with afterany" or ""))
  if c.finished > 0 or c.failed_skipped > 0 then
    print(fmt("[%s] skipped %d finished and %d failed point(s)", exp.name, c.finished, c.failed_skipped))
  end
  print(fmt("watch: squeeze status --sweep %s%s    collect: squeeze merge --sweep %s%s", exp.name,
            opts.results and (" --results " .. opts.results) or "", exp.name,
            opts.results and (" --results " .. opts.results) or ""))
  return 0
end

return M
