-- check_h5.lua RESULTS — loads every HDF5 file the results database
-- indexes (checksums verified by the loader) and prints "h5 ok N" or the
-- first problem.  Run with `squeeze run`.
local core = require "squeeze.core"
local results = ...
results = results[1]
local db = assert(core.store_open(results .. "/squeeze.db", "readonly"))
local n = 0
for _, a in ipairs(db:rows("SELECT DISTINCT file FROM artifacts")) do
  if a.file:find("tmp", 1, true) then print("indexed a temporary file: " .. a.file) return 1 end
  local ok, err = pcall(core.h5_load, results .. "/" .. a.file)
  if not ok then print("unreadable indexed file " .. a.file .. ": " .. tostring(err)) return 1 end
  n = n + 1
end
db:close()
print("h5 ok " .. n)
return 0
