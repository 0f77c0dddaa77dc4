-- squeeze table — a paper table: rows x columns of params, each cell a
-- metric aggregated over the runs that share those params (seeds) as
-- mean ± std, in Markdown, CSV or LaTeX.
local runner = require "squeeze.runner"
local store = require "squeeze.store"
local report = require "squeeze.report"

local M = {}
local fmt = string.format

M.usage = [==[
usage: squeeze table --sweep NAME --rows K[,K2] [--cols K[,K2]] --metric M
                     [--agg last|min|max|mean] [--format markdown|csv|latex|table]
                     [--precision P] [--where "KEY OP VALUE"]... [--status S[,S]]
                     [--best max|min] [--results DIR]

Each cell: the metric of every run whose params match the row and column,
as mean ± std (sample std, n-1) over those runs, with n.  --agg picks the
per-run value: last (the final metric, default), or min / max / mean over
the run's logged curve.  Only finished runs count unless --status says
otherwise.  Params that vary inside a cell other than `seed` are reported
on stderr: add them to --rows or --cols.  --best bolds the best cell of
each row.  CSV has one mean, std and n column per table column.
Example: squeeze table --sweep quickstart --rows lr --cols hidden --metric test_acc --format latex]==]

local SPEC = {
  ["--results"] = { "results", "string" },
  ["--sweep"] = { "sweep", "string", "-s" },
  ["--rows"] = { "rows", "string", "-r" },
  ["--cols"] = { "cols", "string", "-c" },
  ["--metric"] = { "metric", "string", "-m" },
  ["--agg"] = { "agg", "string" },
  ["--format"] = { "format", "string", "-f" },
  ["--precision"] = { "precision", "int", "-p" },
  ["--where"] = { "where", "list", "-w" },
  ["--status"] = { "status", "string" },
  ["--best"] = { "best", "string" },
}

