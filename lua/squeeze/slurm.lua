-- squeeze.slurm — sweeps as Slurm job arrays.
--
-- Every array task runs `squeeze worker --dir SUB --tasks FILE --index
-- $SLURM_ARRAY_TASK_ID`, which writes only its own shard (SQLite + HDF5) in
-- the sweep folder; the main database is written by `squeeze submit` and
-- `squeeze merge` alone, never by the tasks (SQLite over NFS corrupts).
--
-- Arrays larger than the cluster's MaxArraySize (from `scontrol show
-- config`; task indexes must stay below it) are split into several arrays.
-- To keep the % throttle global, each array depends on the previous one
-- (--dependency=afterany), so at most N tasks of the sweep run at a time.
--
-- Preemption: with --time the batch script asks for `--signal=B:USR1@90`
-- (or what --signal says): the worker gets SIGUSR1 before the time limit,
-- calls the experiment's checkpoint hook, records the attempt 'preempted'
-- and runs `scontrol requeue $SLURM_JOB_ID`; the next attempt finds its
-- checkpoint in run:checkpoint_path().  SIGTERM (scancel, node shutdown)
-- records 'killed' after the checkpoint hook, without requeueing.
local core = require "squeeze.core"
local store = require "squeeze.store"

local M = {}
local fmt = string.format

function M.available()
  return store.capture("command -v sbatch") ~= nil and store.capture("command -v scontrol") ~= nil
end

-- `scontrol show config` as a table; nil, message when Slurm is unreachable.
function M.config()
  if not M.available() then
    return nil, "Slurm commands not found (sbatch, scontrol); is this a Slurm login node?"
  end
  local text = store.capture("scontrol show config")
  if not text or text == "" then
    local conf = os.getenv("SLURM_CONF")
    return nil, "`scontrol show config` failed: is slurmctld reachable? ("
                .. (conf and ("SLURM_CONF=" .. conf) or "SLURM_CONF is not set: the default slurm.conf is used") .. ")"
  end
  local cfg = {}
  for line in text:gmatch("[^\n]+") do
    local k, v = line:match("^(%S+)%s*=%s*(.-)%s*$")
    if k then cfg[k] = v end
  end
  cfg.max_array_size = tonumber(cfg.MaxArraySize or "") or 1001
  return cfg
end

-- Splits ids into chunks whose task indexes 0..n-1 stay below max_array_size.
function M.chunks(ids, max_array_size)
  local size = math.max(1, max_array_size)
  local out = {}
  for i = 1, #ids, size do
    local c = {}
    for j = i, math.min(#ids, i + size - 1) do c[#c + 1] = ids[j] end
    out[#out + 1] = c
  end
  return out
end

local function check_signal(spec)
  local sig, secs = spec:match("^B?:?(%w+)@(%d+)$")
  if not sig or not core.proc_signum(sig) then
    error(fmt("--signal '%s': expected SIG@SECONDS, e.g. USR1@90", spec), 0)
  end
  sig = sig:gsub("^SIG", "")
  return sig, tonumber(secs)
end

-- Checks submit options before anything is written.  Returns normalized opts.
function M.check_options(o)
  local n = {}
  n.throttle = o.throttle
  if n.throttle ~= nil and n.throttle < 1 then error("--throttle must be >= 1", 0) end
  if o.signal then n.signal, n.signal_secs = check_signal(o.signal)
  elseif o.time then n.signal, n.signal_secs = "USR1", 90 end
  n.partition, n.time, n.gpus, n.cpus, n.mem, n.account, n.qos = o.partition, o.time, o.gpus,
    o.cpus, o.mem, o.account, o.qos
  if n.time and not n.time:match("^[%d:%-]+$") then
    error(fmt("--time '%s': expected minutes, MM:SS, HH:MM:SS or D-HH:MM:SS", n.time), 0)
  end
  n.extra = o.sbatch or {}
  return n
end

-- Text of one array's batch script.
function M.batch_script(a)
  local o = a.opts
  local L = { "#!/bin/bash",
    "# written by squeeze submit: sweep " .. a.sweep .. ", submission " .. a.sub .. ", array " .. a.chunk,
    "#SBATCH --job-name=sq-" .. a.sweep,
    fmt("#SBATCH --array=0-%d%s", a.n - 1, o.throttle and ("%" .. o.throttle) or ""),
    "#SBATCH --output=" .. a.logdir .. "/slurm-%A_%a.out",
    "#SBATCH --open-mode=append",
    "#SBATCH --requeue",
  }
  if o.partition then L[#L + 1] = "#SBATCH --partition=" .. o.partition end
  if o.time then L[#L + 1] = "#SBATCH --time=" .. o.time end
  if o.gpus then L[#L + 1] = "#SBATCH --gpus=" .. o.gpus end
  if o.cpus then L[#L + 1] = "#SBATCH --cpus-per-task=" .. o.cpus end
  if o.mem then L[#L + 1] = "#SBATCH --mem=" .. o.mem end
  if o.account then L[#L + 1] = "#SBATCH --account=" .. o.account end
  if o.qos then L[#L + 1] = "#SBATCH --qos=" .. o.qos end
  if o.signal then L[#L + 1] = fmt("#SBATCH --signal=B:%s@%d", o.signal, o.signal_secs) end
  for _, x in ipairs(o.extra) do L[#L + 1] = "#SBATCH " .. x end
  L[#L + 1] = "export SQUEEZE_PREEMPT_SIGNAL=" .. (o.signal or "USR1")
  if o.cpus then L[#L + 1] = "export OPENBLAS_NUM_THREADS=" .. o.cpus end
  L[#L + 1] = "cd " .. store.shell_quote(a.cwd) .. " || exit 1"
  -- exec: the worker is the batch step's process, so B: signals reach it
  L[#L + 1] = fmt("exec %s worker --dir %s --tasks %s --index \"$SLURM_ARRAY_TASK_ID\"",
                  store.shell_quote(a.exe), store.shell_quote(a.subdir), store.shell_quote(a.tasks))
  return table.concat(L, "\n") .. "\n"
end

-- Writes the task lists and batch scripts of a frozen plan and submits
-- them.  Records slurm_arrays rows and each run's array job / task ids.
-- Returns the list of array job ids.  On an sbatch failure the runs of
-- that array and later ones go back to 'pending' and it raises.
function M.submit(plan, opts, max_array_size)
  local db = plan.db
  local ids = {}
  for i, p in ipairs(plan.scheduled) do ids[i] = p.id end
  local chunks = M.chunks(ids, max_array_size)
  local exe = core.proc_self_exe()
  local logdir = store.sweep_dir(plan.results, plan.sweep) .. "/logs"
  store.mkdir(logdir)
  local cwd = store.abspath(".")
  local jobs, prev = {}, nil
  for k, c in ipairs(chunks) do
    local chunk = k - 1
    local tasks = fmt("%s/tasks-%d.txt", plan.subdir, chunk)
    local script = fmt("%s/array-%d.sbatch", plan.subdir, chunk)
    local ok, e = core.proc_write_atomic(tasks, table.concat(c, "\n") .. "\n")
    if not ok then error(e, 0) end
    ok, e = core.proc_write_atomic(script, M.batch_script {
      sweep = plan.sweep, sub = plan.sub, chunk = chunk, n = #c, opts = opts, logdir = logdir,
      cwd = cwd, exe = exe, subdir = plan.subdir, tasks = tasks })
    if not ok then error(e, 0) end
    local cmd = "sbatch --parsable"
    if prev then cmd = cmd .. " --dependency=afterany:" .. prev end
    cmd = cmd .. " " .. store.shell_quote(script)
    local p = io.popen(cmd .. " 2>&1", "r")
    local out = p and p:read("a") or ""
    local good = p and p:close()
    local job = good and out:match("^%s*(%d+)")
    if not job then
      -- this array and the later ones were not submitted: back to pending
      store.transaction(db, function()
        for j = k, #chunks do
          for _, id in ipairs(chunks[j]) do
            db:run("UPDATE runs SET status = 'pending' WHERE id = ? AND status = 'queued'", { id })
          end
        end
      end)
      error(fmt("sbatch failed for array %d (%d task(s)): %s", chunk, #c, store.trim(out)), 0)
    end
    store.transaction(db, function()
      db:run([[INSERT OR REPLACE INTO slurm_arrays(job_id, submission, sweep, chunk, n_tasks, tasks_file,
                 script_file, throttle, submitted) VALUES(?,?,?,?,?,?,?,?,?)]],
             { job, plan.sub, plan.sweep, chunk, #c, tasks, script, opts.throttle, store.now() })
      local st = db:prepare("UPDATE runs SET slurm_array_job_id = ?, slurm_task_id = ?, slurm_job_id = NULL"
                            .. " WHERE id = ?")
      for i, id in ipairs(c) do st:run({ job, i - 1, id }) end
      st:close()
      db:run("UPDATE submissions SET slurm_jobs = coalesce(slurm_jobs || ',', '') || ? WHERE id = ?",
             { job, plan.sub })
    end)
    jobs[#jobs + 1] = job
    prev = job
  end
  return jobs, chunks
end

-- Active (not yet ended) tasks of array jobs: { ["<array>_<task>"] = {state=, reason=} }.
-- nil when squeue cannot be asked.
function M.active_tasks(job_ids)
  if #job_ids == 0 then return {} end
  local out = store.capture("squeue -h -r -j " .. table.concat(job_ids, ",") .. " -o '%i|%T|%r'")
  if not out then
    -- squeue fails when none of the ids is known any more: nothing active
    out = store.capture("squeue -h -r -o '%i|%T|%r'")
    if not out then return nil end
  end
  local active = {}
  for line in out:gmatch("[^\n]+") do
    local id, state, reason = line:match("^%s*(%S+)|(%S+)|(.*)$")
    if id then
      local arr, lo, hi = id:match("^(%d+)_%[(%d+)%-(%d+)")
      if arr then
        -- a pending array range not yet split into tasks
        for t = tonumber(lo), tonumber(hi) do active[arr .. "_" .. t] = { state = state, reason = reason } end
      else
        local a, t = id:match("^(%d+)_(%d+)$")
        if a then active[a .. "_" .. t] = { state = state, reason = reason } end
      end
    end
  end
  return active
end

-- Array job ids recorded for a sweep.
function M.jobs_of(db, sweep)
  local ids = {}
  for _, r in ipairs(db:rows("SELECT job_id FROM slurm_arrays WHERE sweep = ? ORDER BY submitted", { sweep })) do
    ids[#ids + 1] = r.job_id
  end
  return ids
end

-- Brings queued / running Slurm runs of a sweep up to date in main:
-- merges shards of tasks no longer active, and marks runs whose task ended
-- without recording an outcome as killed.  Returns merged, lost.
function M.reconcile(db, results, sweep)
  local jobs = M.jobs_of(db, sweep)
  if #jobs == 0 or not M.available() then return 0, 0 end
  local active = M.active_tasks(jobs)
  if not active then return 0, 0 end
  local merged, lost = 0, 0
  local rows = db:rows([[SELECT id, status, attempt, slurm_array_job_id AS arr, slurm_task_id AS task
                         FROM runs WHERE sweep = ? AND status IN ('queued', 'running', 'preempted')
                         AND slurm_array_job_id IS NOT NULL]], { sweep })
  for _, r in ipairs(rows) do
    local key = r.arr .. "_" .. tostring(r.task)
    if not active[key] then
      local shard = "sweeps/" .. sweep .. "/shards/" .. r.id .. ".db"
      if store.merge_shard(db, results, shard) then merged = merged + 1 end
      local now = db:rows("SELECT status, attempt FROM runs WHERE id = ?", { r.id })[1]
      -- (a 'preempted' run whose requeue did not happen stays so: the next submit reruns it)
      if now.status == "queued" or now.status == "running" then
        local info = store.capture("scontrol show job -o " .. key) or ""
        local state = info:match("JobState=(%S+)") or "gone"
        local exit = info:match(" ExitCode=(%S+)") or "?"
        local attempt = now.status == "running" and now.attempt or now.attempt + 1
        store.set_attempt(db, r.id, attempt, {
          status = "killed", ended = store.now(), slurm_array_job_id = r.arr, slurm_task_id = r.task,
          error = fmt("Slurm task %s ended (%s, exit %s) without recording an outcome; see %s",
                      key, state, exit, "sweeps/" .. sweep .. "/logs/slurm-" .. key .. ".out") })
        lost = lost + 1
      end
    end
  end
  return merged, lost
end

return M
