defmodule RedixRs.Bench.Report do
  @moduledoc false
  # Turns rounds of results into the summary `make bench` prints and writes: one markdown table of
  # medians and ranges (min-max) across rounds, per scenario and client, with ratios against redix_rs.
  #
  # A result is %{ops: count, micros: elapsed, latencies: [µs per call, may be sampled or empty]};
  # a suite's output is [{scenario, %{client => [result, one per round]}}] (the interface in
  # bench/README.md that RedixRs.Bench.Cluster, .Cache and .Latency implement).

  @doc "Operations per second of one result."
  def ops(%{ops: ops, micros: micros}) when micros > 0, do: ops / (micros / 1_000_000)

  @doc "The `p` percentile (0..1) of a result's latencies, or nil without any."
  def percentile(%{latencies: [_ | _] = l}, p) do
    sorted = Enum.sort(l)
    Enum.at(sorted, min(length(sorted) - 1, round(p * length(sorted))))
  end

  def percentile(_, _), do: nil

  @doc "Median of a list of numbers (nil for an empty one); the mean of the middle two for an even count."
  def median([]), do: nil

  def median(xs) do
    sorted = Enum.sort(xs)
    n = length(sorted)
    mid = div(n, 2)

    if rem(n, 2) == 1,
      do: Enum.at(sorted, mid),
      else: (Enum.at(sorted, mid - 1) + Enum.at(sorted, mid)) / 2
  end

  @doc """
  Statistics of one client's rounds: median, min and max of ops/s, and the medians across rounds of
  each round's p50 and p99 latency.
  """
  def stats(results) do
    rates = Enum.map(results, &ops/1)

    %{
      rounds: length(results),
      median: median(rates),
      min: Enum.min(rates),
      max: Enum.max(rates),
      p50: results |> Enum.map(&percentile(&1, 0.5)) |> Enum.reject(&is_nil/1) |> median(),
      p99: results |> Enum.map(&percentile(&1, 0.99)) |> Enum.reject(&is_nil/1) |> median()
    }
  end

  @doc "The client a scenario's ratios are taken against: :redix_rs, else the first redix_rs_* one."
  def reference(clients) do
    names = Enum.map(clients, &to_string/1)

    cond do
      "redix_rs" in names ->
        :redix_rs

      ref = Enum.find(Enum.sort(names), &String.starts_with?(&1, "redix_rs")) ->
        String.to_atom(ref)

      true ->
        nil
    end
  end

  @client_order [:redix_rs, :eredis, :redix]

  defp client_sort_key(client) do
    {Enum.find_index(@client_order, &(&1 == client)) || length(@client_order), to_string(client)}
  end

  @header "| scenario | client | median /s | range (min–max) | p50 µs | p99 µs | redix_rs ÷ client |\n" <>
            "|---|---|--:|--:|--:|--:|--:|"

  @doc "The summary table (markdown) of suites' results: [{scenario, %{client => [result]}}]."
  def table(scenarios) do
    rows =
      for {scenario, by_client} <- scenarios,
          by_client = Map.reject(by_client, fn {_, rs} -> rs == [] end),
          by_client != %{},
          stats = Map.new(by_client, fn {c, rs} -> {c, stats(rs)} end),
          ref = reference(Map.keys(stats)),
          {client, s} <- Enum.sort_by(stats, fn {c, _} -> client_sort_key(c) end) do
        ratio =
          cond do
            client == ref or ref == nil -> "—"
            true -> "#{:erlang.float_to_binary(stats[ref].median / s.median, decimals: 2)}×"
          end

        "| #{scenario} | #{client_name(client)} | #{rate(s.median)} | #{rate(s.min)}–#{rate(s.max)} | " <>
          "#{us(s.p50)} | #{us(s.p99)} | #{ratio} |"
      end

    Enum.join([@header | rows], "\n")
  end

  @doc "How a client is named in tables and pictures."
  def client_name(:redix), do: "Redix"
  def client_name(client), do: to_string(client)

  @doc "A rate, short: 950, 26.3k, 1.58M."
  def rate(nil), do: "-"
  def rate(x) when x >= 1_000_000, do: "#{:erlang.float_to_binary(x / 1_000_000, decimals: 2)}M"
  def rate(x) when x >= 10_000, do: "#{:erlang.float_to_binary(x / 1_000, decimals: 1)}k"
  def rate(x) when x >= 1_000, do: "#{:erlang.float_to_binary(x / 1_000, decimals: 2)}k"
  def rate(x), do: "#{round(x)}"

  @doc "A latency in µs: one decimal below 10."
  def us(nil), do: "-"
  def us(x) when x < 10, do: :erlang.float_to_binary(x / 1, decimals: 1)
  def us(x), do: "#{round(x)}"

  @doc """
  Puts `summary` (markdown) at the top of `path`, replacing the summary of the previous run: what
  stands before the first "## Optimisation log" heading. What follows it is kept as it is.
  """
  def update_results(path, summary) do
    marker = "## Optimisation log"
    old = if File.exists?(path), do: File.read!(path), else: ""

    rest =
      case :binary.match(old, marker) do
        {at, _} -> binary_part(old, at, byte_size(old) - at)
        :nomatch -> marker <> "\n\nWhat each change bought, newest last.\n"
      end

    File.write!(path, "# Benchmark results\n\n" <> summary <> "\n" <> rest)
  end
end
