-- squeeze.report — reading runs back for the query commands (runs, table,
-- plot) and printing rows as an aligned table, CSV, JSON, Markdown or LaTeX.
local core = require "squeeze.core"
local json = require "squeeze.json"

local M = {}
local fmt = string.format

-- ---- values ---------------------------------------------------------------------

local function decode(value, special)
  if special then return core.store_decode(0, special) end
  return value
end
M.decode = decode

-- Text of a cell value: integers as such, floats with `prec` significant
-- digits ("full": the shortest text that reads back exactly), NaN / inf
-- spelled out, nil as empty.
function M.cell(v, prec)
  if v == nil then return "" end
  if type(v) == "number" then
    if math.type(v) == "integer" then return tostring(v) end
    if v ~= v then return "nan" end
    if v == math.huge then return "inf" end
    if v == -math.huge then return "-inf" end
    if prec == "full" then
      local t
      for p = 15, 17 do
        t = fmt("%." .. p .. "g", v)
        if tonumber(t) == v then break end
      end
      return t
    end
    return fmt("%." .. (prec or 6) .. "g", v)
  end
  return tostring(v)
end

local function param_value(r)
  if r.type == "boolean" then return r.value == 1 end
  if r.type == "json" then
    local ok, v = pcall(json.decode, r.value)
    return ok and v or r.value
  end
  return r.value
end

-- ---- loading runs -------------------------------------------------------------------

