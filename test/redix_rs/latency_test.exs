defmodule RedixRs.LatencyTest do
  # Latency that loopback hides: through a proxy that holds every chunk 250 ms each way, a caller's
  # command is written as soon as it is submitted, even while another caller's reply is awaited on the
  # shared connection (it once waited for that reply to be read first: a round trip added to an
  # unrelated call).
  use ExUnit.Case, async: true

  alias RedixRs.Test.{DelayProxy, Servers}

  # Each way. The window the tests measure in is the round trip (twice this), which must hold
  # across a stall of a loaded machine: at 50 ms each way, a stall of 100 ms between two calls
  # would fail them. The old hand-over fails them at any delay (the second command waited for the
  # first reply).
  @delay 250

  setup do
    proxy = DelayProxy.start(Servers.port(), @delay)
    {:ok, conn} = RedixRs.start_link(port: proxy.port, sync_connect: true)
    %{conn: conn}
  end

  test "a second caller's bytes reach the proxy before the first caller's reply comes back",
       %{conn: conn} do
    first = Task.async(fn -> RedixRs.command(conn, ["ECHO", "first-call"]) end)
    arrived_first = chunk(:up, "first-call")

    second = Task.async(fn -> RedixRs.command(conn, ["ECHO", "second-call"]) end)
    arrived_second = chunk(:up, "second-call")
    first_reply = chunk(:down, "first-call")

    assert arrived_second < first_reply,
           "the second command reached the proxy #{arrived_second - arrived_first} ms after the " <>
             "first, its reply left the proxy #{first_reply - arrived_first} ms after the first"

    assert Task.await(first) == {:ok, "first-call"}
    assert Task.await(second) == {:ok, "second-call"}
  end

  test "callers under load: each one's bytes go out while the replies before it are awaited",
       %{conn: conn} do
    # 20 callers in flight, then 5 more, one at a time, each once the one before reached the proxy:
    # every one of them arrives before the first reply comes back.
    wave = for i <- 1..20, do: Task.async(fn -> RedixRs.command(conn, ["ECHO", "wave-#{i}"]) end)
    chunk(:up, "wave-20")

    late =
      for i <- 1..5 do
        task = Task.async(fn -> RedixRs.command(conn, ["ECHO", "late-#{i}"]) end)
        {task, chunk(:up, "late-#{i}")}
      end

    first_reply = chunk(:down, "wave-1")
    {_, last_arrival} = List.last(late)
    assert last_arrival < first_reply

    assert Task.await_many(wave) == for(i <- 1..20, do: {:ok, "wave-#{i}"})

    assert Task.await_many(Enum.map(late, &elem(&1, 0))) ==
             for(i <- 1..5, do: {:ok, "late-#{i}"})
  end

  # When the first chunk passing `dir` that contains `marker` passed the proxy (its clock, ms).
  defp chunk(dir, marker) do
    receive do
      {:delay_proxy, ^dir, at, data} ->
        if String.contains?(data, marker), do: at, else: chunk(dir, marker)
    after
      5_000 -> flunk("no #{dir} chunk with #{inspect(marker)} passed the proxy")
    end
  end
end
