-- testlib.lua — a tiny test harness for squeeze's Lua tests.
--   local T = dofile("tests/lua/testlib.lua")
--   T.test("name", function() T.check(cond, "msg"); T.near(a, b, 1e-6) end)
--   T.finish()   -- prints "N passed, N failed"; exits 1 when anything failed
local T = { passed = 0, failed = 0 }

local function fmt(v)
  if type(v) == "number" then return string.format("%.10g", v) end
  return tostring(v)
end

function T.test(name, fn)
  collectgarbage()
  collectgarbage()
  local ok, err = xpcall(fn, debug.traceback)
  if ok then
    T.passed = T.passed + 1
    print("ok   " .. name)
  else
    T.failed = T.failed + 1
    print("FAIL " .. name .. "\n     " .. tostring(err):gsub("\n", "\n     "))
  end
end

function T.check(cond, msg)
  if not cond then error(msg or "check failed", 2) end
  return cond
end

function T.eq(a, b, msg)
  if a ~= b then error((msg and msg .. ": " or "") .. "expected " .. fmt(b) .. ", got " .. fmt(a), 2) end
end

-- |a - b| <= tol * max(1, |b|); tol defaults to 1e-6.
function T.near(a, b, tol, msg)
  tol = tol or 1e-6
  if type(a) ~= "number" or type(b) ~= "number" or a ~= a or b ~= b
     or math.abs(a - b) > tol * math.max(1, math.abs(b)) then
    error((msg and msg .. ": " or "") .. "expected " .. fmt(b) .. " (tol " .. fmt(tol) .. "), got " .. fmt(a), 2)
  end
end

-- Element-wise near over two (nested) lists or a tensor and a list.
function T.allnear(a, b, tol, msg)
  if type(a) == "userdata" then a = a:tolist() end
  if type(b) == "userdata" then b = b:tolist() end
  local function walk(x, y, path)
    if type(y) == "table" then
      if type(x) ~= "table" or #x ~= #y then
        error((msg and msg .. ": " or "") .. "shape differs at " .. path, 3)
      end
      for i = 1, #y do walk(x[i], y[i], path .. "[" .. i .. "]") end
    else
      local t = tol or 1e-6
      if type(x) ~= "number" or math.abs(x - y) > t * math.max(1, math.abs(y)) then
        error((msg and msg .. ": " or "") .. "at " .. path .. " expected " .. fmt(y) .. ", got " .. fmt(x), 3)
      end
    end
  end
  walk(a, b, "")
end

-- fn must raise; the message must contain `pattern` (plain text, or a Lua
-- pattern when the plain text is not found).  Returns the message.
function T.raises(fn, pattern)
  local ok, err = pcall(fn)
  if ok then error("expected an error" .. (pattern and " matching '" .. pattern .. "'" or ""), 2) end
  err = tostring(err)
  if pattern and not err:find(pattern, 1, true) and not err:find(pattern) then
    error("error '" .. err .. "' does not match '" .. pattern .. "'", 2)
  end
  return err
end

function T.finish()
  print(string.format("%d passed, %d failed", T.passed, T.failed))
  if T.failed > 0 then os.exit(1, true) end
  return 0
end

return T
