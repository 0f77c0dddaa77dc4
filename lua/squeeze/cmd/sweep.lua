-- squeeze sweep SCRIPT [-j N] [options] [key=value ...] — run a sweep locally.
local runner = require "squeeze.runner"
local sweep = require "squeeze.sweep"

local M = {}

M.usage = [==[
usage: squeeze sweep SCRIPT [-j N] [--results DIR] [--retry-failed] [--dry-run]
                     [--name NAME] [--quiet] [key=value ...]

Runs every point of the experiment SCRIPT returns, in N worker processes
(default 1).  Finished points are skipped; killed and never-run points run;
failed points are rerun only with --retry-failed.  Results: DIR/squeeze.db
(default results/).

Overrides (all checked against the base config before anything runs):
  key=value            set a config key for every point (nested: model.depth=4)
  key=a,b,c            sweep the key over these values (product with the script's sweep)
  key=1..5  key=0..1:0.25           inclusive ranges
  key=range(0,10,2)  key=linspace(0,1,5)  key=logspace(-4,-2,3)
A key given on the command line replaces the script's axis for that key.]==]

local SPEC = {
  ["--jobs"] = { "jobs", "int", "-j" },
  ["--results"] = { "results", "string" },
  ["--retry-failed"] = { "retry_failed", "flag" },
  ["--dry-run"] = { "dry_run", "flag" },
  ["--name"] = { "name", "string" },
  ["--quiet"] = { "quiet", "flag", "-q" },
  ["--grace"] = { "grace", "int" },
}

local function fail(msg)
  io.stderr:write("squeeze sweep: ", msg, "\n")
  return 2
end

function M.main(argv)
  local ok, opts, pos, overrides = pcall(runner.parse_cli, argv, SPEC, M.usage)
  if not ok then return fail(opts) end
  if opts.help then print(M.usage) return 0 end
  if #pos ~= 1 then return fail("one SCRIPT expected\n" .. M.usage) end
  local exp, points
  ok, exp, points = pcall(runner.prepare, pos[1], overrides, { name = opts.name })
  if not ok then return fail(exp) end
  if opts.dry_run then
    print(("sweep '%s': %s"):format(exp.name, sweep.describe(exp.sweep)))
    if #overrides > 0 then print("command line: " .. table.concat(overrides, " ")) end
    print(("%d point(s):"):format(#points))
    for _, p in ipairs(points) do print(("  %s  %s"):format(p.id, runner.describe_point(p))) end
    return 0
  end
  local plan
  ok, plan = pcall(runner.freeze, { exp = exp, points = points, results = opts.results,
                                     script = pos[1], argv = { "squeeze", "sweep", table.unpack(argv) },
                                     mode = "local", retry_failed = opts.retry_failed })
  if not ok then return fail(plan) end
  local c = plan.counts
  if not opts.quiet and (c.finished > 0 or c.failed_skipped > 0 or c.busy > 0) then
    local parts = { ("%d already finished"):format(c.finished) }
    if c.failed_skipped > 0 then
      parts[#parts + 1] = ("%d failed (skipped; --retry-failed reruns them)"):format(c.failed_skipped)
    end
    if c.busy > 0 then parts[#parts + 1] = ("%d running elsewhere"):format(c.busy) end
    parts[#parts + 1] = ("%d to run"):format(#plan.scheduled)
    io.stderr:write(("[%s] %d point(s): %s\n"):format(exp.name, #points, table.concat(parts, ", ")))
  end
  local code = runner.run_local(plan, { jobs = opts.jobs or 1, quiet = opts.quiet, points = points,
                                        grace = opts.grace })
  plan.db:close()
  if code == 0 and c.failed_skipped > 0 then code = 1 end
  return code
end

return M
