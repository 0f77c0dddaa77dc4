-- squeeze runs — list runs, filtered by sweep, status, params and metrics.
local runner = require "squeeze.runner"
local store = require "squeeze.store"
local report = require "squeeze.report"

local M = {}

M.usage = [==[
usage: squeeze runs [--sweep NAME] [--status S[,S...]] [--where "KEY OP VALUE"]...
                    [--columns K1,K2,...] [--sort KEY] [--desc] [--limit N]
                    [--format table|csv|json|markdown|latex] [--results DIR]

Lists runs with the params that vary among them and their final metrics.
KEY is a param (lr, model.depth), a final metric (test_acc) or run_id,
sweep, status, attempt, host; OP is one of = != < <= > >=.
Example: squeeze runs --sweep quickstart --where "lr<=1e-3" --where "test_acc>0.8"]==]

local SPEC = {
  ["--results"] = { "results", "string" },
  ["--sweep"] = { "sweep", "string", "-s" },
  ["--status"] = { "status", "string" },
  ["--where"] = { "where", "list", "-w" },
  ["--columns"] = { "columns", "string", "-c" },
  ["--sort"] = { "sort", "string" },
  ["--desc"] = { "desc", "flag" },
  ["--limit"] = { "limit", "int", "-n" },
  ["--format"] = { "format", "string", "-f" },
}

local function split(s)
  local t = {}
  for p in s:gmatch("[^,]+") do t[#t + 1] = p:match("^%s*(.-)%s*$") end
  return t
end

function M.main(argv)
  local ok, opts, pos = pcall(runner.parse_cli, argv, SPEC, M.usage)
  if not ok then io.stderr:write("squeeze runs: ", opts, "\n") return 2 end
  if opts.help then print(M.usage) return 0 end
  if #pos > 0 then io.stderr:write("squeeze runs: unexpected argument '", pos[1], "'\n") return 2 end
  local db, err = store.open_readonly(opts.results or "results")
  if not db then io.stderr:write("squeeze runs: ", err, "\n") return 2 end
  local status
  if opts.status then
    status = {}
    for _, s in ipairs(split(opts.status)) do status[s] = true end
  end
  local recs = report.load_runs(db, { sweep = opts.sweep, status = status })
  local known = report.known_keys(recs)
  local preds = {}
  for _, w in ipairs(opts.where or {}) do
    local pok, pred = pcall(report.parse_where, w, known)
    if not pok then io.stderr:write("squeeze runs: ", pred, "\n") db:close() return 2 end
    preds[#preds + 1] = pred
  end
  local sel = {}
  for _, r in ipairs(recs) do
    local keep = true
    for _, p in ipairs(preds) do if not p(r) then keep = false break end end
    if keep then sel[#sel + 1] = r end
  end
  if opts.sort then
    if not known[opts.sort] then
      io.stderr:write("squeeze runs: --sort: unknown key '", opts.sort, "'\n") db:close() return 2
    end
    table.sort(sel, function(a, b)
      local x, y = report.field(a, opts.sort), report.field(b, opts.sort)
      if x == nil then return false end
      if y == nil then return true end
      if type(x) ~= type(y) then x, y = tostring(x), tostring(y) end
      if opts.desc then return x > y end
      return x < y
    end)
  end
  if opts.limit then
    while #sel > opts.limit do table.remove(sel) end
  end
  local cols
  if opts.columns then
    cols = split(opts.columns)
    for _, c in ipairs(cols) do
      if not known[c] then io.stderr:write("squeeze runs: --columns: unknown key '", c, "'\n") db:close() return 2 end
    end
  else
    cols = { "run_id" }
    if not opts.sweep then cols[#cols + 1] = "sweep" end
    cols[#cols + 1] = "status"
    for _, k in ipairs(report.varying_params(sel)) do cols[#cols + 1] = k end
    local mkeys, seen = {}, {}
    for _, r in ipairs(sel) do
      for k in pairs(r.metrics) do if not seen[k] then seen[k] = true; mkeys[#mkeys + 1] = k end end
    end
    table.sort(mkeys)
    for _, k in ipairs(mkeys) do cols[#cols + 1] = k end
  end
  local rows = {}
  for i, r in ipairs(sel) do
    local t = {}
    for c, k in ipairs(cols) do t[c] = report.cell(report.field(r, k), 6) end
    rows[i] = t
  end
  ok, err = pcall(report.print, cols, rows, opts.format or "table")
  db:close()
  if not ok then io.stderr:write("squeeze runs: ", err, "\n") return 2 end
  if (opts.format or "table") == "table" then
    io.stderr:write(("%d run(s)\n"):format(#rows))
  end
  return 0
end

return M
