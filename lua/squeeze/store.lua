-- squeeze.store — the results folder: main database, per-run shards,
-- provenance, merge and reconciliation of runs whose process died.
--
-- Layout of a results folder (default `results/`):
--   squeeze.db                         main database: ONE writer (the process
--                                      that submits / runs a sweep / merges)
--   sweeps/<sweep>/sub-<K>/            frozen at submission K: script.lua (a
--                                      copy of the script), points.json (every
--                                      scheduled point's resolved config),
--                                      Slurm batch scripts and task lists
--   sweeps/<sweep>/shards/<run>.db     the run's own SQLite shard (its only writer
--                                      is the worker running it)
--   sweeps/<sweep>/shards/<run>.a<N>.h5  tensors and curves of attempt N
--   sweeps/<sweep>/shards/<run>.hb     heartbeat: "pid host time" while running,
--                                      "done <status> <attempt> <time>" after
--   sweeps/<sweep>/logs/<run>.a<N>.log stdout + stderr of a local worker
--   sweeps/<sweep>/checkpoints/<run>/  run:checkpoint_path(), kept across attempts
local core = require "squeeze.core"
local json = require "squeeze.json"

local M = {}
local fmt = string.format

M.DB_NAME = "squeeze.db"
M.TERMINAL = { finished = true, failed = true, killed = true, preempted = true }

-- ---- small helpers -------------------------------------------------------

function M.shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Output of a shell command (stderr discarded), or nil when it failed.
function M.capture(cmd)
  local p = io.popen(cmd .. " 2>/dev/null", "r")
  if not p then return nil end
  local out = p:read("a")
  local ok = p:close()
  if not ok then return nil end
  return out
end

local function trim(s) return s and (s:gsub("^%s+", ""):gsub("%s+$", "")) or nil end
M.trim = trim

function M.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

function M.abspath(p)
  if p:sub(1, 1) == "/" then return p end
  local cwd = core.proc_getcwd() or os.getenv("PWD") or "."
  p = p:gsub("^%./", ""):gsub("/%.?$", "")
  if p == "." or p == "" then return cwd end
  return cwd .. "/" .. p
end

function M.dirname(p)
  return p:match("^(.*)/[^/]*$") or "."
end

function M.mkdir(path)
  local ok, err = core.proc_mkdir_p(path)
  if not ok then error(err, 0) end
  return path
end

function M.now() return core.proc_time() end

function M.sweep_dir(results, sweep) return results .. "/sweeps/" .. sweep end
function M.shard_dir(results, sweep) return M.sweep_dir(results, sweep) .. "/shards" end
function M.shard_path(results, sweep, run_id) return M.shard_dir(results, sweep) .. "/" .. run_id .. ".db" end
function M.hb_path(results, sweep, run_id) return M.shard_dir(results, sweep) .. "/" .. run_id .. ".hb" end
function M.log_path(results, sweep, run_id, attempt)
  return M.sweep_dir(results, sweep) .. "/logs/" .. run_id .. ".a" .. attempt .. ".log"
end
function M.h5_rel(sweep, run_id, attempt)
  return "sweeps/" .. sweep .. "/shards/" .. run_id .. ".a" .. attempt .. ".h5"
end

-- ---- opening ---------------------------------------------------------------

function M.db_path(results) return results .. "/" .. M.DB_NAME end

-- The main database for writing (creates results/ and the schema).
function M.open_main(results)
  local ok, err = core.proc_mkdir_p(results)
  if not ok then return nil, err end
  return core.store_open(M.db_path(results), "main", 60000)
end

-- The main database read-only; a clear message when there is none yet.
function M.open_readonly(results)
  local path = M.db_path(results)
  if not core.proc_stat(path) then
    return nil, fmt("no results database at %s (run `squeeze sweep SCRIPT` first, "
                    .. "or pass --results DIR)", path)
  end
  return core.store_open(path, "readonly", 60000)
end

