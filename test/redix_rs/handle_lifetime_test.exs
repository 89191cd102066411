defmodule RedixRs.HandleLifetimeTest do
  # The native handle monitors its owner: when the connection process dies, however it dies, the socket
  # closes and the tokio task ends. Not async: it counts the server's clients.
  use ExUnit.Case, async: false

  alias RedixRs.Test.Servers
  import RedixRs.Test.Helpers

  test "killing the connection process closes its socket" do
    name = "lifetime-#{System.unique_integer([:positive])}"
    {:ok, c} = RedixRs.start_link(port: Servers.port(), client_name: name, sync_connect: true)
    assert listed?(name)
    Process.unlink(c)
    Process.exit(c, :kill)
    assert eventually(fn -> not listed?(name) end)
  end

  test "a caller holding the name of a killed connection gets an exit, not a hang" do
    name = :"lifetime_#{System.unique_integer([:positive])}"
    {:ok, c} = RedixRs.start_link(port: Servers.port(), name: name, sync_connect: true)
    Process.unlink(c)
    Process.exit(c, :kill)
    assert eventually(fn -> not Process.alive?(c) end)

    # Either the name is already gone (an exit, as calling any dead GenServer) or the stale handle
    # answers at once that it is closed: never a hang, never a reply from a dead connection.
    result =
      try do
        RedixRs.command(name, ["PING"], timeout: 5_000)
      catch
        :exit, reason -> {:exit, reason}
      end

    assert match?({:exit, _}, result) or
             match?({:error, %RedixRs.ConnectionError{reason: :closed}}, result)
  end

  @tag timeout: 300_000
  test "10,000 start/stop cycles leave OS threads, processes, memory and server clients flat" do
    cycle = fn n ->
      for _ <- 1..n do
        {:ok, c} = RedixRs.start_link(port: Servers.port(), sync_connect: true)
        {:ok, "PONG"} = RedixRs.command(c, ["PING"])
        :ok = RedixRs.stop(c)
      end
    end

    # Warm up: the tokio runtime, allocator arenas and the atom and code tables settle first.
    cycle.(1_000)
    before = footprint()
    cycle.(10_000)
    assert eventually(fn -> connected_clients() <= before.clients end)

    # tokio's blocking pool (host name lookups) keeps idle threads for 10 s, and on a loaded machine a
    # lookup may start before the previous one's thread is idle again, adding one: wait (up to 15 s)
    # for those to go. A leak would be one thread per cycle.
    eventually(fn -> os_threads() <= before.threads + 2 end, 750)
    after_cycles = footprint()
    assert after_cycles.threads <= before.threads + 2, inspect({before, after_cycles})
    assert after_cycles.processes <= before.processes + 5, inspect({before, after_cycles})

    assert after_cycles.beam_memory - before.beam_memory < 10_000_000,
           inspect({before, after_cycles})

    assert after_cycles.rss - before.rss < 20_000_000, inspect({before, after_cycles})
  end

  defp footprint do
    :erlang.garbage_collect()
    Process.sleep(100)

    %{
      threads: os_threads(),
      processes: :erlang.system_info(:process_count),
      beam_memory: :erlang.memory(:total),
      rss: rss_bytes(),
      clients: connected_clients()
    }
  end

  defp os_threads, do: length(File.ls!("/proc/self/task"))

  defp rss_bytes do
    [_, kb] = Regex.run(~r/VmRSS:\s+(\d+) kB/, File.read!("/proc/self/status"))
    String.to_integer(kb) * 1024
  end

  defp listed?(name) do
    {:ok, list} = RedixRs.command(:redix, ["CLIENT", "LIST"])
    list =~ "name=#{name} "
  end

  defp connected_clients do
    {:ok, info} = RedixRs.command(:redix, ["INFO", "clients"])
    [_, n] = Regex.run(~r/connected_clients:(\d+)/, info)
    String.to_integer(n)
  end
end
