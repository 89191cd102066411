defmodule RedixRs.ReplyLimitsTest do
  # `:reply_limits` against a real redis-server: a reply past a limit fails its own caller with that
  # limit's reason, the connection is re-established, and later calls work.
  use ExUnit.Case, async: true

  @moduletag :capture_log

  alias RedixRs.ConnectionError
  alias RedixRs.Test.Servers

  setup do
    prefix = "limits:#{System.unique_integer([:positive])}"
    {:ok, admin} = RedixRs.start_link(port: Servers.port(), sync_connect: true)
    {:ok, "OK"} = RedixRs.command(admin, ["SET", "#{prefix}:big", String.duplicate("x", 200)])
    {:ok, 11} = RedixRs.command(admin, ["RPUSH", "#{prefix}:list" | Enum.map(1..11, &"#{&1}")])
    %{prefix: prefix}
  end

  test "each limit names itself to the caller whose reply went past it", %{prefix: prefix} do
    cases = [
      {[max_bulk_bytes: 100], ["GET", "#{prefix}:big"], :bulk_too_long},
      {[max_elements: 10], ["LRANGE", "#{prefix}:list", "0", "-1"], :aggregate_too_long},
      {[max_depth: 1], ["EVAL", "return {{1}}", "0"], :too_deep},
      {[max_reply_bytes: 150], ["GET", "#{prefix}:big"], :reply_too_large}
    ]

    for {limits, command, reason} <- cases do
      {:ok, conn} =
        RedixRs.start_link(port: Servers.port(), sync_connect: true, reply_limits: limits)

      assert {:error, %ConnectionError{reason: {:protocol_error, ^reason}} = error} =
               RedixRs.command(conn, command)

      assert Exception.message(error) =~
               ~r/went past the :max_\w+ limit of the :reply_limits option/

      # Re-established: a reply within the limits goes through.
      assert eventually(fn -> RedixRs.command(conn, ["PING"]) == {:ok, "PONG"} end)
      GenServer.stop(conn)
    end
  end

  test "replies within the limits are untouched", %{prefix: prefix} do
    {:ok, conn} =
      RedixRs.start_link(
        port: Servers.port(),
        sync_connect: true,
        reply_limits: [max_bulk_bytes: 200, max_elements: 11, max_depth: 2, max_reply_bytes: 208]
      )

    # `$200\r\n` (6 bytes) + 200 bytes + `\r\n` is 208 bytes.
    assert {:ok, big} = RedixRs.command(conn, ["GET", "#{prefix}:big"])
    assert byte_size(big) == 200
    assert {:ok, list} = RedixRs.command(conn, ["LRANGE", "#{prefix}:list", "0", "-1"])
    assert length(list) == 11
    assert {:ok, [[1]]} = RedixRs.command(conn, ["EVAL", "return {{1}}", "0"])
  end

  test "the option is validated" do
    for bad <- [[max_depth: 0], [nope: 1], [max_reply_bytes: "1"], :big] do
      assert_raise ArgumentError, ~r/reply_limits/, fn ->
        RedixRs.start_link(port: Servers.port(), reply_limits: bad)
      end
    end
  end

  defp eventually(fun, tries \\ 200) do
    cond do
      fun.() -> true
      tries == 0 -> false
      true -> Process.sleep(25) && eventually(fun, tries - 1)
    end
  end
end
