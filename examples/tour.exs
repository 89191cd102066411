# A tour of redix_rs, run by `make demo` against a private redis-server on a free loopback port.
# It grows with the features: commands and pipelines now.

defmodule Tour do
  @compile {:no_warn_undefined, :eredis}

  def say(text), do: IO.puts(IO.ANSI.format([:cyan, "==> ", :reset, text]))
  def show(label, value), do: IO.puts("    #{label} #{inspect(value)}")

  # A private redis-server for the tour: a free port, no persistence, gone when the tour ends.
  def start_server do
    {:ok, socket} = :gen_tcp.listen(0, ip: {127, 0, 0, 1})
    {:ok, port} = :inet.port(socket)
    :gen_tcp.close(socket)
    dir = Path.join(System.tmp_dir!(), "redix_rs_tour_#{port}")
    File.mkdir_p!(dir)

    args =
      ~w(--port #{port} --bind 127.0.0.1 --save "" --appendonly no --daemonize yes) ++
        [
          "--dir",
          dir,
          "--pidfile",
          Path.join(dir, "redis.pid"),
          "--logfile",
          Path.join(dir, "log")
        ]

    {_, 0} = System.cmd("redis-server", args)
    wait_until_up(port, 100)
    {port, dir}
  end

  def stop_server({port, dir}) do
    System.cmd("redis-cli", ["-p", "#{port}", "shutdown", "nosave"], stderr_to_stdout: true)
    File.rm_rf!(dir)
  end

  defp wait_until_up(port, 0), do: raise("redis-server did not start on port #{port}")

  defp wait_until_up(port, tries) do
    case :gen_tcp.connect(~c"127.0.0.1", port, [], 100) do
      {:ok, s} -> :gen_tcp.close(s)
      _ -> Process.sleep(50) && wait_until_up(port, tries - 1)
    end
  end

  def speed(get) do
    {micros, _} =
      :timer.tc(fn ->
        1..200
        |> Enum.map(fn _ -> Task.async(fn -> for _ <- 1..200, do: {:ok, _} = get.() end) end)
        |> Task.await_many(60_000)
      end)

    round(40_000 / (micros / 1_000_000))
  end

  def run(port) do
    say("Start a connection (in an app: {RedixRs, name: :redix, port: #{port}} in a supervisor)")
    {:ok, _} = RedixRs.start_link(port: port, name: :redix, sync_connect: true)

    say("Commands: a list of binaries or anything String.Chars")

    show(
      ~s|command(:redix, ["SET", "greeting", "hello"]) =>|,
      RedixRs.command(:redix, ["SET", "greeting", "hello"])
    )

    show(
      ~s|command(:redix, ["GET", "greeting"]) =>|,
      RedixRs.command(:redix, ["GET", "greeting"])
    )

    show(
      ~s|command(:redix, ["INCRBY", "visits", 5]) =>|,
      RedixRs.command(:redix, ["INCRBY", "visits", 5])
    )

    show(~s|command(:redix, ["GET", "nothing"]) =>|, RedixRs.command(:redix, ["GET", "nothing"]))

    say("Redis errors are structs you can match on")

    show(
      ~s|command(:redix, ["INCR", "greeting"]) =>|,
      RedixRs.command(:redix, ["INCR", "greeting"])
    )

    say("Pipelines: several commands in one round trip; errors stay inline")

    show(
      ~s|pipeline(:redix, [["INCR", "n"], ["INCR", "n"], ["INCR", "greeting"]]) =>|,
      RedixRs.pipeline(:redix, [["INCR", "n"], ["INCR", "n"], ["INCR", "greeting"]])
    )

    say("Bad input raises ArgumentError in the caller; the connection is unaffected")

    try do
      RedixRs.command(:redix, ["SET", "k", self()])
    rescue
      e in ArgumentError -> show("ArgumentError:", e.message)
    end

    say("One connection, many processes: 1,000 processes x 100 INCR")

    {micros, _} =
      :timer.tc(fn ->
        1..1_000
        |> Enum.map(fn _ ->
          Task.async(fn -> for _ <- 1..100, do: RedixRs.command!(:redix, ["INCR", "shared"]) end)
        end)
        |> Task.await_many(60_000)
      end)

    show("final counter:", RedixRs.command!(:redix, ["GET", "shared"]))
    show("commands per second:", round(100_000 / (micros / 1_000_000)))

    say("A pipeline of 100,000 commands")

    {micros, {:ok, replies}} =
      :timer.tc(fn ->
        RedixRs.pipeline(:redix, for(i <- 1..100_000, do: ["SET", "k:#{i}", i]), timeout: 60_000)
      end)

    show("replies:", length(replies))
    show("milliseconds:", div(micros, 1_000))

    say("Transactions: MULTI ... EXEC in one write")

    show(
      ~s|transaction_pipeline(:redix, [["SET", "t", "1"], ["INCR", "t"]]) =>|,
      RedixRs.transaction_pipeline(:redix, [["SET", "t", "1"], ["INCR", "t"]])
    )

    say("Fire and forget: noreply_pipeline (CLIENT REPLY OFF ... ON)")

    show(
      ~s|noreply_pipeline(:redix, [["SET", "quiet", "yes"]]) =>|,
      RedixRs.noreply_pipeline(:redix, [["SET", "quiet", "yes"]])
    )

    say("Pub/sub: messages go from Rust straight to the subscriber process")
    {:ok, pubsub} = RedixRs.PubSub.start_link(port: port, sync_connect: true)
    {:ok, ref} = RedixRs.PubSub.subscribe(pubsub, "news", self())
    receive do: ({:redix_pubsub, ^pubsub, ^ref, :subscribed, props} -> show(":subscribed", props))
    RedixRs.command!(:redix, ["PUBLISH", "news", "hello"])
    receive do: ({:redix_pubsub, ^pubsub, ^ref, :message, props} -> show(":message", props))
    RedixRs.PubSub.stop(pubsub)

    say("A quick side-by-side: 200 processes x 200 GET on ONE connection")
    show("redix_rs GET/s:", speed(fn -> RedixRs.command(:redix, ["GET", "greeting"]) end))

    if Code.ensure_loaded?(:eredis) do
      {:ok, eredis} = :eredis.start_link(~c"127.0.0.1", port)
      show("eredis   GET/s:", speed(fn -> :eredis.q(eredis, ["GET", "greeting"]) end))
      :eredis.stop(eredis)
    else
      show(
        "eredis:",
        "not installed (apt-get install erlang-redis-client); `make bench` has the full comparison"
      )
    end

    say("Timeouts are per call")

    show(
      ~s|command(:redix, ["BLPOP", "empty", "1"], timeout: 100) =>|,
      RedixRs.command(:redix, ["BLPOP", "empty", "1"], timeout: 100)
    )

    RedixRs.stop(:redix)
  end
end

server = Tour.start_server()

try do
  Tour.run(elem(server, 0))
  Tour.say("Done.")
after
  Tour.stop_server(server)
end
