-- squeeze.runner — command-line parsing shared by `sweep` and `submit`,
-- freezing a submission, choosing what to (re)run, and the local runner:
-- N worker processes, each writing its own shard, merged into the main
-- database by this process (its only writer) as each one ends.
local core = require "squeeze.core"
local json = require "squeeze.json"
local store = require "squeeze.store"
local experiment = require "squeeze.experiment"

local M = {}
local fmt = string.format

-- ---- command line -------------------------------------------------------------

-- Parses argv against spec = { ["--name"] = {field, kind[, short]} } with
-- kinds "flag", "int", "string", "list" (repeatable).  Returns opts,
-- positionals, overrides (args containing '=' that are not options).
function M.parse_cli(argv, spec, usage)
  local opts, pos, overrides = {}, {}, {}
  local short = {}
  for name, s in pairs(spec) do if s[3] then short[s[3]] = name end end
  local i = 1
  while i <= #argv do
    local a = argv[i]
    if a == "-h" or a == "--help" then
      opts.help = true
    elseif a:sub(1, 1) == "-" and #a > 1 then
      local name, val = a:match("^(%-%-?[^=]+)=(.*)$")
      name = name or a
      if not val and not spec[name] and not short[name] and a:match("^%-%a.") then
        name, val = a:sub(1, 2), a:sub(3)   -- -j8
      end
      name = short[name] or name
      local s = spec[name]
      if not s then error(fmt("unknown option '%s'\n%s", a, usage), 0) end
      if s[2] == "flag" then
        if val then error(fmt("option %s takes no value", name), 0) end
        opts[s[1]] = true
      else
        if not val then
          i = i + 1
          val = argv[i]
          if val == nil then error(fmt("option %s needs a value", name), 0) end
        end
        if s[2] == "int" then
          local n = math.tointeger(tonumber(val))
          if not n or n < 0 then error(fmt("option %s: '%s' is not a whole number >= 0", name, val), 0) end
          opts[s[1]] = n
        elseif s[2] == "list" then
          opts[s[1]] = opts[s[1]] or {}
          table.insert(opts[s[1]], val)
        else
          opts[s[1]] = val
        end
      end
    elseif a:find("=", 1, true) and #pos >= 1 then
      overrides[#overrides + 1] = a
    else
      pos[#pos + 1] = a
    end
    i = i + 1
  end
  return opts, pos, overrides
end

-- "lr=0.001 seed=2" from a point's assignments (or its index).
function M.describe_point(p)
  local keys = {}
  for k in pairs(p.assign or {}) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do
    local v = p.assign[k]
    parts[#parts + 1] = k .. "=" .. (type(v) == "table" and json.encode(v) or tostring(v))
  end
  if #parts == 0 then return "#" .. p.index end
  return table.concat(parts, " ")
end

-- ---- freezing a submission ---------------------------------------------------------

-- Which points to run: finished ones never; failed ones only with
-- retry_failed; running (alive elsewhere) and queued ones not; the rest
-- (new, pending, killed, preempted) yes.  Returns scheduled, counts.
function M.schedule(points, runs, retry_failed)
  local sched, counts = {}, { finished = 0, failed_skipped = 0, busy = 0, new = 0, rerun = 0 }
  for _, p in ipairs(points) do
    local r = runs[p.id]
    local st = r and r.status or "new"
    if st == "finished" then counts.finished = counts.finished + 1
    elseif st == "failed" and not retry_failed then counts.failed_skipped = counts.failed_skipped + 1
    elseif st == "running" or st == "queued" then counts.busy = counts.busy + 1
    else
      if st == "new" or st == "pending" then counts.new = counts.new + 1 else counts.rerun = counts.rerun + 1 end
      sched[#sched + 1] = p
    end
  end
  return sched, counts
end

-- Opens the main database, brings the sweep's state up to date (merges
-- shards no worker is writing, marks dead workers' runs killed), picks the
-- points to run and records the submission with its frozen files:
--   sweeps/<name>/sub-<K>/script.lua    the script as it is now
--   sweeps/<name>/sub-<K>/points.json   every point's canonical config
-- o = {exp, points, results, script, argv, mode, retry_failed, status, reconcile(db)}
-- Returns plan = {db, results, sweep, sub, subdir, runs, scheduled, counts}.
function M.freeze(o)
  local results = store.abspath(o.results or "results")
  local name = o.exp.name
  local db, err = store.open_main(results)
  if not db then error(err, 0) end
  store.merge_sweep(db, results, name)
  store.reconcile_running(db, results, name)
  if o.reconcile then o.reconcile(db, results, name) end
  local runs = store.runs_of(db, name)
  local scheduled, counts = M.schedule(o.points, runs, o.retry_failed)
  if o.mode == "once" then scheduled = { o.points[1] } end
  local script_text = o.script and store.read_file(o.script) or nil
  local script_abs = o.script and store.abspath(o.script) or nil
  local prov = store.provenance(script_abs and store.dirname(script_abs) or ".", o.argv)
  local plan = { db = db, results = results, sweep = name, runs = runs, scheduled = scheduled,
                 counts = counts, script = script_abs, argv = o.argv }
  local ids = {}
  for i, p in ipairs(scheduled) do ids[i] = p.id end
  plan.sub = store.record_submission(db, {
    sweep = name, script = script_abs or "(in-process)", script_text = script_text,
    base_config = o.exp.config, points = o.points, scheduled = ids, mode = o.mode,
    provenance = prov, argv = o.argv, status = o.status or "pending",
    write_files = function(sub)
      local subdir = store.sweep_dir(results, name) .. "/sub-" .. sub
      store.mkdir(subdir)
      store.mkdir(store.shard_dir(results, name))
      store.mkdir(store.sweep_dir(results, name) .. "/logs")
      if script_text then
        local ok, e = core.proc_write_atomic(subdir .. "/script.lua", script_text)
        if not ok then error(e, 0) end
      end
      local recs = {}
      for i, p in ipairs(o.points) do
        recs[i] = { id = p.id, index = p.index, config_hash = p.config_hash, seed = p.seed,
                    config = p.json }
      end
      local doc = { sweep = name, results = results, submission = sub, mode = o.mode,
                    script = script_abs, script_dir = script_abs and store.dirname(script_abs),
                    points = recs, scheduled = ids }
      local ok, e = core.proc_write_atomic(subdir .. "/points.json", json.encode(doc))
      if not ok then error(e, 0) end
      plan.subdir = subdir
    end,
  })
  db:refresh_flat()
  return plan
end

-- Loads the script and resolves its points; nothing is written.
function M.prepare(script, overrides, opts)
  local exp = experiment.load(script)
  local points = experiment.points(exp, overrides, { name = opts and opts.name })
  if opts and opts.name then exp.name = opts.name end
  return exp, points
end

-- ---- the local runner ---------------------------------------------------------------

local function fmt_duration(s)
  if s ~= s or s == math.huge then return "?" end
  if s < 60 then return fmt("%.0fs", s) end
  if s < 3600 then return fmt("%dm%02ds", s // 60, math.floor(s % 60)) end
  return fmt("%dh%02dm", s // 3600, math.floor((s % 3600) / 60))
end

local function log_tail(path, n)
  local text = store.read_file(path)
  if not text then return nil end
  local lines = {}
  for line in text:gmatch("[^\n]+") do lines[#lines + 1] = line end
  local from = math.max(1, #lines - n + 1)
  return table.concat(lines, "\n", from)
end

local function first_line(s)
  return s and (s:match("^[^\n]*")) or ""
end

-- Runs plan.scheduled in `jobs` worker processes.  Returns the exit code:
-- 0 every point of the sweep finished, 1 some failed or were killed,
-- 130 interrupted.
function M.run_local(plan, o)
  local db, results, sweep = plan.db, plan.results, plan.sweep
  local jobs = math.max(1, o.jobs or 1)
  local tty = core.proc_isatty(2) and not o.quiet
  local out = io.stderr
  local exe = core.proc_self_exe()
  local env = { "SQUEEZE_WORKER=1" }
  if jobs > 1 and not os.getenv("OPENBLAS_NUM_THREADS") then env[#env + 1] = "OPENBLAS_NUM_THREADS=1" end
  local queue, running, nrun = {}, {}, 0
  for i, p in ipairs(plan.scheduled) do queue[i] = p end
  local total = #queue
  local done, failed, killed = 0, 0, 0
  local t0 = core.proc_monotonic()
  local interrupted, hard = false, false
  local signals = core.proc_signals({ "INT", "TERM", "HUP" })
  local deadline

  local function progress(final)
    if not tty then return end
    local el = core.proc_monotonic() - t0
    local ended = done + failed + killed
    local rate = ended / math.max(el, 1e-3)
    local eta = rate > 0 and (total - ended) / rate or math.huge
    local line = fmt("[%s] %d/%d done, %d failed, %d running | %.2f/s | %s %s", sweep, done, total,
                     failed + killed, nrun, rate, final and "took" or "ETA",
                     fmt_duration(final and el or eta))
    local w = core.proc_term_width(2)
    if w > 0 and #line > w - 1 then line = line:sub(1, w - 1) end
    out:write("\r\27[K", line, final and "\n" or "")
    out:flush()
  end

  local function say(msg)
    if tty then out:write("\r\27[K") end
    out:write(msg, "\n")
    progress(false)
  end

  local function spawn(p)
    local prev = db:rows("SELECT attempt FROM runs WHERE id = ?", { p.id })[1]
    local attempt = (prev and prev.attempt or 0) + 1
    local log = store.log_path(results, sweep, p.id, attempt)
    local pid, err = core.proc_spawn {
      argv = { exe, "worker", "--dir", plan.subdir, "--run", p.id, "--attempt", tostring(attempt) },
      env = env, log = log, new_group = true, die_with_parent = true }
    local now = core.proc_time()
    if not pid then
      store.set_attempt(db, p.id, attempt, { status = "failed", started = now, ended = now,
        host = store.hostname(), error = "cannot start a worker: " .. err })
      failed = failed + 1
      say(fmt("point %s (%s) failed: cannot start a worker: %s", p.id, M.describe_point(p), err))
      return
    end
    store.set_attempt(db, p.id, attempt, { status = "running", started = now,
                                           host = store.hostname(), pid = pid })
    running[pid] = { p = p, attempt = attempt, log = log }
    nrun = nrun + 1
  end

  local function reaped(pid, ex)
    local w = running[pid]
    if not w then return end
    running[pid] = nil
    nrun = nrun - 1
    local p = w.p
    local shard = "sweeps/" .. sweep .. "/shards/" .. p.id .. ".db"
    local ok, e = pcall(store.merge_shard, db, results, shard, true)
    if not ok then say("warning: " .. tostring(e)) end
    local row = db:rows("SELECT status, error FROM runs WHERE id = ?", { p.id })[1]
    local status = row and row.status or "running"
    if status == "running" or status == "pending" then
      -- the worker ended without recording an outcome: a crash or a signal
      local why
      if ex.state == "signaled" then
        why = fmt("worker died: %s%s", ex.signame, ex.core and " (core dumped)" or "")
        if ex.signal == 9 then why = why .. " (killed; out of memory?)" end
      else
        why = fmt("worker exited with code %d before recording an outcome", ex.code or -1)
      end
      status = interrupted and "killed" or "failed"
      store.set_attempt(db, p.id, w.attempt, { status = status, ended = core.proc_time(),
        exit_code = ex.code, signal = ex.signal, error = why,
        traceback = log_tail(w.log, 20) })
      row = { error = why }
    end
    if status == "finished" then done = done + 1
    elseif status == "killed" or status == "preempted" then killed = killed + 1
    else
      failed = failed + 1
      say(fmt("point %s (%s) failed: %s  [log: %s]", p.id, M.describe_point(p),
              first_line(row and row.error), w.log))
    end
    progress(false)
  end

  if not tty and not o.quiet and total > 0 then
    out:write(fmt("[%s] running %d point(s) with %d worker(s)\n", sweep, total, jobs))
  end
  progress(false)
  local last_flat = core.proc_monotonic()
  local last_progress = last_flat
  while true do
    local sig = signals and signals:take()
    if sig then
      if interrupted then hard = true end
      if not interrupted then
        interrupted = true
        queue = {}
        deadline = core.proc_monotonic() + (o.grace or 10)
        say(fmt("interrupted (%s): stopping %d running point(s); Ctrl-C again to kill at once",
                core.proc_signame(sig), nrun))
        for pid in pairs(running) do core.proc_kill(pid, "TERM", true) end
      end
    end
    if interrupted and (hard or core.proc_monotonic() > deadline) then
      for pid in pairs(running) do core.proc_kill(pid, "KILL", true) end
    end
    local spawned = false
    while not interrupted and nrun < jobs and #queue > 0 do
      spawn(table.remove(queue, 1))
      spawned = true
    end
    if spawned or core.proc_monotonic() - last_progress > 0.5 then
      progress(false)
      last_progress = core.proc_monotonic()
    end
    if nrun == 0 and (#queue == 0 or interrupted) then break end
    local got = false
    while true do
      local ex = core.proc_wait(-1, true)
      if not ex then break end
      got = true
      reaped(ex.pid, ex)
    end
    if not got then core.proc_sleep(0.02) end
    if core.proc_monotonic() - last_flat > 30 then db:refresh_flat(); last_flat = core.proc_monotonic() end
  end
  if signals then signals:restore() end
  -- never-started points of an interrupted sweep stay 'pending' (rerun next time)
  db:refresh_flat()
  progress(true)
  local all = db:rows("SELECT status, count(*) AS n FROM runs WHERE sweep = ? GROUP BY status", { sweep })
  local by = {}
  for _, r in ipairs(all) do by[r.status] = r.n end
  local in_sweep = {}
  for _, p in ipairs(o.points or plan.scheduled) do in_sweep[p.id] = true end
  local unfinished = 0
  for id in pairs(in_sweep) do
    local r = db:rows("SELECT status FROM runs WHERE id = ?", { id })[1]
    if not r or r.status ~= "finished" then unfinished = unfinished + 1 end
  end
  if not o.quiet then
    out:write(fmt("[%s] this run: %d finished, %d failed, %d killed of %d; sweep total: %d finished, "
                  .. "%d failed, %d killed, %d pending (results in %s)\n", sweep, done, failed, killed,
                  total, by.finished or 0, by.failed or 0, (by.killed or 0) + (by.preempted or 0),
                  by.pending or 0, store.db_path(results)))
    if failed > 0 or (by.failed or 0) > 0 then
      local cmd = {}
      for _, a in ipairs(plan.argv or { "squeeze", "sweep", "SCRIPT" }) do
        if a ~= "--retry-failed" then cmd[#cmd + 1] = a end
      end
      out:write(fmt("[%s] rerun the failed points with: %s --retry-failed\n", sweep,
                    table.concat(cmd, " ")))
    end
  end
  if interrupted then return 130 end
  return unfinished == 0 and 0 or 1
end

return M
