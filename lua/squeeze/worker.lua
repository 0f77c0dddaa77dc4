-- squeeze.worker — runs ONE point of a sweep in this process and records it
-- in the run's own shard; the per-run API object (`run`) lives here.
--
-- Used by `squeeze worker` (a process per point, started by the local
-- runner or a Slurm array task) and by experiment.run_once (in-process).
--
-- Outcome of an attempt:
--   finished   run() returned
--   failed     run() raised (Lua error, out of memory, engine error); message + traceback
--   killed     a signal stopped it (Ctrl-C, SIGTERM, scancel); checkpoint hook called
--   preempted  on Slurm, the preemption signal (default SIGUSR1, sent by
--              `#SBATCH --signal=B:USR1@secs`) arrived: checkpoint hook called,
--              everything saved, then `scontrol requeue` puts the task back
-- A crash (SIGSEGV) or kill -9 leaves the attempt 'running' in the shard;
-- the parent or the heartbeat check turns it into failed / killed.
local core = require "squeeze.core"
local json = require "squeeze.json"
local store = require "squeeze.store"
local experiment = require "squeeze.experiment"

local M = {}
local fmt = string.format

M.EXIT = { finished = 0, failed = 1, killed = 2, preempted = 3 }

-- ---- the run object -----------------------------------------------------------

local Run = {}
Run.__index = Run

local H5_PART = "^[%w_%-]+$"

local function valid_h5_name(name)
  if type(name) ~= "string" or name == "" then return false end
  for part in (name .. "."):gmatch("([^.]*)%.") do
    if not part:match(H5_PART) then return false end
  end
  return true
end

-- The resolved config of this run (the same table run() received).
function Run:config() return self.cfg end

