-- squeeze query "SQL" — run one read-only SQL statement on the results database.
local runner = require "squeeze.runner"
local store = require "squeeze.store"
local report = require "squeeze.report"

local M = {}

M.usage = [==[
usage: squeeze query "SQL" [--results DIR] [--format table|csv|json|markdown|latex]

Runs ONE statement on DIR/squeeze.db (default results/), opened read-only:
writes are refused.  Tables: runs, attempts, params, metrics, summary, tags,
artifacts, sweeps, submissions, provenance; views: flat (one row per run,
params and final metrics as columns), final_metrics, metrics_decoded.
Example: squeeze query "select sweep, status, count(*) from runs group by 1, 2"]==]

local SPEC = {
  ["--results"] = { "results", "string" },
  ["--format"] = { "format", "string", "-f" },
}

function M.main(argv)
  local ok, opts, pos = pcall(runner.parse_cli, argv, SPEC, M.usage)
  if not ok then io.stderr:write("squeeze query: ", opts, "\n") return 2 end
  if opts.help then print(M.usage) return 0 end
  if #pos ~= 1 then io.stderr:write("squeeze query: one SQL statement expected\n", M.usage, "\n") return 2 end
  local db, err = store.open_readonly(opts.results or "results")
  if not db then io.stderr:write("squeeze query: ", err, "\n") return 2 end
  local rows, cols
  ok, rows, cols = pcall(db.rows, db, pos[1])
  if not ok then
    local msg = tostring(rows):gsub("^store%.rows: ", "")
    if msg:find("readonly") or msg:find("read%-only") or msg:find("query_only") then
      msg = msg .. " (squeeze query is read-only)"
    end
    io.stderr:write("squeeze query: ", msg, "\n")
    db:close()
    return 1
  end
  local out = {}
  for i, r in ipairs(rows) do
    local t = {}
    for c, name in ipairs(cols) do t[c] = report.cell(r[name], "full") end
    out[i] = t
  end
  ok, err = pcall(report.print, cols, out, opts.format or "table")
  db:close()
  if not ok then io.stderr:write("squeeze query: ", err, "\n") return 2 end
  return 0
end

return M
