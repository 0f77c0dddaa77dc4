-- squeeze.json — a small canonical JSON codec and the FNV-1a 64 hash used for
-- config identities.
--
-- Canonical form (what a config hash is computed over): object keys sorted
-- bytewise, no whitespace, integers written as integers ("2"), floats in the
-- shortest "%.{15,16,17}g" form that reads back to the same double and always
-- with a '.' or exponent ("2.0", "1e-05") so that decode gives back a float:
-- Lua's integer/float distinction survives a round trip.  A table is an array
-- when its keys are exactly 1..n (n >= 1); the empty table encodes as {}.
-- NaN and ±inf have no JSON form: encode raises (configs must be finite).
local M = {}

local fmt, concat, sort = string.format, table.concat, table.sort
local math_type = math.type

local function float_str(x)
  if x ~= x or x == math.huge or x == -math.huge then
    local name = x ~= x and "NaN" or (x > 0 and "inf" or "-inf")
    error("json: cannot encode " .. name .. " (configs must hold finite numbers)", 0)
  end
  local s
  for prec = 15, 17 do
    s = fmt("%." .. prec .. "g", x)
    if tonumber(s) == x then break end
  end
  if not s:find("[%.eEn]") then s = s .. ".0" end
  return s
end

local escapes = {
  ['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f',
  ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t',
}
local function str(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return escapes[c] or fmt("\\u%04x", c:byte())
  end) .. '"'
end

-- Is t an array (keys exactly 1..n, n >= 1)?
local function array_len(t)
  local n = #t
  if n == 0 then return nil end
  local count = 0
  for k in pairs(t) do
    if math_type(k) ~= "integer" or k < 1 or k > n then return nil end
    count = count + 1
  end
  return count == n and n or nil
end
M.array_len = array_len

local function encode(v, out, seen, path)
  local t = type(v)
  if t == "nil" then out[#out + 1] = "null"
  elseif t == "boolean" then out[#out + 1] = v and "true" or "false"
  elseif t == "number" then
    out[#out + 1] = math_type(v) == "integer" and fmt("%d", v) or float_str(v)
  elseif t == "string" then out[#out + 1] = str(v)
  elseif t == "table" then
    if seen[v] then error("json: cycle at " .. path, 0) end
    seen[v] = true
    local n = array_len(v)
    if n then
      out[#out + 1] = "["
      for i = 1, n do
        if i > 1 then out[#out + 1] = "," end
        encode(v[i], out, seen, path .. "[" .. i .. "]")
      end
      out[#out + 1] = "]"
    else
      local keys = {}
      for k in pairs(v) do
        if type(k) ~= "string" then
          error(fmt("json: key %s at %s is a %s (only string keys, or an array 1..n)",
                    tostring(k), path, type(k)), 0)
        end
        keys[#keys + 1] = k
      end
      sort(keys)
      out[#out + 1] = "{"
      for i, k in ipairs(keys) do
        if i > 1 then out[#out + 1] = "," end
        out[#out + 1] = str(k)
        out[#out + 1] = ":"
        encode(v[k], out, seen, path .. "." .. k)
      end
      out[#out + 1] = "}"
    end
    seen[v] = nil
  else
    error(fmt("json: cannot encode a %s at %s", t, path), 0)
  end
end

-- Canonical JSON text of v.
function M.encode(v)
  local out = {}
  encode(v, out, {}, "$")
  return concat(out)
end

-- ---- decoding -------------------------------------------------------------

local function decode_error(s, i, what)
  error(fmt("json: %s at byte %d near '%s'", what, i, s:sub(i, i + 15)), 0)
end

local function skip(s, i)
  return s:find("[^ \t\r\n]", i) or #s + 1
end

local decode_value

local function decode_string(s, i)
  -- s:sub(i, i) == '"'
  local out, j = {}, i + 1
  while true do
    local a, b = s:find('["\\]', j)
    if not a then decode_error(s, i, "unterminated string") end
    out[#out + 1] = s:sub(j, a - 1)
    if s:sub(a, a) == '"' then return concat(out), b + 1 end
    local c = s:sub(a + 1, a + 1)
    local simple = { b = "\b", f = "\f", n = "\n", r = "\r", t = "\t",
                     ['"'] = '"', ["\\"] = "\\", ["/"] = "/" }
    if simple[c] then
      out[#out + 1] = simple[c]
      j = a + 2
    elseif c == "u" then
      local hex = s:sub(a + 2, a + 5)
      if not hex:match("^%x%x%x%x$") then decode_error(s, a, "bad \\u escape") end
      out[#out + 1] = utf8.char(tonumber(hex, 16))
      j = a + 6
    else
      decode_error(s, a, "bad escape")
    end
  end
end

function decode_value(s, i)
  i = skip(s, i)
  local c = s:sub(i, i)
  if c == "{" then
    local obj = {}
    i = skip(s, i + 1)
    if s:sub(i, i) == "}" then return obj, i + 1 end
    while true do
      if s:sub(i, i) ~= '"' then decode_error(s, i, "object key expected") end
      local k
      k, i = decode_string(s, i)
      i = skip(s, i)
      if s:sub(i, i) ~= ":" then decode_error(s, i, "':' expected") end
      obj[k], i = decode_value(s, i + 1)
      i = skip(s, i)
      local d = s:sub(i, i)
      if d == "}" then return obj, i + 1 end
      if d ~= "," then decode_error(s, i, "',' or '}' expected") end
      i = skip(s, i + 1)
    end
  elseif c == "[" then
    local arr, n = {}, 0
    i = skip(s, i + 1)
    if s:sub(i, i) == "]" then return arr, i + 1 end
    while true do
      n = n + 1
      arr[n], i = decode_value(s, i)
      i = skip(s, i)
      local d = s:sub(i, i)
      if d == "]" then return arr, i + 1 end
      if d ~= "," then decode_error(s, i, "',' or ']' expected") end
      i = i + 1
    end
  elseif c == '"' then
    return decode_string(s, i)
  elseif s:sub(i, i + 3) == "true" then return true, i + 4
  elseif s:sub(i, i + 4) == "false" then return false, i + 5
  elseif s:sub(i, i + 3) == "null" then return nil, i + 4
  else
    local num = s:match("^-?%d+%.?%d*[eE]?[-+]?%d*", i)
    if not num or num == "" or num == "-" then decode_error(s, i, "value expected") end
    local v
    if num:find("[%.eE]") then v = tonumber(num) + 0.0 else v = math.tointeger(tonumber(num)) or tonumber(num) end
    if v == nil then decode_error(s, i, "bad number") end
    return v, i + #num
  end
end

-- Lua value of a JSON text (null -> nil; "2" -> integer, "2.0" -> float).
function M.decode(s)
  local v, i = decode_value(s, 1)
  i = skip(s, i)
  if i <= #s then decode_error(s, i, "trailing text") end
  return v
end

-- ---- hashing --------------------------------------------------------------

-- FNV-1a 64 of a string as 16 lowercase hex digits.  Lua 5.4 integers are
-- 64-bit two's complement and wrap on overflow, which is exactly FNV's
-- arithmetic mod 2^64.
function M.fnv1a64(s)
  local h = -3750763034362895579      -- 0xcbf29ce484222325
  local prime = 1099511628211         -- 0x100000001b3
  for i = 1, #s do
    h = (h ~ s:byte(i)) * prime
  end
  return fmt("%016x", h)
end

return M
