--[[
Shared by every library (prepended at load time, after the library's #!lua line).

A refusal is {status, number...}: each status names one error code in the table of
service/giftstream/errors.py (a test checks that every status returned here has one).

now_ms()  the server's clock in milliseconds (consistent for all workers).
post(key, kind, ref, balance, postings, extra, now)
  Appends one ledger entry to the stream `key` (`ts` is `now`, the caller's now_ms(), when given:
  one TIME a call). `postings` is a list of {account, asset, amount}
  that must sum to zero per asset (double entry); `balance` is the slot owner's balance after the
  entry; `extra` is a flat list of more field/value pairs. Accounts: user:<id>, host:<id>,
  platform:<name>. Assets: coins, diamonds, points.
]]

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function post(key, kind, ref, balance, postings, extra, now)
  local parts = {}
  for i, p in ipairs(postings) do
    parts[i] = p[1] .. ' ' .. p[2] .. ' ' .. string.format('%d', p[3])
  end
  local args = {'XADD', key, '*', 'kind', kind, 'ref', ref,
    'balance', string.format('%d', balance), 'post', table.concat(parts, ';'), 'ts', now or now_ms()}
  for _, value in ipairs(extra or {}) do args[#args + 1] = value end
  return redis.call(unpack(args))
end