-- Runs fn(db) inside BEGIN IMMEDIATE ... COMMIT (ROLLBACK and re-raise on error).
function M.transaction(db, fn, ...)
  db:exec("BEGIN IMMEDIATE")
  local res = table.pack(pcall(fn, db, ...))
  if not res[1] then
    pcall(db.exec, db, "ROLLBACK")
    error(res[2], 0)
  end
  db:exec("COMMIT")
  return table.unpack(res, 2, res.n)
end

-- ---- config flattening (typed params) ------------------------------------------

-- Leaves of a config as dotted keys.  Arrays are leaves (stored as JSON).
function M.flatten(cfg, prefix, out)
  out = out or {}
  for k, v in pairs(cfg) do
    local key = prefix and (prefix .. "." .. k) or tostring(k)
    if type(v) == "table" and not json.array_len(v) and next(v) ~= nil then
      M.flatten(v, key, out)
    else
      out[key] = v
    end
  end
  return out
end

local function param_row(run_id, key, v)
  local t = type(v)
  if t == "boolean" then return { run_id, key, "boolean", v and 1 or 0 } end
  if t == "number" then
    return { run_id, key, math.type(v) == "integer" and "integer" or "real", v }
  end
  if t == "string" then return { run_id, key, "text", v } end
  return { run_id, key, "json", json.encode(v) }
end

function M.insert_params(db, run_id, cfg)
  local st = db:prepare("INSERT OR IGNORE INTO params(run_id, key, type, value) VALUES(?,?,?,?)")
  for k, v in pairs(M.flatten(cfg)) do st:run(param_row(run_id, k, v)) end
  st:close()
end

-- ---- provenance -------------------------------------------------------------

local cached_host
function M.hostname()
  if not cached_host then cached_host = core.proc_hostname() or "unknown" end
  return cached_host
end

local function cpu_model()
  local f = io.open("/proc/cpuinfo", "r")
  if not f then return "unknown", 0 end
  local model, n = nil, 0
  for line in f:lines() do
    if line:match("^processor%s*:") then n = n + 1 end
    if not model then model = line:match("^model name%s*:%s*(.-)%s*$") end
  end
  f:close()
  return model or "unknown", n
end

