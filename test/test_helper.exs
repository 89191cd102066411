# Every test talks to real redis-server processes started here on free 127.0.0.1 ports (never 6379)
# and stopped when the suite ends.
alias RedixRs.Test.RedisServer

servers = %{
  plain: RedisServer.start(),
  password: RedisServer.start(password: "s3cret"),
  acl: RedisServer.start(acl_user: {"alice", "wonderland"}),
  unix: RedisServer.start(unix_socket: true)
}

RedixRs.Test.Servers.put(servers)

# The connection the docs' examples use: `{RedixRs, name: :redix}`.
{:ok, _} = RedixRs.start_link(port: servers.plain.port, name: :redix, sync_connect: true)

ExUnit.after_suite(fn _ -> Enum.each(servers, fn {_, server} -> RedisServer.stop(server) end) end)
# An assert_receive without a timeout waits for an event, and only a hang should fail it: 5 s, not
# ExUnit's 100 ms, so that it holds on a loaded machine. (refute_receive keeps its 100 ms: a late
# message cannot make it fail.)
ExUnit.start(exclude: [:skip], assert_receive_timeout: 5_000)