local function split(s)
  local t = {}
  for p in (s or ""):gmatch("[^,]+") do t[#t + 1] = p:match("^%s*(.-)%s*$") end
  return t
end

local function key_of(rec, keys)
  local parts, vals = {}, {}
  for i, k in ipairs(keys) do
    local v = report.field(rec, k)
    vals[i] = v
    parts[i] = report.cell(v, "full")
  end
  return table.concat(parts, "\31"), vals
end

local function stats(xs)
  local n, s = 0, 0
  for _, x in ipairs(xs) do n = n + 1; s = s + x end
  if n == 0 then return nil end
  local mean = s / n
  local ss = 0
  for _, x in ipairs(xs) do ss = ss + (x - mean) ^ 2 end
  return mean, n > 1 and math.sqrt(ss / (n - 1)) or nil, n
end

local function fail(msg)
  io.stderr:write("squeeze table: ", msg, "\n")
  return 2
end

function M.main(argv)
  local ok, opts, pos = pcall(runner.parse_cli, argv, SPEC, M.usage)
  if not ok then return fail(opts) end
  if opts.help then print(M.usage) return 0 end
  if #pos > 0 then return fail("unexpected argument '" .. pos[1] .. "'") end
  if not opts.metric then return fail("--metric is required\n" .. M.usage) end
  if not opts.rows then return fail("--rows is required\n" .. M.usage) end
  local agg = opts.agg or "last"
  if not ({ last = true, min = true, max = true, mean = true })[agg] then
    return fail("--agg must be last, min, max or mean")
  end
  local format = opts.format or "markdown"
  if not ({ markdown = true, csv = true, latex = true, table = true })[format] then
    return fail("--format must be markdown, csv, latex or table")
  end
  if opts.best and opts.best ~= "max" and opts.best ~= "min" then return fail("--best must be max or min") end
  local prec = opts.precision or 3
  local db, err = store.open_readonly(opts.results or "results")
  if not db then return fail(err) end
  local status = {}
  for _, s in ipairs(split(opts.status or "finished")) do status[s] = true end
  local recs = report.load_runs(db, { sweep = opts.sweep, status = status })
  if #recs == 0 then
    db:close()
    return fail(opts.sweep and fmt("no %s runs in sweep '%s'", opts.status or "finished", opts.sweep)
                or "no runs match")
  end
  local known = report.known_keys(recs)
  local rows, cols = split(opts.rows), split(opts.cols)
  for _, k in ipairs(rows) do if not known[k] then db:close() return fail("--rows: unknown param '" .. k .. "'") end end
  for _, k in ipairs(cols) do if not known[k] then db:close() return fail("--cols: unknown param '" .. k .. "'") end end
  if not known[opts.metric] then
    local ms, seen = {}, {}
    for _, r in ipairs(recs) do for k in pairs(r.metrics) do if not seen[k] then seen[k] = true; ms[#ms + 1] = k end end end
    table.sort(ms)
    db:close()
    return fail(fmt("no metric '%s'; the runs have: %s", opts.metric, table.concat(ms, ", ")))
  end
  for _, w in ipairs(opts.where or {}) do
    local pok, pred = pcall(report.parse_where, w, known)
    if not pok then db:close() return fail(pred) end
    local keep = {}
    for _, r in ipairs(recs) do if pred(r) then keep[#keep + 1] = r end end
    recs = keep
  end
  -- group runs into cells
  local row_keys, col_keys, row_vals, col_vals, cells = {}, {}, {}, {}, {}
  local members = {}
  for _, r in ipairs(recs) do
    local rk, rv = key_of(r, rows)
    local ck, cv = key_of(r, cols)
    if not row_vals[rk] then row_vals[rk] = rv; row_keys[#row_keys + 1] = rk end
    if not col_vals[ck] then col_vals[ck] = cv; col_keys[#col_keys + 1] = ck end
    local cell = rk .. "\30" .. ck
    cells[cell] = cells[cell] or {}
    members[cell] = members[cell] or {}
    table.insert(members[cell], r)
    local v = report.metric_of(db, r, opts.metric, agg)
    if type(v) == "number" and v == v and v ~= math.huge and v ~= -math.huge then
      table.insert(cells[cell], v)
    end
  end
  db:close()
  -- params varying inside a cell (what we average over)
  local inside = {}
  for _, ms in pairs(members) do
    for _, k in ipairs(report.varying_params(ms)) do inside[k] = true end
  end
  local over = {}
  for k in pairs(inside) do over[#over + 1] = k end
  table.sort(over)
  local suspicious = {}
  for _, k in ipairs(over) do if k ~= "seed" then suspicious[#suspicious + 1] = k end end
  if #suspicious > 0 then
    io.stderr:write(fmt("squeeze table: warning: cells also average over %s (they vary within a cell); "
                        .. "add them to --rows or --cols\n", table.concat(suspicious, ", ")))
  end
  local function sort_keys(keys, vals)
    table.sort(keys, function(a, b)
      local va, vb = vals[a], vals[b]
      for i = 1, #va do
        local x, y = va[i], vb[i]
        if x ~= y then
          if type(x) == "number" and type(y) == "number" then return x < y end
          return tostring(x) < tostring(y)
        end
      end
      return false
    end)
  end
  sort_keys(row_keys, row_vals)
  sort_keys(col_keys, col_vals)
  local function label(keys, vals)
    local t = {}
    for i, k in ipairs(keys) do t[i] = (#keys > 1 and (k .. "=") or "") .. report.cell(vals[i], 6) end
    return table.concat(t, ", ")
  end
  local col_label = {}
  for i, ck in ipairs(col_keys) do
    col_label[i] = #cols == 0 and opts.metric or ((#cols == 1 and (cols[1] .. "=") or "") .. label(cols, col_vals[ck]))
  end
  local ns = {}
  local header = { table.concat(rows, ", ") }
  local out = {}
  if format == "csv" then
    for i = 1, #col_keys do
      local base = #cols == 0 and opts.metric or col_label[i]
      header[#header + 1] = base .. " mean"
      header[#header + 1] = base .. " std"
      header[#header + 1] = base .. " n"
    end
    for _, rk in ipairs(row_keys) do
      local line = { label(rows, row_vals[rk]) }
      for _, ck in ipairs(col_keys) do
        local mean, std, n = stats(cells[rk .. "\30" .. ck] or {})
        line[#line + 1] = mean and report.cell(mean, "full") or ""
        line[#line + 1] = std and report.cell(std, "full") or ""
        line[#line + 1] = tostring(n or 0)
      end
      out[#out + 1] = line
    end
    report.print(header, out, "csv")
    return 0
  end
  for i = 1, #col_keys do header[#header + 1] = col_label[i] end
  local numfmt = "%." .. prec .. "f"
  for _, rk in ipairs(row_keys) do
    local line, latex = { label(rows, row_vals[rk]) }, { report.latex_escape(label(rows, row_vals[rk])) }
    local best, best_i
    local means = {}
    for j, ck in ipairs(col_keys) do
      local mean, _, n = stats(cells[rk .. "\30" .. ck] or {})
      means[j] = mean
      if mean and (best == nil or (opts.best == "min" and mean < best) or (opts.best ~= "min" and mean > best)) then
        best, best_i = mean, j
      end
      if n then ns[n] = true end
    end
    for j, ck in ipairs(col_keys) do
      local mean, std, n = stats(cells[rk .. "\30" .. ck] or {})
      local txt, tex
      if not mean then txt, tex = "–", "--"
      else
        local m = fmt(numfmt, mean)
        if std then
          txt = m .. " ± " .. fmt(numfmt, std)
          tex = "$" .. m .. " \\pm " .. fmt(numfmt, std) .. "$"
        else
          txt, tex = m, "$" .. m .. "$"
        end
        if opts.best and j == best_i then
          txt = format == "markdown" and ("**" .. txt .. "**") or txt
          tex = "$\\mathbf{" .. tex:sub(2, -2) .. "}$"
        end
      end
      line[#line + 1] = txt
      latex[#latex + 1] = tex
    end
    line.latex = latex
    out[#out + 1] = line
  end
  report.print(header, out, format)
  local nlist = {}
  for n in pairs(ns) do nlist[#nlist + 1] = n end
  table.sort(nlist)
  local note = fmt("%s (%s), mean ± std over %s; n = %s runs per cell",
                   opts.metric, agg, #over > 0 and table.concat(over, ", ") or "runs",
                   table.concat(nlist, "/"))
  if format == "latex" then io.write("% ", note, "\n")
  else io.write("\n", note, "\n") end
  return 0
end

return M
