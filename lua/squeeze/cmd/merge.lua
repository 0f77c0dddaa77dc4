-- squeeze merge — fold finished shards into the main database (idempotent).
local runner = require "squeeze.runner"
local slurm = require "squeeze.slurm"
local store = require "squeeze.store"

local M = {}
local fmt = string.format

M.usage = [==[
usage: squeeze merge [--sweep NAME] [--results DIR]

Folds every shard no worker is writing (its heartbeat says done, or its
worker is gone) into DIR/squeeze.db (default results/), one transaction per
shard; unchanged shards are skipped, so merging again changes nothing.
Runs whose worker or Slurm task ended without recording an outcome are
marked killed (they run again on the next sweep / submit).]==]

local SPEC = {
  ["--sweep"] = { "sweep", "string", "-s" },
  ["--results"] = { "results", "string" },
}

function M.main(argv)
  local ok, opts, pos = pcall(runner.parse_cli, argv, SPEC, M.usage)
  if not ok then io.stderr:write("squeeze merge: ", opts, "\n") return 2 end
  if opts.help then print(M.usage) return 0 end
  if #pos > 0 then io.stderr:write("squeeze merge: unexpected argument '", pos[1], "'\n") return 2 end
  local results = store.abspath(opts.results or "results")
  local ro, err = store.open_readonly(results)
  if not ro then io.stderr:write("squeeze merge: ", err, "\n") return 2 end
  ro:close()
  local db
  db, err = store.open_main(results)
  if not db then io.stderr:write("squeeze merge: ", err, "\n") return 2 end
  local sweeps = {}
  if opts.sweep then
    if not db:rows("SELECT 1 FROM sweeps WHERE name = ?", { opts.sweep })[1] then
      io.stderr:write("squeeze merge: no sweep '", opts.sweep, "' in ", store.db_path(results), "\n")
      db:close()
      return 2
    end
    sweeps = { opts.sweep }
  else
    for _, r in ipairs(db:rows("SELECT name FROM sweeps ORDER BY name")) do sweeps[#sweeps + 1] = r.name end
  end
  local code = 0
  for _, s in ipairs(sweeps) do
    local mok, merr = pcall(function()
      local m1, l1 = store.merge_sweep(db, results, s)
      local m2, l2 = slurm.reconcile(db, results, s)
      local l3 = store.reconcile_running(db, results, s)
      local by = {}
      for _, r in ipairs(db:rows("SELECT status, count(*) AS n FROM runs WHERE sweep = ? GROUP BY status", { s })) do
        by[#by + 1] = r.n .. " " .. r.status
      end
      print(fmt("[%s] merged %d shard(s)%s; runs: %s", s, m1 + m2,
                (l1 + l2 + l3) > 0 and fmt(", %d lost worker(s) marked killed", l1 + l2 + l3) or "",
                table.concat(by, ", ")))
    end)
    if not mok then io.stderr:write("squeeze merge: ", s, ": ", tostring(merr), "\n") code = 1 end
  end
  db:refresh_flat()
  db:close()
  return code
end

return M
