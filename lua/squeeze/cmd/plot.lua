-- squeeze plot — figures through gnuplot: a metric's curves over steps, or
-- a final metric against a param (mean ± std over seeds as error bars).
-- The gnuplot script and its data are kept next to the figure (OUT.gp,
-- OUT.dat) so a figure can be restyled for a paper without squeeze.
local runner = require "squeeze.runner"
local store = require "squeeze.store"
local report = require "squeeze.report"

local M = {}
local fmt = string.format

M.usage = [==[
usage: squeeze plot --sweep NAME --metric M [--x step|PARAM] [--group K[,K2]]
                    [--agg last|min|max|mean] [--where "KEY OP VALUE"]...
                    [--logx] [--logy] [--title T] [-o OUT.png|.svg|.pdf]
                    [--status S[,S]] [--results DIR]

--x step (default): the curve of M over steps, one line per run; with
  --group, one line per group (mean over its runs at each step).
--x PARAM: M per run (--agg: last = final value, or min/max/mean of the
  curve) against PARAM, one line per --group value, mean ± std error bars
  over the runs at each point (seeds).
The format follows OUT's extension (png, svg, pdf); default OUT is
<sweep>-<metric>.png.  Needs gnuplot (Debian: apt-get install gnuplot-nox).]==]

local SPEC = {
  ["--results"] = { "results", "string" },
  ["--sweep"] = { "sweep", "string", "-s" },
  ["--metric"] = { "metric", "string", "-m" },
  ["--x"] = { "x", "string" },
  ["--group"] = { "group", "string", "-g" },
  ["--agg"] = { "agg", "string" },
  ["--where"] = { "where", "list", "-w" },
  ["--logx"] = { "logx", "flag" },
  ["--logy"] = { "logy", "flag" },
  ["--title"] = { "title", "string" },
  ["--output"] = { "output", "string", "-o" },
  ["--status"] = { "status", "string" },
}

