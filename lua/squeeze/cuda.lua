-- squeeze.cuda — the GPU: whether there is one, waiting for it, TF32, memory
-- and timing.  The engine's GPU context is created on first use (the first
-- tensor on "cuda"), so a CPU-only run never touches the driver.
--
--   if sq.cuda.available() then model:cuda() end
--   sq.cuda.set_tf32(true)          -- float32 matmuls on TF32 tensor cores (default off)
--   local t0, t1 = sq.cuda.event(), sq.cuda.event()
--   t0:record(); step(); t1:record(); print(t0:elapsed_ms(t1))
--   sq.cuda.memory().peak.total     -- GPU bytes by category, like squeeze.memory()
local core = require "squeeze.core"

local cuda = {}

-- true when a driver and a GPU are present (asks the driver; creates nothing)
function cuda.available() return core.cuda_available() end
-- creates the GPU context now; returns its description (raises without a GPU)
function cuda.init() return core.cuda_init() end
-- description of the GPU in use, or nil before the first GPU tensor
function cuda.device() return core.cuda_device() end
-- waits for queued GPU work; raises what kernels reported (an index out of range, ...)
function cuda.synchronize() core.cuda_synchronize() end
-- set_tf32(on) -> previous setting.  Recorded with a run: put it in its config.
function cuda.set_tf32(on) return core.cuda_set_tf32(on and true or false) end
function cuda.tf32() return core.cuda_tf32() end
-- {current = {param=, grad=, optim=, saved=, workspace=, other=, total=}, peak = {...},
--  allocator = {requested=, in_use=, cached=, reserved=, peak_reserved=, ...}} in bytes
function cuda.memory() return core.cuda_memory() end
function cuda.reset_peak() core.cuda_reset_peak() end
function cuda.empty_cache() core.cuda_empty_cache() end
-- an event on the GPU's stream: ev:record(), start:elapsed_ms(stop)
function cuda.event() return core.cuda_event() end

-- profile(fn, ...) -> report, fn's results: GPU milliseconds per kernel while
-- fn ran (an event after every launch; exact when the GPU is kept busy)
function cuda.profile(fn, ...)
  core.cuda_profile_begin()
  local res = table.pack(pcall(fn, ...))
  local report = core.cuda_profile_end()
  if not res[1] then error(res[2], 0) end
  return report, table.unpack(res, 2, res.n)
end

-- squeeze.cuda(t) is t:cuda()
return setmetatable(cuda, { __call = function(_, t) return t:cuda() end })
