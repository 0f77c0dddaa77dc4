-- squeeze status — every point's state, from the store, the shards'
-- heartbeats and Slurm.  Read-only: it never writes the main database and
-- never opens a shard (a running worker is its only user).
local runner = require "squeeze.runner"
local slurm = require "squeeze.slurm"
local store = require "squeeze.store"
local report = require "squeeze.report"
local json = require "squeeze.json"

local M = {}
local fmt = string.format

M.usage = [==[
usage: squeeze status [--sweep NAME] [--all] [--format table|csv|json|markdown] [--results DIR]

One line per point: the state recorded in DIR/squeeze.db, what the run's
heartbeat file says now (running, or done but not merged yet: '*'), and the
Slurm state of its array task.  Without --all, finished points are left out
of the listing when there are more than 40.]==]

local SPEC = {
  ["--sweep"] = { "sweep", "string", "-s" },
  ["--all"] = { "all", "flag", "-a" },
  ["--format"] = { "format", "string", "-f" },
  ["--results"] = { "results", "string" },
}

function M.main(argv)
  local ok, opts, pos = pcall(runner.parse_cli, argv, SPEC, M.usage)
  if not ok then io.stderr:write("squeeze status: ", opts, "\n") return 2 end
  if opts.help then print(M.usage) return 0 end
  if #pos > 0 then io.stderr:write("squeeze status: unexpected argument '", pos[1], "'\n") return 2 end
  local results = store.abspath(opts.results or "results")
  local db, err = store.open_readonly(results)
  if not db then io.stderr:write("squeeze status: ", err, "\n") return 2 end
  local sweeps = {}
  if opts.sweep then sweeps = { opts.sweep }
  else for _, r in ipairs(db:rows("SELECT name FROM sweeps ORDER BY name")) do sweeps[#sweeps + 1] = r.name end end
  if #sweeps == 0 then print("no sweeps in " .. store.db_path(results)) db:close() return 0 end
  for _, s in ipairs(sweeps) do
    local _, rows = store.runs_of(db, s)
    if #rows == 0 then
      io.stderr:write("squeeze status: no sweep '", s, "' in ", store.db_path(results), "\n")
      db:close()
      return 2
    end
    local jobs = slurm.jobs_of(db, s)
    local active = (#jobs > 0 and slurm.available()) and slurm.active_tasks(jobs) or {}
    -- which params vary (for the listing)
    local recs = report.load_runs(db, { sweep = s })
    local vary = report.varying_params(recs)
    local params = {}
    for _, r in ipairs(recs) do params[r.run_id] = r.params end
    local counts, unmerged, lines = {}, 0, {}
    for _, r in ipairs(rows) do
      local state = r.status
      local live = ""
      local hb = store.heartbeat(results, s, r.id)
      if hb and hb.done then
        if hb.attempt > r.attempt or (hb.attempt == r.attempt and hb.status ~= r.status) then
          state = hb.status .. "*"
          unmerged = unmerged + 1
        end
      elseif hb then
        live = hb.alive and fmt("beat %.0fs ago", hb.age) or fmt("silent %.0fs", hb.age)
        if r.status ~= "running" then state = "running*" end
      end
      local sl = ""
      if r.slurm_array_job_id then
        local key = r.slurm_array_job_id .. "_" .. tostring(r.slurm_task_id)
        local a = active and active[key]
        sl = a and (a.state .. (a.reason ~= "None" and (" (" .. a.reason .. ")") or "")) or "ended"
        sl = key .. " " .. sl
      end
      local base = state:gsub("%*$", "")
      counts[base] = (counts[base] or 0) + 1
      local desc = {}
      for _, k in ipairs(vary) do
        local v = params[r.id] and params[r.id][k]
        desc[#desc + 1] = k .. "=" .. (type(v) == "table" and json.encode(v) or report.cell(v, 6))
      end
      lines[#lines + 1] = { id = r.id, finished = base == "finished",
        cells = { r.id, tostring(r.idx), table.concat(desc, " "), state, tostring(r.attempt), live, sl,
                  (r.error or ""):match("^[^\n]*"):sub(1, 80) } }
    end
    local parts = {}
    for _, k in ipairs({ "finished", "running", "queued", "pending", "preempted", "killed", "failed" }) do
      if counts[k] then parts[#parts + 1] = counts[k] .. " " .. k end
    end
    print(fmt("[%s] %d point(s): %s%s", s, #rows, table.concat(parts, ", "),
              unmerged > 0 and fmt(" (%d ended but not merged yet, marked *: run squeeze merge)", unmerged) or ""))
    local show = {}
    for _, l in ipairs(lines) do
      if opts.all or #lines <= 40 or not l.finished then show[#show + 1] = l.cells end
    end
    if #show > 0 then
      report.print({ "run", "idx", "params", "state", "attempt", "heartbeat", "slurm", "error" }, show,
                   opts.format or "table")
    end
  end
  db:close()
  return 0
end

return M
