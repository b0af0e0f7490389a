-- wrk script for GET /v1/me: one pre-generated DPoP proof per request.
--   wrk ... -s bench/me.lua URL -- PROOFS_FILE [cycle]
-- PROOFS_FILE: the access token on the first line, then one proof per line. Each wrk thread
-- takes every n-th proof (n = number of threads). Without "cycle" a proof is never sent twice:
-- when a thread runs out it sends requests without a proof, which the server refuses, so an
-- exhausted pool shows up as non-2xx answers instead of replays. With "cycle" (for endpoints
-- that do not check replay) the proofs are reused in turn.

local threads = {}
local counter = 0

function setup(thread)
  thread:set("index", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

-- Globals of each thread's Lua state, so that done() can read them with thread:get.
requests = {}
position = 0
count = 0
cycle = false
fallback = nil

function init(args)
  local file = assert(io.open(args[1], "r"))
  local token = file:read("*l")
  cycle = args[2] == "cycle"
  local nthreads = tonumber(args[3] or "1")
  local auth = "DPoP " .. token
  local i = 0
  for line in file:lines() do
    if i % nthreads == index then
      count = count + 1
      requests[count] = wrk.format("GET", nil, { ["Authorization"] = auth, ["DPoP"] = line })
    end
    i = i + 1
  end
  file:close()
  fallback = wrk.format("GET", nil, { ["Authorization"] = auth })
end

function request()
  position = position + 1
  if position > count then
    if not cycle then
      return fallback
    end
    position = 1
  end
  return requests[position]
end

function done(summary, latency, requests)
  local used = 0
  for _, thread in ipairs(threads) do
    used = used + (thread:get("position") or 0)
  end
  io.write(string.format("proofs_used %d\n", used))
end