local function gpu_info()
  local q = M.capture("nvidia-smi --query-gpu=name,driver_version --format=csv,noheader")
  if not q or trim(q) == "" then return "none", "none", "none" end
  local names, driver = {}, nil
  for line in q:gmatch("[^\n]+") do
    local name, drv = line:match("^%s*(.-)%s*,%s*(.-)%s*$")
    if name then names[#names + 1] = name; driver = driver or drv end
  end
  local cuda = (M.capture("nvidia-smi") or ""):match("CUDA Version:%s*([%d%.]+)") or "unknown"
  return table.concat(names, "; "), driver or "unknown", cuda
end

-- Facts about this machine and the code, for the provenance table.
-- git_dir: the folder whose repository is recorded (the script's folder);
-- false skips git (a worker records its machine; git is frozen at submit).
-- The uncommitted diff is `git diff HEAD` (tracked files, staged or not);
-- untracked files are listed in `extra`, not included.
function M.provenance(git_dir, argv)
  local rec = {}
  if git_dir ~= false then
    local q = "git -C " .. M.shell_quote(git_dir or ".") .. " "
    local commit = trim(M.capture(q .. "rev-parse HEAD"))
    rec.git_commit = commit ~= "" and commit or nil
    if rec.git_commit then
      rec.git_branch = trim(M.capture(q .. "rev-parse --abbrev-ref HEAD"))
      rec.git_diff = M.capture(q .. "diff HEAD --no-color --no-ext-diff") or ""
      local untracked = M.capture(q .. "ls-files --others --exclude-standard") or ""
      rec.git_dirty = (rec.git_diff ~= "" or untracked ~= "") and 1 or 0
      rec.extra_untracked = untracked ~= "" and untracked or nil
    end
  end
  rec.squeeze_version = core.version
  rec.host = M.hostname()
  rec.os = trim(M.capture("uname -srm")) or "unknown"
  rec.cpu, rec.ncpu = cpu_model()
  rec.gpu, rec.driver, rec.cuda = gpu_info()
  local libs = core.store_library_versions()
  rec.lua_version, rec.sqlite_version = libs.lua, libs.sqlite
  rec.hdf5_version, rec.openblas_version = libs.hdf5, libs.openblas
  rec.command = argv and table.concat(argv, " ") or nil
  rec.cwd = core.proc_getcwd()
  rec.user = os.getenv("USER") or os.getenv("LOGNAME")
  return rec
end

local PROV_COLS = { "git_commit", "git_branch", "git_dirty", "git_diff", "squeeze_version", "host",
                    "os", "cpu", "ncpu", "gpu", "driver", "cuda", "lua_version", "sqlite_version",
                    "hdf5_version", "openblas_version", "command", "cwd", "user" }

-- Stores rec (deduplicated by content); returns its id.
function M.put_provenance(db, rec)
  local content = {}
  for _, c in ipairs(PROV_COLS) do content[c] = rec[c] end
  local extra = rec.extra_untracked and json.encode({ untracked = rec.extra_untracked }) or nil
  content.extra = extra
  local id = json.fnv1a64(json.encode(content))
  -- explicit positions: a nil (no git, no GPU) must stay a NULL in its own
  -- column, not shift the values after it (params[#params + 1] = nil is a no-op)
  local params = { id, M.now() }
  for i, c in ipairs(PROV_COLS) do params[2 + i] = rec[c] end
  params[3 + #PROV_COLS] = extra
  db:run("INSERT OR IGNORE INTO provenance(id, created, " .. table.concat(PROV_COLS, ", ")
         .. ", extra) VALUES(?, ?" .. string.rep(", ?", #PROV_COLS) .. ", ?)", params)
  return id
end

-- ---- submissions (main database) ------------------------------------------------

-- Records a submission in ONE transaction: the sweep row, the submission
-- row, every point as a run (INSERT OR IGNORE: a point keeps its first
-- index), its typed params, and the scheduled points' status ('pending'
-- locally, 'queued' on Slurm).  Returns the submission id.
-- info = {sweep=, script=, script_text=, base_config=, points=, scheduled={ids},
--         mode=, provenance=rec, argv=, status='pending'|'queued', write_files=fn(sub_id)}
function M.record_submission(db, info)
  return M.transaction(db, function()
    local now = M.now()
    local prov = M.put_provenance(db, info.provenance)
    db:run([[INSERT INTO sweeps(name, created, updated, script, folder, base_config, n_points)
             VALUES(?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET updated=excluded.updated,
             script=excluded.script, base_config=excluded.base_config,
             n_points=max(sweeps.n_points, excluded.n_points)]],
           { info.sweep, now, now, info.script, "sweeps/" .. info.sweep,
             json.encode(info.base_config), #info.points })
    local _, sub = db:run([[INSERT INTO submissions(sweep, time, mode, provenance, argv, script_text,
                              n_points, n_scheduled) VALUES(?, ?, ?, ?, ?, ?, ?, ?)]],
                          { info.sweep, now, info.mode, prov, json.encode(info.argv or {}),
                            info.script_text, #info.points, #info.scheduled })
    local ins = db:prepare([[INSERT OR IGNORE INTO runs(id, sweep, idx, config_hash, config, seed,
                              submission, status, attempt, created) VALUES(?,?,?,?,?,?,?, 'pending', 0, ?)]])
    for _, p in ipairs(info.points) do
      ins:run({ p.id, info.sweep, p.index, p.config_hash, p.json, p.seed, sub, now })
    end
    ins:close()
    for _, p in ipairs(info.points) do M.insert_params(db, p.id, p.config) end
    local upd = db:prepare("UPDATE runs SET submission = ?, status = ? WHERE id = ?")
    for _, id in ipairs(info.scheduled) do upd:run({ sub, info.status or "pending", id }) end
    upd:close()
    if info.write_files then info.write_files(sub) end
    return sub
  end)
end

-- Run rows of a sweep, keyed by id.
function M.runs_of(db, sweep)
  local rows = db:rows("SELECT * FROM runs WHERE sweep = ? ORDER BY idx", { sweep })
  local by_id = {}
  for _, r in ipairs(rows) do by_id[r.id] = r end
  return by_id, rows
end

-- Upserts an attempt row in main (the parent's view of a worker it started
-- or saw die) and refreshes the run's status cache.  A terminal attempt is
-- never put back to running.
function M.set_attempt(db, run_id, attempt, f)
  M.transaction(db, function()
    db:run([[INSERT INTO attempts(run_id, attempt, status, started, ended, host, pid, exit_code, signal,
               error, traceback, slurm_job_id, slurm_array_job_id, slurm_task_id)
             VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?)
             ON CONFLICT(run_id, attempt) DO UPDATE SET status=excluded.status,
               started=coalesce(attempts.started, excluded.started),
               ended=coalesce(excluded.ended, attempts.ended),
               host=coalesce(attempts.host, excluded.host), pid=coalesce(attempts.pid, excluded.pid),
               exit_code=coalesce(excluded.exit_code, attempts.exit_code),
               signal=coalesce(excluded.signal, attempts.signal),
               error=coalesce(excluded.error, attempts.error),
               traceback=coalesce(excluded.traceback, attempts.traceback),
               slurm_job_id=coalesce(excluded.slurm_job_id, attempts.slurm_job_id),
               slurm_array_job_id=coalesce(excluded.slurm_array_job_id, attempts.slurm_array_job_id),
               slurm_task_id=coalesce(excluded.slurm_task_id, attempts.slurm_task_id)
             WHERE NOT (attempts.status IN ('finished','failed','killed','preempted')
                        AND excluded.status NOT IN ('finished','failed','killed','preempted'))]],
           { run_id, attempt, f.status, f.started, f.ended, f.host, f.pid, f.exit_code, f.signal,
             f.error, f.traceback, f.slurm_job_id, f.slurm_array_job_id, f.slurm_task_id })
    db:run([[UPDATE runs SET status=a.status, attempt=a.attempt, started=a.started, ended=a.ended,
               host=a.host, pid=a.pid, error=a.error, slurm_job_id=a.slurm_job_id,
               slurm_array_job_id=a.slurm_array_job_id, slurm_task_id=a.slurm_task_id
             FROM attempts a WHERE a.run_id = runs.id AND runs.id = ? AND a.attempt = ?
               AND a.attempt >= runs.attempt]], { run_id, attempt })
  end)
end

-- ---- heartbeats -------------------------------------------------------------------

function M.heartbeat_interval()
  return tonumber(os.getenv("SQUEEZE_HEARTBEAT_S") or "") or 10.0
end

-- State of a run's heartbeat file:
--   nil                                   no file (never started here)
--   {done=true, status=, attempt=}        the worker ended normally
--   {pid=, host=, time=, age=, alive=}    running, or died without a word
function M.heartbeat(results, sweep, run_id)
  local path = M.hb_path(results, sweep, run_id)
  local s = M.read_file(path)
  if not s then return nil end
  local status, attempt, t = s:match("^done (%S+) (%d+) (%S+)")
  if status then return { done = true, status = status, attempt = tonumber(attempt), time = tonumber(t) } end
  local pid, host, time = s:match("^(%d+) (%S+) (%S+)")
  if not pid then return nil end
  pid, time = tonumber(pid), tonumber(time)
  local st = core.proc_stat(path)
  local age = M.now() - (st and st.mtime or time)
  local stale = age > 6 * M.heartbeat_interval()
  local alive
  if host == M.hostname() then alive = core.proc_alive(pid) and not stale
  else alive = not stale end
  return { pid = pid, host = host, time = time, age = age, alive = alive }
end

-- ---- merge ------------------------------------------------------------------------

-- Folds one shard into main unless it is unchanged since the last merge.
-- Returns true when something was merged.
function M.merge_shard(db, results, rel_path, force)
  local path = results .. "/" .. rel_path
  local st = core.proc_stat(path)
  if not st then return false end
  if not force then
    local prev = db:rows("SELECT size, mtime FROM merged_shards WHERE path = ?", { rel_path })[1]
    if prev and prev.size == st.size and prev.mtime == st.mtime then return false end
  end
  local info, err = db:merge(path)
  if not info then error("merging " .. path .. ": " .. err, 0) end
  db:run("INSERT OR REPLACE INTO merged_shards(path, size, mtime, merged) VALUES(?,?,?,?)",
         { rel_path, st.size, st.mtime, M.now() })
  return true
end

-- Merges the shards of a sweep that no worker is writing: heartbeat says
-- done, or the worker is gone.  Never opens a shard whose worker is alive
-- (a shard may sit on a cluster filesystem: one writer, no concurrent reader).
-- Then marks attempts whose worker died without a word as killed.
-- opts.only = {run_id=true} restricts to those runs.  Returns merged, lost.
function M.merge_sweep(db, results, sweep, opts)
  opts = opts or {}
  local dir = M.shard_dir(results, sweep)
  local names = core.proc_listdir(dir)
  local merged, lost = 0, 0
  if not names then return 0, 0 end
  for _, name in ipairs(names) do
    local run_id = name:match("^(%x+)%.db$")
    if run_id and (not opts.only or opts.only[run_id]) then
      local hb = M.heartbeat(results, sweep, run_id)
      if not (hb and not hb.done and hb.alive) then
        if M.merge_shard(db, results, "sweeps/" .. sweep .. "/shards/" .. name, opts.force) then
          merged = merged + 1
        end
        if hb and not hb.done then
          -- the worker died without writing its end: its running attempt is lost
          local row = db:rows("SELECT attempt, status FROM runs WHERE id = ?", { run_id })[1]
          if row and row.status == "running" then
            M.set_attempt(db, run_id, row.attempt, {
              status = "killed", ended = hb.time,
              error = fmt("worker lost: pid %d on %s is gone (last heartbeat %.0f s ago)",
                          hb.pid, hb.host, hb.age) })
            lost = lost + 1
          end
        end
      end
    end
  end
  return merged, lost
end

-- Runs still marked running in main whose worker is gone and left no shard
-- (it died before opening it): killed.
function M.reconcile_running(db, results, sweep)
  local n = 0
  for _, r in ipairs(db:rows("SELECT id, attempt, host, pid FROM runs WHERE sweep = ? AND status = 'running'",
                             { sweep })) do
    local hb = M.heartbeat(results, sweep, r.id)
    local dead
    if hb then dead = hb.done or not hb.alive
    elseif r.host == M.hostname() then dead = not (r.pid and core.proc_alive(r.pid))
    else dead = false end
    if dead then
      local shard = "sweeps/" .. sweep .. "/shards/" .. r.id .. ".db"
      M.merge_shard(db, results, shard)
      local now = db:rows("SELECT status FROM runs WHERE id = ?", { r.id })[1]
      if now and now.status == "running" then
        M.set_attempt(db, r.id, r.attempt, { status = "killed", ended = M.now(),
          error = "worker process gone (pid " .. tostring(r.pid) .. " on " .. tostring(r.host) .. ")" })
        n = n + 1
      end
    end
  end
  return n
end

-- ---- shard writer (used by the worker) ---------------------------------------------

local Shard = {}
Shard.__index = Shard

-- Opens (creating) a run's shard.  Metric rows are buffered in a
-- transaction committed at most every flush_s seconds, so logging in a
-- tight loop costs a prepared insert, not an fsync.
function M.shard_open(path, flush_s)
  local db, err = core.store_open(path, "shard", 60000)
  if not db then return nil, err end
  local self = setmetatable({ db = db, path = path, flush_s = flush_s or 0.5,
                              last_commit = core.proc_monotonic(), in_tx = false }, Shard)
  self.ins_metric = db:prepare("INSERT OR REPLACE INTO metrics VALUES(?,?,?,?,?,?,?)")
  return self
end

function Shard:next_attempt(run_id)
  local r = self.db:rows("SELECT max(attempt) AS a FROM attempts WHERE run_id = ?", { run_id })[1]
  return (r and r.a or 0) + 1
end

local function begin(self)
  if not self.in_tx then
    self.db:exec("BEGIN IMMEDIATE")
    self.in_tx = true
  end
end

function Shard:flush()
  if self.in_tx then
    self.db:exec("COMMIT")
    self.in_tx = false
  end
  self.last_commit = core.proc_monotonic()
end

local function maybe_flush(self)
  if core.proc_monotonic() - self.last_commit >= self.flush_s then self:flush() end
end

-- Writes the run row, params, the execution provenance and a 'running' attempt.
function Shard:begin_run(point, sweep, attempt, a)
  begin(self)
  local db = self.db
  local prov = M.put_provenance(db, a.provenance)
  db:run([[INSERT OR IGNORE INTO runs(id, sweep, idx, config_hash, config, seed, status, attempt, created)
           VALUES(?,?,?,?,?,?, 'pending', 0, ?)]],
         { point.id, sweep, point.index, point.config_hash, point.json, point.seed, M.now() })
  M.insert_params(db, point.id, point.config)
  db:run([[INSERT OR REPLACE INTO attempts(run_id, attempt, status, started, heartbeat, host, pid,
             slurm_job_id, slurm_array_job_id, slurm_task_id, provenance)
           VALUES(?,?, 'running', ?, ?, ?, ?, ?, ?, ?, ?)]],
         { point.id, attempt, a.started, a.started, M.hostname(), core.proc_getpid(),
           a.slurm_job_id, a.slurm_array_job_id, a.slurm_task_id, prov })
  db:run([[UPDATE runs SET status='running', attempt=?, started=?, ended=NULL, host=?, pid=?, error=NULL,
             slurm_job_id=?, slurm_array_job_id=?, slurm_task_id=? WHERE id=?]],
         { attempt, a.started, M.hostname(), core.proc_getpid(), a.slurm_job_id,
           a.slurm_array_job_id, a.slurm_task_id, point.id })
  self:flush()
  self.run_id, self.attempt = point.id, attempt
end

function Shard:log(key, step, value, time)
  begin(self)
  local v, special = core.store_encode(value)
  self.ins_metric:run({ self.run_id, self.attempt, key, step, time, v, special })
  maybe_flush(self)
end

function Shard:tag(key, value)
  begin(self)
  self.db:run("INSERT OR REPLACE INTO tags VALUES(?,?,?)", { self.run_id, key, value })
end

function Shard:summary(values)
  begin(self)
  local st = self.db:prepare("INSERT OR REPLACE INTO summary VALUES(?,?,?,?,?)")
  for k, x in pairs(values) do
    local v, special = core.store_encode(x)
    st:run({ self.run_id, self.attempt, k, v, special })
  end
  st:close()
end

function Shard:artifact(a)
  begin(self)
  self.db:run("INSERT OR REPLACE INTO artifacts VALUES(?,?,?,?,?,?,?,?,?,?)",
              { self.run_id, self.attempt, a.name, a.file, a.dataset, a.kind, a.dtype, a.shape,
                a.bytes, M.now() })
end

-- Ends the attempt: status, error, traceback, exit facts; commits.
function Shard:finish(status, f)
  begin(self)
  f = f or {}
  local now = M.now()
  self.db:run([[UPDATE attempts SET status=?, ended=?, heartbeat=?, error=?, traceback=?, exit_code=?,
                  signal=? WHERE run_id=? AND attempt=?]],
              { status, now, now, f.error, f.traceback, f.exit_code, f.signal, self.run_id, self.attempt })
  self.db:run("UPDATE runs SET status=?, ended=?, error=? WHERE id=? AND attempt=?",
              { status, now, f.error, self.run_id, self.attempt })
  self:flush()
end

function Shard:close()
  if self.db then
    if self.in_tx then pcall(self.flush, self) end
    self.ins_metric:close()
    self.db:close()
    self.db = nil
  end
end

return M
