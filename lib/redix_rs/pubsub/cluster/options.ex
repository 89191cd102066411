defmodule RedixRs.PubSub.Cluster.Options do
  # The options of a `RedixRs.PubSub` started with `:nodes`: the seeds, and the single-server
  # options that make no sense on a cluster refused with `ArgumentError`; the rest is
  # `RedixRs.Options`'s pub/sub schema, applied to every node connection.
  @moduledoc false

  @doc """
  Validates the options of a cluster pub/sub (they hold `:nodes`); returns them with `:nodes` as a
  list of `{host, port}` and every `RedixRs.PubSub` option filled in.
  """
  @spec validate!(keyword()) :: keyword()
  def validate!(opts) do
    {nodes, rest} = Keyword.pop(opts, :nodes)

    for key <- [:host, :port, :sentinel], Keyword.has_key?(rest, key) do
      raise ArgumentError,
            "#{inspect(key)} cannot be used with :nodes (a cluster pub/sub connects to the " <>
              "cluster's nodes)"
    end

    if Keyword.get(rest, :exit_on_disconnection, false) do
      raise ArgumentError, ":exit_on_disconnection is not supported with :nodes"
    end

    if Keyword.get(rest, :fetch_client_id_on_connect, false) do
      raise ArgumentError,
            ":fetch_client_id_on_connect is not supported with :nodes (a cluster pub/sub has " <>
              "one connection per node)"
    end

    if Keyword.get(rest, :database, 0) not in [0, "0", nil] do
      raise ArgumentError,
            "a Redis Cluster has database 0 only, got: database: #{inspect(rest[:database])}"
    end

    {seeds, tls?} = seeds!(nodes)

    rest =
      cond do
        tls? and Keyword.get(rest, :ssl) == false ->
          raise ArgumentError, "a rediss:// node needs TLS, but ssl: false was given"

        tls? ->
          Keyword.put(rest, :ssl, true)

        true ->
          rest
      end

    rest
    |> Keyword.delete(:database)
    |> RedixRs.Options.validate!(:pubsub)
    |> Keyword.put(:nodes, seeds)
  end

  defp seeds!(nodes) when is_list(nodes) and nodes != [] do
    seeds = Enum.map(nodes, &seed!/1)
    {Enum.map(seeds, &elem(&1, 0)), Enum.any?(seeds, &elem(&1, 1))}
  end

  defp seeds!(other) do
    raise ArgumentError,
          "expected :nodes to be a non-empty list of URIs or [host: ..., port: ...] keyword " <>
            "lists, got: #{inspect(RedixRs.Redact.term(other))}"
  end

  defp seed!(uri) when is_binary(uri) do
    parsed = RedixRs.URI.to_start_options(uri)

    for key <- [:username, :password], Keyword.has_key?(parsed, key) do
      raise ArgumentError,
            "a :nodes URI cannot hold credentials (give :username and :password as options): " <>
              RedixRs.Redact.describe(uri)
    end

    if parsed[:host] == nil or match?({:local, _}, parsed[:host]) do
      raise ArgumentError, "a :nodes URI must name a TCP host, got: #{inspect(uri)}"
    end

    if Keyword.get(parsed, :database, 0) != 0 do
      raise ArgumentError, "a :nodes URI cannot select a database other than 0: #{inspect(uri)}"
    end

    {{parsed[:host], Keyword.get(parsed, :port, 6379)}, Keyword.get(parsed, :ssl, false)}
  end

  defp seed!(kw) when is_list(kw) do
    with true <- Keyword.keyword?(kw),
         [] <- Keyword.keys(kw) -- [:host, :port],
         host when is_binary(host) <- Keyword.get(kw, :host, "localhost"),
         port when is_integer(port) and port in 1..65_535 <- Keyword.get(kw, :port, 6379) do
      {{host, port}, false}
    else
      _ -> bad_seed!(kw)
    end
  end

  defp seed!(other), do: bad_seed!(other)

  defp bad_seed!(seed) do
    raise ArgumentError,
          "expected each of :nodes to be a URI or a [host: string, port: integer] keyword list, " <>
            "got: #{inspect(RedixRs.Redact.term(seed))}"
  end
end
