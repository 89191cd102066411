defmodule RedixRs.Test.Soak.Report do
  @moduledoc false
  # The tables `make soak` and the soak test print from `RedixRs.Test.Soak.run/1`'s result.

  @doc "The accounting as tables (iodata)."
  def format(%{load: load, opts: opts} = result) do
    settle_ms = result.settle_ms

    o = load.outcomes
    unknown = o.disconnected + o.timeout
    rate = round(load.calls * 1000 / max(load.load_ms, 1))

    outcome_rows = [
      {"{:ok, _}  (acknowledged)", o.ok},
      {":disconnected  (may have run)", o.disconnected},
      {":timeout  (may have run)", o.timeout},
      {":closed  (not sent)", o.closed},
      {"-LOADING error  (not run)", o.loading},
      {"other", o.other},
      {"total answered", Enum.sum(Map.values(o))}
    ]

    bound = if o.ok <= load.final and load.final <= o.ok + unknown, do: "holds", else: "VIOLATED"

    [
      "\nredix_rs soak: #{fmt(load.calls)} INCRs from #{load.processes} processes through one RedixRs ",
      "connection\nredis-server appendonly yes, appendfsync always; call timeout #{opts[:call_timeout]} ms ",
      "(#{opts[:short_timeouts] * 100}% of calls: 1..3 ms); seed #{opts[:seed]}\n\n",
      "faults (each fired when that many calls were answered; the next waits for a PING to pass)\n",
      table(
        ["at call", "fault", "what happened", "back in"],
        Enum.map(load.fired, fn e ->
          [fmt(e.at), to_string(e.kind), e.detail, "#{e.recovered_ms} ms"]
        end)
      ),
      if(load.unfired == [], do: "", else: "NOT FIRED: #{inspect(load.unfired)}\n"),
      "\nanswers (load: #{fmt(load.load_ms)} ms, #{fmt(rate)} calls/s)\n",
      table(["outcome", "calls"], Enum.map(outcome_rows, fn {k, v} -> [k, fmt(v)] end)),
      "\naccounting\n",
      table(["check", "value", "expected"], [
        [
          "calls issued / answered",
          "#{fmt(load.issued)} / #{fmt(load.answered)}",
          fmt(load.calls)
        ],
        ["messages after an answer", fmt(load.strays), "0"],
        [
          "callers left waiting / not exited",
          "#{fmt(load.hung)} / #{fmt(load.not_exited)}",
          "0 / 0"
        ],
        ["acknowledged values seen twice", fmt(load.duplicates), "0"],
        ["out of order per caller", fmt(load.out_of_order), "0"],
        [
          "final counter (GET)",
          fmt(load.final),
          "#{fmt(o.ok)}..#{fmt(o.ok + unknown)}: #{bound}"
        ],
        ["connection after the load", inspect(load.conn_after), "{:ok, \"PONG\"}"]
      ]),
      "\nstart/stop cycles\n",
      table(
        ["kind", "cycles", "failed", "stray msgs", "ms", "cycles/s"],
        Enum.map(result.cycles, fn {kind, c} ->
          [
            if(kind == :pubsub, do: "RedixRs.PubSub + SUBSCRIBE", else: "RedixRs + PING"),
            fmt(c.cycles),
            fmt(c.failures),
            fmt(c.strays),
            fmt(c.ms),
            fmt(round(c.cycles * 1000 / max(c.ms, 1)))
          ]
        end)
      ),
      "\nfootprint (every process garbage collected; up to #{div(settle_ms, 1000)} s to settle)\n",
      footprint_table(result.footprints, result.tolerances),
      "\n",
      case result.violations do
        [] -> "all invariants hold (#{Float.round(result.seconds, 1)} s)\n"
        list -> ["VIOLATIONS:\n", Enum.map(list, &["  - ", &1, "\n"])]
      end
    ]
  end

  defp footprint_table([{_, baseline} | _] = footprints, tolerances) do
    rows =
      for {key, label} <- [
            memory: "erlang memory total (bytes)",
            threads: "OS threads",
            fds: "file descriptors",
            processes: "Erlang processes",
            rss: "resident set (bytes)"
          ] do
        [label] ++
          Enum.map(footprints, fn
            {"baseline", s} -> fmt(s[key])
            {_, s} -> "#{fmt(s[key])} (#{signed(s[key] - baseline[key])})"
          end) ++ ["+#{fmt(tolerances[key])}"]
      end

    table(["" | Enum.map(footprints, &elem(&1, 0))] ++ ["tolerance"], rows)
  end

  defp table(header, rows) do
    all = [header | rows]

    widths =
      all
      |> Enum.zip()
      |> Enum.map(fn col -> col |> Tuple.to_list() |> Enum.map(&String.length/1) |> Enum.max() end)

    line = fn cells ->
      [
        "  ",
        cells
        |> Enum.zip(widths)
        |> Enum.map_join("  ", fn {c, w} -> String.pad_trailing(c, w) end)
        |> String.trim_trailing(),
        "\n"
      ]
    end

    sep = ["  ", Enum.map_join(widths, "  ", &String.duplicate("-", &1)), "\n"]
    [line.(header), sep | Enum.map(rows, line)]
  end

  defp signed(n) when n >= 0, do: "+" <> fmt(n)
  defp signed(n), do: "-" <> fmt(-n)

  @doc "An integer with thousands separators."
  def fmt(n) when is_integer(n) do
    n
    |> Integer.to_string()
    |> String.reverse()
    |> String.replace(~r/(\d{3})(?=\d)/, "\\1,")
    |> String.reverse()
  end

  def fmt(other), do: to_string(other)
end