-- run:log(key, value [, step]) or run:log({key = value, ...} [, step]).
-- step: integer >= 0; when omitted, one more than the key's last step (from 0).
-- value: a number (NaN and ±inf are stored as such) or a one-element tensor.
function Run:log(key, value, step)
  if type(key) == "table" then
    step = value
    local keys = {}
    for k in pairs(key) do keys[#keys + 1] = k end
    table.sort(keys)
    for _, k in ipairs(keys) do self:log(k, key[k], step) end
    return
  end
  if type(key) ~= "string" or key == "" then
    error("run:log: the key must be a non-empty string (got " .. type(key) .. ")", 2)
  end
  if type(value) == "userdata" and core.is_tensor and core.is_tensor(value) then value = value:item() end
  if type(value) == "boolean" then value = value and 1 or 0 end
  if type(value) ~= "number" then
    error(fmt("run:log('%s', value): value must be a number (got %s)", key, type(value)), 2)
  end
  local c = self.curves[key]
  if not c then
    c = { steps = {}, values = {}, last = -1 }
    self.curves[key] = c
    self.curve_order[#self.curve_order + 1] = key
  end
  if step == nil then step = c.last + 1 end
  if math.type(step) ~= "integer" then
    if type(step) == "number" and step == math.floor(step) then step = math.tointeger(step) end
    if math.type(step) ~= "integer" or step < 0 then
      error(fmt("run:log('%s', value, step): step must be an integer >= 0 (got %s)", key,
                tostring(step)), 2)
    end
  end
  if step < 0 then error(fmt("run:log('%s'): step %d < 0", key, step), 2) end
  local n = #c.steps
  if n > 0 and c.steps[n] == step then
    c.values[n] = value   -- same step again: the last value wins (as in the database)
  else
    c.steps[n + 1], c.values[n + 1] = step, value
  end
  if step > c.last then c.last = step end
  self.shard:log(key, step, value, core.proc_time())
end

-- Keeps a copy of tensor t, written to this run's HDF5 file under name
-- ("mask.layer1" -> /mask/layer1) when the run ends or is checkpointed.
function Run:save_tensor(name, t)
  if not valid_h5_name(name) then
    error(fmt("run:save_tensor: name '%s' must be [A-Za-z0-9_-] parts joined by dots",
              tostring(name)), 2)
  end
  if name == "curves" or name:match("^curves%.") then
    error("run:save_tensor: 'curves' is reserved for the logged metrics", 2)
  end
  if not (core.is_tensor and core.is_tensor(t)) then
    error("run:save_tensor('" .. name .. "', t): t must be a tensor", 2)
  end
  if not self.tensors[name] then self.tensor_order[#self.tensor_order + 1] = name end
  self.tensors[name] = t:detach():clone()
end

-- Final metrics of the run (merged over the last logged value of every key).
function Run:summary(values)
  if type(values) ~= "table" then error("run:summary: a table {key = number} expected", 2) end
  for k, v in pairs(values) do
    if type(k) ~= "string" then error("run:summary: keys must be strings", 2) end
    if type(v) == "userdata" and core.is_tensor and core.is_tensor(v) then v = v:item() end
    if type(v) == "boolean" then v = v and 1 or 0 end
    if type(v) ~= "number" then
      error(fmt("run:summary: '%s' must be a number (got %s)", k, type(v)), 2)
    end
    self.final[k] = v
  end
end

function Run:tag(key, value)
  if type(key) ~= "string" then error("run:tag: the key must be a string", 2) end
  self.shard:tag(key, value ~= nil and tostring(value) or nil)
end

-- Folder for this run's checkpoints (created; the same across attempts, so
-- a requeued run finds what its previous attempt saved), or a file in it.
function Run:checkpoint_path(file)
  store.mkdir(self.checkpoint_dir)
  if file then return self.checkpoint_dir .. "/" .. file end
  return self.checkpoint_dir
end

-- True when this attempt follows an earlier one of the same run.
function Run:resumed() return self.attempt > 1 end

-- ---- running one point -------------------------------------------------------------

local function is_signal(e) return type(e) == "table" and e.squeeze_signal ~= nil end

local function message_of(e)
  if is_signal(e) then return "interrupted by " .. e.signame end
  if type(e) == "string" then return e end
  local mt = getmetatable(e)
  if mt and mt.__tostring then return tostring(e) end
  return "(error object is a " .. type(e) .. " value)"
end

-- Writes tensors and curves to the run's HDF5 file (temporary name +
-- rename inside h5_save) and indexes them in the shard afterwards, so a
-- file is only ever indexed once it is whole.
local function save_h5(run, status)
  if #run.tensor_order == 0 and #run.curve_order == 0 then return true end
  if not core.h5_save then return nil, "this squeeze has no HDF5 support (core.h5_save missing)" end
  local rel = store.h5_rel(run.sweep, run.id, run.attempt)
  local path = run.results .. "/" .. rel
  local items, index = {}, {}
  for _, name in ipairs(run.tensor_order) do
    local t = run.tensors[name]
    items[#items + 1] = { name = name, tensor = t }
    local shape = t:shape()
    local dims = {}
    for i = 1, #shape do dims[i] = tostring(shape[i]) end
    index[#index + 1] = { name = name, dataset = "/" .. name:gsub("%.", "/"), kind = "tensor",
                          dtype = t:dtype(), shape = table.concat(dims, "x"), bytes = t:bytes() }
  end
  local used = {}
  for _, key in ipairs(run.curve_order) do
    local c = run.curves[key]
    local ds = key:gsub("[^%w_%-]", "_")
    while used[ds] do ds = ds .. "_" end
    used[ds] = true
    local rows = {}
    for i = 1, #c.steps do rows[i] = { c.steps[i] + 0.0, c.values[i] + 0.0 } end
    local t = core.tensor(rows, { dtype = "float64" })
    items[#items + 1] = { name = "curves." .. ds, tensor = t }
    index[#index + 1] = { name = key, dataset = "/curves/" .. ds, kind = "curve", dtype = "float64",
                          shape = #c.steps .. "x2", bytes = 16 * #c.steps }
  end
  local meta = { run_id = run.id, sweep = run.sweep, attempt = run.attempt, status = status,
                 config = run.point.json, curves_columns = "step,value" }
  local ok, err = pcall(core.h5_save, path, items, meta)
  if not ok then return nil, tostring(err) end
  for _, a in ipairs(index) do
    a.file = rel
    run.shard:artifact(a)
  end
  return true
end

local function write_done(hb_path, status, attempt)
  core.proc_write_atomic(hb_path, fmt("done %s %d %.3f\n", status, attempt, core.proc_time()))
end

local function slurm_env()
  local job = os.getenv("SLURM_JOB_ID")
  if not job then return nil end
  return { job_id = job, array_job_id = os.getenv("SLURM_ARRAY_JOB_ID"),
           task_id = tonumber(os.getenv("SLURM_ARRAY_TASK_ID") or "") }
end

-- Runs point p of a frozen submission in this process.
-- o = {results=, sweep=, point=, attempt=(nil: next after the shard's),
--      exp=(loaded experiment) or script=(path to load), git_dir=,
--      preempt_signal=("USR1"), requeue=(bool: Slurm)}
-- Returns status, message.
function M.execute(o)
  local results, sweep, p = o.results, o.sweep, o.point
  local preempt = o.preempt_signal or "USR1"
  local sigs = { "TERM", "INT", "USR1", "HUP" }
  local pnum = core.proc_signum(preempt)
  if not pnum then return "failed", "unknown preemption signal '" .. preempt .. "'" end
  local listed = false
  for _, s in ipairs(sigs) do if core.proc_signum(s) == pnum then listed = true end end
  if not listed then sigs[#sigs + 1] = preempt end
  store.mkdir(store.shard_dir(results, sweep))
  -- the heartbeat starts before the shard exists, so `squeeze merge` never
  -- sees a shard being written without a live heartbeat next to it
  local hb_path = store.hb_path(results, sweep, p.id)
  local hb = core.proc_heartbeat(hb_path, store.heartbeat_interval())
  local shard, err = store.shard_open(store.shard_path(results, sweep, p.id))
  if not shard then
    if hb then hb:stop() end
    write_done(hb_path, "failed", o.attempt or 0)
    return "failed", "cannot open the shard: " .. err
  end
  if not o.attempt then
    -- Slurm may rerun a task whose point already finished (a requeue of the
    -- whole array, a node failure after the end): nothing to do then
    local last = shard.db:rows("SELECT status, attempt FROM attempts WHERE run_id = ? ORDER BY attempt DESC LIMIT 1",
                               { p.id })[1]
    if last and last.status == "finished" then
      shard:close()
      if hb then hb:stop() end
      write_done(hb_path, "finished", last.attempt)
      io.stderr:write(fmt("squeeze worker: run %s already finished; nothing to do\n", p.id))
      return "finished", nil
    end
  end
  local attempt = o.attempt or shard:next_attempt(p.id)
  local signals = core.proc_signals(sigs)
  local slurm = slurm_env()
  local prov = store.provenance(false)
  shard:begin_run(p, sweep, attempt, {
    started = core.proc_time(), provenance = prov,
    slurm_job_id = slurm and slurm.job_id, slurm_array_job_id = slurm and slurm.array_job_id,
    slurm_task_id = slurm and slurm.task_id })

  local cfg = json.decode(p.json)
  local run = setmetatable({
    id = p.id, sweep = sweep, attempt = attempt, index = p.index, results = results, point = p,
    cfg = cfg, shard = shard, curves = {}, curve_order = {}, tensors = {}, tensor_order = {},
    final = {}, pid = core.proc_getpid(),
    checkpoint_dir = store.sweep_dir(results, sweep) .. "/checkpoints/" .. p.id,
  }, Run)

  local status, msg, tb, sig = "finished", nil, nil, nil
  local exp = o.exp
  if not exp then
    local ok, e = pcall(experiment.load, o.script)
    if ok then exp = e else status, msg = "failed", tostring(e) end
  end
  if exp then
    -- one generator per run, seeded from the config (rule 7): cfg.seed when
    -- it is an integer >= 0, else 0; runs.seed records it
    if core.manual_seed then
      core.manual_seed((math.type(cfg.seed) == "integer" and cfg.seed >= 0) and cfg.seed or 0)
    end
    if signals then signals:raise_on_signal(true) end
    local ok, e = xpcall(exp.run, function(e2)
      if is_signal(e2) then return e2 end
      -- the traceback down to run(): squeeze's own frames below it are noise
      local tb = debug.traceback(nil, 2):gsub("\n%s*%[C%]: in function 'xpcall'.*$", "")
      return { msg = message_of(e2), tb = tb }
    end, cfg, run)
    if signals then signals:raise_on_signal(false) end
    local caught = signals and signals:take()
    if not ok then
      if is_signal(e) then
        sig = e
      else
        status, msg, tb = "failed", e.msg, e.tb
      end
    elseif caught then
      -- run() returned after a signal it survived (e.g. in C code): still interrupted
      sig = { squeeze_signal = caught, signame = core.proc_signame(caught) }
    end
    if sig then
      status, msg = "killed", "interrupted by " .. sig.signame
      if exp.checkpoint then
        local cok, cerr = xpcall(exp.checkpoint, debug.traceback, cfg, run)
        if not cok then msg = msg .. "; checkpoint hook failed: " .. tostring(cerr) end
      end
      if o.requeue and sig.squeeze_signal == core.proc_signum(preempt) then
        status = "preempted"
        msg = msg .. " (preemption signal): checkpointed, requeued"
      end
    end
  end

  -- Matmul precision is part of the result: record whether TF32 was on
  -- (issue 4: "TF32 as an explicit option recorded with the run").
  if core.cuda_tf32 then
    pcall(function() run:tag("matmul_precision", core.cuda_tf32() and "tf32" or "fp32") end)
  end

  -- final metrics: the last value of every curve, then what run:summary set
  local final = {}
  for key, c in pairs(run.curves) do
    if #c.values > 0 then final[key] = c.values[#c.values] end
  end
  for k, v in pairs(run.final) do final[k] = v end
  local ok, e = pcall(function()
    shard:summary(final)
    local hok, herr = save_h5(run, status)
    if not hok then
      if status == "finished" then status = "failed" end
      msg = (msg and msg .. "; " or "") .. "saving tensors failed: " .. herr
    end
    shard:finish(status, { error = msg, traceback = tb, signal = sig and sig.squeeze_signal,
                           exit_code = M.EXIT[status] })
  end)
  if not ok then
    status, msg = "failed", "recording the run failed: " .. tostring(e)
    io.stderr:write("squeeze worker: ", msg, "\n")
  end
  shard:close()
  if hb then hb:stop() end
  write_done(hb_path, status, attempt)
  if signals then signals:restore() end
  if status == "preempted" and slurm then
    -- an array task's own id: SLURM_JOB_ID of the last task equals the
    -- array's id, and requeueing that would requeue every task of the array
    local id = slurm.array_job_id and slurm.task_id and (slurm.array_job_id .. "_" .. slurm.task_id)
               or slurm.job_id
    local rc = os.execute("scontrol requeue " .. store.shell_quote(id) .. " >/dev/null 2>&1")
    if not rc then io.stderr:write("squeeze worker: scontrol requeue ", id, " failed\n") end
  end
  if msg and status ~= "finished" then
    io.stderr:write(fmt("squeeze worker: run %s attempt %d %s: %s\n", p.id, attempt, status, msg))
    if tb then io.stderr:write(tb, "\n") end
  end
  return status, msg
end

-- ---- frozen submissions -------------------------------------------------------------

-- Reads sub-<K>/points.json.
function M.read_frozen(subdir)
  local text = store.read_file(subdir .. "/points.json")
  if not text then error("no frozen submission at " .. subdir .. " (points.json missing)", 0) end
  local ok, f = pcall(json.decode, text)
  if not ok then error(subdir .. "/points.json: " .. f, 0) end
  return f
end

-- Finds a point: by run id, or by index into a task list file (Slurm).
function M.find_point(frozen, run_id)
  for _, p in ipairs(frozen.points) do
    if p.id == run_id then return p end
  end
  return nil
end

-- A frozen point record -> the point table execute() takes.
function M.point_of(rec)
  local cfg = json.decode(rec.config)
  return { id = rec.id, index = rec.index, config_hash = rec.config_hash, json = rec.config,
           config = cfg, seed = rec.seed }
end

-- ---- run_once ---------------------------------------------------------------------------

function M.run_once(exp, overrides, opts)
  opts = opts or {}
  local runner = require "squeeze.runner"
  if not experiment.is_experiment(exp) then error("run_once: an experiment expected", 2) end
  local one = experiment.new { name = exp.name, config = exp.config, run = exp.run,
                               checkpoint = exp.checkpoint, filter = exp.filter }
  -- mistakes in the overrides are the caller's: for `squeeze run` (opts.cli)
  -- an error object {usage = message} that it prints without a traceback,
  -- for Lua callers the plain message
  local function usage_error(msg)
    if not opts.cli then error(tostring(msg), 0) end
    error(setmetatable({ usage = tostring(msg) }, { __tostring = function(e) return e.usage end }), 0)
  end
  local ok, ov = pcall(experiment.parse_overrides, one.config, experiment.override_strings(overrides or {}))
  if not ok then usage_error(ov) end
  if #ov.axes > 0 then
    usage_error(fmt("run_once runs one point, but '%s' gives several values; use `squeeze sweep`",
                    ov.axes[1].key .. "=" .. ov.axes[1].desc))
  end
  -- of the errors building the point, only "no point left" is the command
  -- line's; anything else (a filter that raises, ...) is the script's and
  -- keeps its traceback
  local okp, points = pcall(experiment.points, one, ov)
  if not okp then
    local msg = tostring(points)
    if msg:find("^the filter dropped all") or msg:find("^the sweep has no points") then usage_error(msg) end
    error(points, 0)
  end
  local plan = runner.freeze({ exp = one, points = points, results = opts.results or "results",
                               script = opts.script, argv = opts.argv, mode = "once" })
  local p = points[1]
  local db = plan.db
  store.set_attempt(db, p.id, (plan.runs[p.id] and plan.runs[p.id].attempt or 0) + 1,
                    { status = "running", started = core.proc_time(), host = store.hostname(),
                      pid = core.proc_getpid() })
  local attempt = db:rows("SELECT attempt FROM runs WHERE id = ?", { p.id })[1].attempt
  local status = M.execute { results = plan.results, sweep = one.name, point = p, attempt = attempt,
                             exp = one }
  store.merge_shard(db, plan.results, "sweeps/" .. one.name .. "/shards/" .. p.id .. ".db", true)
  db:refresh_flat()
  db:close()
  return status, p.id
end

return M
