defmodule RedixRs.Options.Cluster do
  # The options of a Redis Cluster client, in its two modes: `RedixRs.Cluster.start_link/1`
  # (`:cluster`) and `RedixRs.PubSub.start_link/1` with `:nodes` (`:pubsub`). Here are the cluster's
  # own options (their schema also writes their docs), the seed nodes, and the single-server options
  # a cluster cannot honour, refused with `ArgumentError`. Every other option is a node
  # connection's, validated by `RedixRs.Options.validate!/2` with the connection (`:plain`) or the
  # pub/sub schema.
  @moduledoc false

  alias RedixRs.{Options, Redact}

  @schema [
    name: [
      type: :cluster_name,
      default: nil,
      required: true,
      doc:
        "the atom the cluster is registered and addressed under " <>
          "(`RedixRs.Cluster.command(:name, ...)`, `RedixRs.command(:name, ...)`)"
    ],
    nodes: [
      type: :seeds,
      default: nil,
      required: true,
      doc:
        "a non-empty list of seed nodes, each a URI (`\"redis://host:port\"`, " <>
          "`\"rediss://host:port\"` for TLS on every node) or `[host: host, port: port]`; one " <>
          "reachable seed is enough, the rest of the cluster is discovered"
    ],
    sync_connect: [
      type: :boolean,
      default: false,
      doc:
        "discover the topology inside `start_link/1` (which fails if no seed answers) instead " <>
          "of in the background; calls made before the first discovery ends wait for it within " <>
          "their `:timeout`, and get `:closed` once it has failed"
    ],
    topology_refresh_interval: [
      type: :timeout,
      default: 30_000,
      doc:
        "milliseconds between topology refreshes (also refreshed after a `MOVED`, a node " <>
          "failure or `CLUSTERDOWN`, at most once a second)"
    ],
    read_from_replicas: [
      type: :boolean,
      default: false,
      doc:
        "also connect to every replica (with `READONLY`), so that `route: :replica` and " <>
          "`route: :prefer_replica` can read from them"
    ]
  ]

  # The cluster's own options in each mode. A cluster pub/sub takes its `:name` and `:sync_connect`
  # from the pub/sub schema, and has no replicas nor periodic refresh.
  @own_keys %{cluster: Keyword.keys(@schema), pubsub: [:nodes]}

  # Options that name one server or that a cluster cannot honour: refused when given at all.
  @refused %{
    cluster: [:host, :port, :sentinel, :exit_on_disconnection],
    pubsub: [:host, :port, :sentinel, :exit_on_disconnection, :fetch_client_id_on_connect]
  }

  @doc """
  Markdown describing the cluster options of `mode`: all of them for `RedixRs.Cluster`, `:nodes`
  for `RedixRs.PubSub`.
  """
  @spec docs(:cluster | :pubsub) :: String.t()
  def docs(mode) do
    @schema
    |> Keyword.take(@own_keys[mode])
    |> Enum.map(fn {key, spec} ->
      {key, Keyword.update!(spec, :doc, &(doc_prefix(mode, spec) <> &1))}
    end)
    |> Options.schema_docs()
  end

  defp doc_prefix(:cluster, spec), do: if(spec[:required], do: "(required) ", else: "")

  defp doc_prefix(:pubsub, _spec),
    do: "serve a Redis Cluster (see \"On a Redis Cluster\" above): "

  @doc """
  Validates the options of a cluster client. In `:cluster` mode returns `{cluster_opts,
  node_opts}`: the cluster's own (`:nodes` as `{host, port}` seeds) and the options of every node
  connection, validated as `RedixRs.Options.validate!/2` does. In `:pubsub` mode returns the
  `RedixRs.PubSub` options, every one filled in, plus `:nodes` as `{host, port}` seeds. Raises
  `ArgumentError`.
  """
  @spec validate!(keyword(), :cluster | :pubsub) :: {keyword(), keyword()} | keyword()
  def validate!(opts, mode) when is_list(opts) and mode in [:cluster, :pubsub] do
    unless Keyword.keyword?(opts) do
      raise ArgumentError,
            "expected a keyword list of options, got: #{inspect(Redact.term(opts))}"
    end

    refuse!(opts, @refused[mode])
    # Checked here, before the node options are, so that the valid options listed are a cluster's.
    node_keys = Options.keys(if mode == :cluster, do: :plain, else: :pubsub) -- @refused[mode]
    Options.known!(opts, Enum.uniq(@own_keys[mode] ++ node_keys))

    {own, node} = Keyword.split(opts, @own_keys[mode])

    own =
      for key <- @own_keys[mode] do
        spec = @schema[key]
        {key, check!(spec[:type], key, Keyword.get(own, key, spec[:default]))}
      end

    {seeds, tls} = Enum.unzip(own[:nodes])
    node = node |> tls!(Enum.any?(tls)) |> database!()
    own = Keyword.put(own, :nodes, seeds)

    case mode do
      :cluster -> {own, node |> Keyword.put(:name, nil) |> Options.validate!(:plain)}
      :pubsub -> node |> Options.validate!(:pubsub) |> Keyword.put(:nodes, seeds)
    end
  end

  def validate!(other, _mode) do
    raise ArgumentError,
          "expected a keyword list of options, got: #{inspect(Redact.term(other))}"
  end

  defp refuse!(opts, keys) do
    given = Enum.filter(keys, &Keyword.has_key?(opts, &1))

    case Enum.split_with(given, &(&1 in [:host, :port])) do
      {[], []} ->
        :ok

      {[_ | _] = address, _} ->
        raise ArgumentError,
              "#{inspect(address)} cannot be given to a cluster: list the seed nodes in :nodes"

      {[], [key | _]} ->
        raise ArgumentError, refused(key)
    end
  end

  defp refused(:sentinel), do: "Sentinel connections are not supported in cluster mode"

  defp refused(:exit_on_disconnection) do
    "the :exit_on_disconnection option is not supported in cluster mode: the cluster client " <>
      "handles the disconnections of its node connections itself"
  end

  defp refused(:fetch_client_id_on_connect) do
    "the :fetch_client_id_on_connect option is not supported in cluster mode: a cluster pub/sub " <>
      "has one connection per node"
  end

  defp check!(:cluster_name, _key, name) when is_atom(name) and name not in [nil, true, false],
    do: name

  defp check!(:cluster_name, key, nil),
    do: Options.invalid!(key, "an atom (the option is required)", nil)

  defp check!(:cluster_name, key, other), do: Options.invalid!(key, "an atom", other)
  defp check!(:seeds, _key, [_ | _] = nodes), do: Enum.map(nodes, &seed!/1)

  defp check!(:seeds, key, other) do
    Options.invalid!(
      key,
      "a non-empty list of URIs or [host: host, port: port] keyword lists",
      Redact.term(other)
    )
  end

  defp check!(type, key, value), do: Options.check!(type, key, value)

  # `rediss://` seeds turn TLS on for every node (and cannot be combined with `ssl: false`).
  defp tls!(node, false), do: node

  defp tls!(node, true) do
    if Keyword.get(node, :ssl) == false do
      raise ArgumentError,
            "a rediss:// seed node needs TLS, but ssl: false was given: every node of a " <>
              "cluster uses the same transport"
    end

    Keyword.put(node, :ssl, true)
  end

  defp database!(node) do
    case Keyword.get(node, :database) do
      db when db in [nil, 0, "0"] ->
        Keyword.delete(node, :database)

      db ->
        raise ArgumentError, "Redis Cluster only supports database 0, got: #{inspect(db)}"
    end
  end

  # A seed: `{{host, port}, tls?}`.
  defp seed!(uri) when is_binary(uri) do
    parsed = RedixRs.URI.to_start_options(uri)

    if Keyword.has_key?(parsed, :password) or Keyword.has_key?(parsed, :username) do
      raise ArgumentError,
            "credentials in a seed node URI are not supported (#{inspect(Redact.uri(uri))}): " <>
              "every node is authenticated alike, so pass :username and :password as options"
    end

    if parsed[:database] not in [nil, 0] do
      raise ArgumentError,
            "Redis Cluster only supports database 0, got a seed node URI with database " <>
              "#{inspect(parsed[:database])}"
    end

    if match?({:local, _}, parsed[:host]) do
      raise ArgumentError,
            "a seed node is a TCP address (a Redis Cluster has no Unix socket nodes), got: " <>
              inspect(Redact.uri(uri))
    end

    # As in `RedixRs.start_link/1`, a URI without host or port means localhost:6379.
    address = address!(parsed[:host] || "localhost", parsed[:port] || 6379, uri)
    {address, parsed[:ssl] == true}
  end

  defp seed!(kw) when is_list(kw) do
    if Keyword.keyword?(kw) and Keyword.keys(kw) -- [:host, :port] == [] do
      {address!(Keyword.get(kw, :host, "localhost"), Keyword.get(kw, :port, 6379), kw), false}
    else
      bad_seed!(kw)
    end
  end

  defp seed!(other), do: bad_seed!(other)

  defp address!(host, port, _seed) when is_binary(host) and port in 1..65_535, do: {host, port}
  defp address!(_host, _port, seed), do: bad_seed!(seed)

  defp bad_seed!(seed) do
    raise ArgumentError,
          "expected a seed node as a URI or [host: string, port: 1..65535], got: " <>
            inspect(Redact.term(seed))
  end
end