local function split(s)
  local t = {}
  for p in (s or ""):gmatch("[^,]+") do t[#t + 1] = p:match("^%s*(.-)%s*$") end
  return t
end

local function num(v)
  if type(v) ~= "number" or v ~= v or v == math.huge or v == -math.huge then return "NaN" end
  return report.cell(v, "full")
end

-- gnuplot string literal
local function gq(s) return '"' .. tostring(s):gsub('\\', '\\\\'):gsub('"', '\\"') .. '"' end

local function fail(msg, code)
  io.stderr:write("squeeze plot: ", msg, "\n")
  return code or 2
end

local function have_gnuplot()
  return store.capture("command -v gnuplot") ~= nil
end

function M.main(argv)
  local ok, opts, pos = pcall(runner.parse_cli, argv, SPEC, M.usage)
  if not ok then return fail(opts) end
  if opts.help then print(M.usage) return 0 end
  if #pos > 0 then return fail("unexpected argument '" .. pos[1] .. "'") end
  if not opts.sweep then return fail("--sweep is required\n" .. M.usage) end
  if not opts.metric then return fail("--metric is required\n" .. M.usage) end
  local out = opts.output or (opts.sweep .. "-" .. opts.metric:gsub("[^%w_.-]", "_") .. ".png")
  local ext = out:match("%.(%w+)$")
  ext = ext and ext:lower()
  local term = ({ png = "pngcairo size 900,600 enhanced font ',11'",
                  svg = "svg size 900,600 enhanced font ',11'",
                  pdf = "pdfcairo size 6in,4in enhanced font ',10'" })[ext or ""]
  if not term then return fail("output '" .. out .. "' must end in .png, .svg or .pdf") end
  local agg = opts.agg or "last"
  if not ({ last = true, min = true, max = true, mean = true })[agg] then
    return fail("--agg must be last, min, max or mean")
  end
  if not have_gnuplot() then
    return fail("gnuplot not found; install it (Debian/Ubuntu: apt-get install gnuplot-nox)", 3)
  end
  local db, err = store.open_readonly(opts.results or "results")
  if not db then return fail(err) end
  local status = {}
  for _, s in ipairs(split(opts.status or "finished")) do status[s] = true end
  local recs = report.load_runs(db, { sweep = opts.sweep, status = status })
  if #recs == 0 then db:close() return fail("no matching runs in sweep '" .. opts.sweep .. "'") end
  local known = report.known_keys(recs)
  for _, w in ipairs(opts.where or {}) do
    local pok, pred = pcall(report.parse_where, w, known)
    if not pok then db:close() return fail(pred) end
    local keep = {}
    for _, r in ipairs(recs) do if pred(r) then keep[#keep + 1] = r end end
    recs = keep
  end
  local groups = split(opts.group)
  for _, g in ipairs(groups) do if not known[g] then db:close() return fail("--group: unknown param '" .. g .. "'") end end
  local x = opts.x or "step"
  if x ~= "step" and not known[x] then db:close() return fail("--x: unknown param '" .. x .. "'") end
  local vary = report.varying_params(recs)
  local function label_of(r, keys)
    local t = {}
    for _, k in ipairs(keys) do t[#t + 1] = k .. "=" .. report.cell(report.field(r, k), 4) end
    return #t > 0 and table.concat(t, " ") or r.run_id
  end
  -- series: { {title=, points = { {x, y, err} }} }
  local series, order = {}, {}
  local function series_for(title)
    if not series[title] then series[title] = { title = title, acc = {} }; order[#order + 1] = title end
    return series[title]
  end
  if x == "step" then
    local keys = #groups > 0 and groups or vary
    for _, r in ipairs(recs) do
      local s = series_for(label_of(r, keys))
      local steps, values = report.curve(db, r.run_id, r.attempt, opts.metric)
      for i, st in ipairs(steps) do
        s.acc[st] = s.acc[st] or {}
        table.insert(s.acc[st], values[i])
      end
    end
  else
    for _, r in ipairs(recs) do
      local s = series_for(#groups > 0 and label_of(r, groups) or opts.metric)
      local xv = report.field(r, x)
      local yv = report.metric_of(db, r, opts.metric, agg)
      if type(xv) == "number" and type(yv) == "number" then
        s.acc[xv] = s.acc[xv] or {}
        table.insert(s.acc[xv], yv)
      end
    end
  end
  db:close()
  table.sort(order)
  -- data file: one block per series (x mean std), blocks separated by two blank lines
  local dat, blocks = {}, 0
  local errorbars = x ~= "step"
  for _, title in ipairs(order) do
    local s = series[title]
    local xs = {}
    for xv in pairs(s.acc) do xs[#xs + 1] = xv end
    table.sort(xs)
    if #xs > 0 then
      dat[#dat + 1] = "# " .. title
      for _, xv in ipairs(xs) do
        local ys, sum, n = s.acc[xv], 0, 0
        for _, y in ipairs(ys) do if y == y and y ~= math.huge and y ~= -math.huge then sum = sum + y; n = n + 1 end end
        local mean = n > 0 and sum / n or 0 / 0
        local ss = 0
        for _, y in ipairs(ys) do if y == y and y ~= math.huge and y ~= -math.huge then ss = ss + (y - mean) ^ 2 end end
        local std = n > 1 and math.sqrt(ss / (n - 1)) or 0
        dat[#dat + 1] = num(xv) .. " " .. num(mean) .. " " .. num(std)
      end
      dat[#dat + 1] = "\n"
      blocks = blocks + 1
      s.block = blocks - 1
    end
  end
  if blocks == 0 then return fail("no data: the runs logged no '" .. opts.metric .. "'" ..
                                  (x ~= "step" and " (or '" .. x .. "' is not numeric)" or "")) end
  local stem = out:gsub("%.%w+$", "")
  local datfile, gpfile = stem .. ".dat", stem .. ".gp"
  local f = io.open(datfile, "w")
  if not f then return fail("cannot write " .. datfile) end
  f:write(table.concat(dat, "\n"))
  f:close()
  local gp = {
    "set terminal " .. term,
    "set output " .. gq(out),
    "set title " .. gq(opts.title or (opts.sweep .. ": " .. opts.metric .. (x ~= "step" and (" vs " .. x) or ""))) .. " noenhanced",
    "set xlabel " .. gq(x == "step" and "step" or x) .. " noenhanced",
    "set ylabel " .. gq(opts.metric .. (x ~= "step" and (" (" .. agg .. ")") or "")) .. " noenhanced",
    "set key outside right top noenhanced",
    "set grid",
  }
  -- against a parameter: a margin, so points on the range's ends (a dense
  -- baseline at keep 1) are not drawn on the frame
  if x ~= "step" then gp[#gp + 1] = "set offsets graph 0.04, graph 0.04, graph 0.05, graph 0.05" end
  if opts.logx then gp[#gp + 1] = "set logscale x" end
  if opts.logy then gp[#gp + 1] = "set logscale y" end
  local plots = {}
  for _, title in ipairs(order) do
    local s = series[title]
    if s.block then
      if errorbars then
        plots[#plots + 1] = fmt("%s index %d using 1:2:3 with yerrorlines pt 7 ps 1.2 title %s", gq(datfile),
          s.block, gq(title))
      else
        plots[#plots + 1] = fmt("%s index %d using 1:2 with lines lw 2 title %s", gq(datfile), s.block, gq(title))
      end
    end
  end
  gp[#gp + 1] = "plot " .. table.concat(plots, ", \\\n     ")
  f = io.open(gpfile, "w")
  if not f then return fail("cannot write " .. gpfile) end
  f:write(table.concat(gp, "\n"), "\n")
  f:close()
  local rc = os.execute("gnuplot " .. store.shell_quote(gpfile))
  if not rc then return fail("gnuplot failed on " .. gpfile, 1) end
  io.stderr:write(fmt("wrote %s (%d line(s); script %s, data %s)\n", out, blocks, gpfile, datfile))
  return 0
end

return M
