# Scenario b on a Redis Cluster (3 primaries) beside the same load on one redis-server:
#
#     MIX_ENV=bench mix run bench/cluster.exs [rounds [primaries]]
#
# Prints ops/s (median of the rounds), and p50/p99 latency over every call of every round.
{rounds, primaries} =
  case System.argv() do
    [n] -> {String.to_integer(n), 3}
    [n, p] -> {String.to_integer(n), String.to_integer(p)}
    _ -> {5, 3}
  end

for {scenario, by_client} <- RedixRs.Bench.Cluster.run(rounds, primaries) do
  IO.puts("\n#{scenario} (#{rounds} rounds, alternating)")

  IO.puts(
    String.pad_trailing("client", 24) <>
      String.pad_leading("ops/s", 12) <>
      String.pad_leading("p50 µs", 10) <> String.pad_leading("p99 µs", 10)
  )

  for {client, results} <- Enum.sort(by_client) do
    rates = Enum.map(results, &(&1.ops / (&1.micros / 1_000_000))) |> Enum.sort()
    median = Enum.at(rates, div(length(rates), 2))
    lat = results |> Enum.flat_map(& &1.latencies) |> Enum.sort()
    p = fn q -> Enum.at(lat, min(length(lat) - 1, trunc(q * length(lat)))) end

    IO.puts(
      String.pad_trailing(to_string(client), 24) <>
        String.pad_leading(Integer.to_string(round(median)), 12) <>
        String.pad_leading(Integer.to_string(p.(0.5)), 10) <>
        String.pad_leading(Integer.to_string(p.(0.99)), 10)
    )
  end
end