-- Runs with their params and final metrics (the run's current attempt):
--   { {run_id=, sweep=, status=, attempt=, started=, ended=, host=, error=,
--      params = {key = value}, metrics = {key = number}} , ... }
-- f = {sweep=, status = {set} or nil}
function M.load_runs(db, f)
  f = f or {}
  local where, args = {}, {}
  if f.sweep then where[#where + 1] = "sweep = ?"; args[#args + 1] = f.sweep end
  local sql = "SELECT * FROM runs" .. (#where > 0 and " WHERE " .. table.concat(where, " AND ") or "")
              .. " ORDER BY sweep, idx"
  local rows = db:rows(sql, args)
  local out, by_id = {}, {}
  for _, r in ipairs(rows) do
    if not f.status or f.status[r.status] then
      local rec = { run_id = r.id, sweep = r.sweep, status = r.status, attempt = r.attempt,
                    started = r.started, ended = r.ended, host = r.host, error = r.error,
                    index = r.idx, params = {}, metrics = {} }
      out[#out + 1] = rec
      by_id[r.id] = rec
    end
  end
  if #out == 0 then return out end
  local scope = f.sweep and " WHERE run_id IN (SELECT id FROM runs WHERE sweep = ?)" or ""
  local sargs = f.sweep and { f.sweep } or nil
  for _, p in ipairs(db:rows("SELECT run_id, key, type, value FROM params" .. scope, sargs)) do
    local rec = by_id[p.run_id]
    if rec then rec.params[p.key] = param_value(p) end
  end
  for _, m in ipairs(db:rows("SELECT s.run_id, s.attempt, s.key, s.value, s.special FROM summary s"
                             .. (f.sweep and " JOIN runs r ON r.id = s.run_id WHERE r.sweep = ?" or ""),
                             sargs)) do
    local rec = by_id[m.run_id]
    if rec and rec.attempt == m.attempt then rec.metrics[m.key] = decode(m.value, m.special) end
  end
  return out
end

-- The curve of one metric of one run's attempt: steps, values (decoded).
function M.curve(db, run_id, attempt, key)
  local steps, values = {}, {}
  for _, r in ipairs(db:rows("SELECT step, value, special FROM metrics WHERE run_id = ? AND attempt = ?"
                             .. " AND key = ? ORDER BY step", { run_id, attempt, key })) do
    steps[#steps + 1] = r.step
    values[#values + 1] = decode(r.value, r.special)
  end
  return steps, values
end

-- A run's value of `metric` aggregated over its curve: last (the final
-- metric, from the summary), min, max, mean (over finite values).
function M.metric_of(db, rec, metric, agg)
  if agg == nil or agg == "last" then return rec.metrics[metric] end
  local _, values = M.curve(db, rec.run_id, rec.attempt, metric)
  local acc, n = nil, 0
  for _, v in ipairs(values) do
    if v == v and v ~= math.huge and v ~= -math.huge then
      n = n + 1
      if agg == "min" then acc = acc and math.min(acc, v) or v
      elseif agg == "max" then acc = acc and math.max(acc, v) or v
      else acc = (acc or 0) + v end
    end
  end
  if agg == "mean" and acc then acc = acc / n end
  return acc
end

-- Value of a key of a run record: a fixed column, a param, or a metric.
function M.field(rec, key)
  if rec[key] ~= nil and type(rec[key]) ~= "table" then return rec[key] end
  local v = rec.params[key]
  if v == nil then v = rec.metrics[key] end
  return v
end

-- ---- filters ---------------------------------------------------------------------------

local OPS = { "==", "!=", "<=", ">=", "=", "<", ">" }

-- Parses "key OP value" (OP one of = == != < <= > >=).  Returns a predicate on run records.
function M.parse_where(text, known)
  local key, op, val
  for _, o in ipairs(OPS) do
    local a, b = text:find(o, 1, true)
    if a then
      local k = text:sub(1, a - 1):match("^%s*(.-)%s*$")
      if k ~= "" and not k:find("[<>=!]") then
        key, op, val = k, o, text:sub(b + 1):match("^%s*(.-)%s*$")
        break
      end
    end
  end
  if not key then
    error(fmt("--where '%s': expected KEY OP VALUE with OP one of = != < <= > >= (e.g. lr<=1e-3)", text), 0)
  end
  if known and not known[key] then
    local names = {}
    for k in pairs(known) do names[#names + 1] = k end
    table.sort(names)
    error(fmt("--where '%s': no param or metric '%s'; known: %s", text, key, table.concat(names, ", ")), 0)
  end
  local num = tonumber(val)
  local want = num or (val == "true" and true) or (val == "false" and false) or val:gsub("^['\"](.*)['\"]$", "%1")
  return function(rec)
    local v = M.field(rec, key)
    if v == nil then return false end
    if type(v) ~= type(want) then
      if type(v) == "number" or type(want) == "number" then return op == "!=" end
      v, want = tostring(v), tostring(want)
    end
    if op == "=" or op == "==" then return v == want end
    if op == "!=" then return v ~= want end
    if type(v) == "boolean" then return false end
    if op == "<" then return v < want end
    if op == "<=" then return v <= want end
    if op == ">" then return v > want end
    return v >= want
  end
end

-- Every key usable in --where / --rows etc. for these records.
function M.known_keys(recs)
  local known = { run_id = true, sweep = true, status = true, attempt = true, host = true }
  for _, r in ipairs(recs) do
    for k in pairs(r.params) do known[k] = true end
    for k in pairs(r.metrics) do known[k] = true end
  end
  return known
end

-- Param keys whose value differs between records.
function M.varying_params(recs)
  local first, vary = {}, {}
  for i, r in ipairs(recs) do
    for k, v in pairs(r.params) do
      local s = type(v) == "table" and json.encode(v) or tostring(v)
      if i == 1 then first[k] = s
      elseif first[k] ~= s then vary[k] = true end
    end
  end
  local keys = {}
  for k in pairs(vary) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

-- Sorts values: numbers ascending first, then strings.
function M.sort_values(vs)
  table.sort(vs, function(a, b)
    local na, nb = type(a) == "number", type(b) == "number"
    if na and nb then return a < b end
    if na ~= nb then return na end
    return tostring(a) < tostring(b)
  end)
  return vs
end

-- ---- printing ------------------------------------------------------------------------------

local function csv_field(s)
  if s:find('[,"\n]') then return '"' .. s:gsub('"', '""') .. '"' end
  return s
end

local LATEX_ESC = { ["\\"] = "\\textbackslash{}", ["&"] = "\\&", ["%"] = "\\%", ["$"] = "\\$",
                    ["#"] = "\\#", ["_"] = "\\_", ["{"] = "\\{", ["}"] = "\\}", ["~"] = "\\~{}",
                    ["^"] = "\\^{}" }
function M.latex_escape(s) return (s:gsub("[\\&%%$#_{}~^]", LATEX_ESC)) end

-- Prints header (array of names) and rows (arrays of strings) in a format.
-- format: "table" (aligned columns), "csv", "json", "markdown", "latex".
function M.print(header, rows, format, out)
  out = out or io.stdout
  format = format or "table"
  if format == "csv" then
    local h = {}
    for i, c in ipairs(header) do h[i] = csv_field(c) end
    out:write(table.concat(h, ","), "\n")
    for _, r in ipairs(rows) do
      local t = {}
      for i = 1, #header do t[i] = csv_field(r[i] or "") end
      out:write(table.concat(t, ","), "\n")
    end
  elseif format == "json" then
    out:write("[")
    for ri, r in ipairs(rows) do
      local parts = {}
      for i, c in ipairs(header) do
        local v = r[i]
        local num = v and tonumber(v)
        parts[#parts + 1] = json.encode(c) .. ":" .. ((v == nil or v == "") and "null"
          or (num and num == num and num ~= math.huge and num ~= -math.huge and v:match("^[-%d.eE+]+$") and v)
          or json.encode(v))
      end
      out:write(ri > 1 and ",\n " or "", "{", table.concat(parts, ","), "}")
    end
    out:write("]\n")
  elseif format == "markdown" then
    local function line(cells)
      local t = {}
      for i = 1, #header do t[i] = (cells[i] or ""):gsub("|", "\\|") end
      return "| " .. table.concat(t, " | ") .. " |\n"
    end
    out:write(line(header))
    local sep = {}
    for i = 1, #header do sep[i] = "---" end
    out:write("|", table.concat(sep, "|"), "|\n")
    for _, r in ipairs(rows) do out:write(line(r)) end
  elseif format == "latex" then
    out:write("\\begin{tabular}{", string.rep("l", #header), "}\n\\toprule\n")
    local h = {}
    for i, c in ipairs(header) do h[i] = M.latex_escape(c) end
    out:write(table.concat(h, " & "), " \\\\\n\\midrule\n")
    for _, r in ipairs(rows) do
      local t = {}
      for i = 1, #header do t[i] = r.latex and r.latex[i] or M.latex_escape(r[i] or "") end
      out:write(table.concat(t, " & "), " \\\\\n")
    end
    out:write("\\bottomrule\n\\end{tabular}\n")
  elseif format == "table" then
    local w = {}
    for i, c in ipairs(header) do w[i] = utf8.len(c) or #c end
    for _, r in ipairs(rows) do
      for i = 1, #header do
        local n = utf8.len(r[i] or "") or #(r[i] or "")
        if n > w[i] then w[i] = n end
      end
    end
    local function line(cells)
      local t = {}
      for i = 1, #header do
        local s = cells[i] or ""
        t[i] = s .. string.rep(" ", w[i] - (utf8.len(s) or #s))
      end
      return (table.concat(t, "  "):gsub("%s+$", "")) .. "\n"
    end
    out:write(line(header))
    local dash = {}
    for i = 1, #header do dash[i] = string.rep("-", w[i]) end
    out:write(line(dash))
    for _, r in ipairs(rows) do out:write(line(r)) end
  else
    error("unknown format '" .. tostring(format) .. "' (table, csv, json, markdown, latex)", 0)
  end
end

return M
