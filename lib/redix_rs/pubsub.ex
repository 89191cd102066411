defmodule RedixRs.PubSub do
  @moduledoc """
  Pub/sub connections, with Redix's API and messages.

  A `RedixRs.PubSub` connection subscribes processes to channels, patterns and (Redis 7) sharded
  channels. Messages are parsed and routed in Rust; the pub/sub process only runs the native call
  that sends each batch of them to their subscribers, never handling messages one by one:

      {:ok, pubsub} = RedixRs.PubSub.start_link(host: "localhost", name: :redix_pubsub)
      {:ok, ref} = RedixRs.PubSub.subscribe(:redix_pubsub, "chat:1", self())

      receive do
        {:redix_pubsub, ^pubsub, ^ref, :subscribed, %{channel: "chat:1"}} -> :ok
      end

      # after someone runs PUBLISH chat:1 hello
      receive do
        {:redix_pubsub, ^pubsub, ^ref, :message, %{channel: "chat:1", payload: "hello"}} -> :ok
      end

  ## Messages

  Every message is `{:redix_pubsub, pubsub_pid, ref, type, properties}`, where `ref` is the same for
  every subscription of one subscriber process on one pub/sub connection:

    * `:subscribed` - `%{channel: channel}`, once Redis confirmed it (at once when the channel was
      already subscribed); `:psubscribed` - `%{pattern: pattern}`; `:ssubscribed` - `%{channel: channel}`
    * `:unsubscribed`, `:punsubscribed`, `:sunsubscribed` - as above, sent at once on unsubscribing
    * `:message` - `%{channel: channel, payload: payload}`
    * `:pmessage` - `%{channel: channel, pattern: pattern, payload: payload}`
    * `:smessage` - `%{channel: channel, payload: payload}` (sharded channels)

  A payload is usually a binary, but may be any Redis value: client-tracking invalidations
  (`CLIENT TRACKING on REDIRECT <id>`) reach subscribers of `"__redis__:invalidate"` as a
  `:message` whose payload is the list of invalidated keys, or `nil` when every key is (`FLUSHALL`).
  Under `protocol: :resp3` Redis sends them as `invalidate` push frames; they are delivered the same
  way, as a `:message` on `"__redis__:invalidate"`.
    * `:disconnected` - `%{error: %RedixRs.ConnectionError{}}`, once per subscriber when the connection
      is lost; after reconnecting every subscription is restored and confirmed again with
      `:subscribed` (or `:psubscribed`, `:ssubscribed`)

  A subscriber never receives a `:message` for a channel before its `:subscribed` for it, nor after its
  `:unsubscribed`. Subscribers are monitored: when one exits, it is unsubscribed, and Redis is told
  when it was the last subscriber of a channel.

  ## Subscribers

  A subscriber is a pid, of this node or of another one, as with Redix. A subscriber on another node
  gets its messages, in the same order, through a small local process that forwards them (the native
  side can send to local pids only); that process lives as long as the subscriber has a subscription
  (and, like the subscriber's monitor, ends when the subscriber exits or its node disconnects).
  Registered names and `{name, node}` tuples are refused with an `ArgumentError`, as is the pub/sub
  process's own pid: everything a caller passes is checked in the caller, and nothing it passes can
  make the `RedixRs.PubSub` process crash and cost other subscribers their subscriptions.

  Subscribing while the connection is down works: the subscription is made when it comes back.

  For supervised subscriber processes, see `RedixRs.PubSub.Subscriber`.

  ## On a Redis Cluster

  Started with `:nodes` (the cluster's seed nodes, as `RedixRs.Cluster` takes them: URIs or
  `[host: host, port: port]` keyword lists; one reachable seed is enough), a pub/sub client serves a
  Redis Cluster with the same functions and messages:

      {:ok, pubsub} = RedixRs.PubSub.start_link(nodes: ["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"])
      {:ok, ref} = RedixRs.PubSub.ssubscribe(pubsub, ["orders:{eu}", "orders:{us}"])

  It reads the cluster's slot map (`CLUSTER SHARDS`, or `CLUSTER SLOTS` before Redis 7) and opens one
  pub/sub connection per node that has something to serve:

    * `ssubscribe/3` and `sunsubscribe/3` send each sharded channel to the primary that owns its slot
      (CRC16 of the channel mod 16384, hashing only a non-empty `{hash tag}`), one command per slot.
      When the slot moves, Redis ends the subscription at the old owner (an unsolicited
      `sunsubscribe`); the slot map is read again (at most once a second) and the channel is
      subscribed at the new owner. Its subscribers see what they see when a connection is lost and
      comes back: `:disconnected`, with `%RedixRs.ConnectionError{reason: :slot_moved}` (messages
      published meanwhile may be lost), then `:ssubscribed` for the channel once the new owner
      confirmed it. A subscription a node refuses with `MOVED` (the slot map was out of date) is made
      at the slot's owner, with no `:disconnected`: it was never made. One refused with
      `CLUSTERDOWN` (a node set with `cluster-allow-pubsubshard-when-down no`) is made again after
      each refresh of the slot map until a node takes it.
    * `subscribe/3` and `psubscribe/3` are served by one node: a cluster sends every `PUBLISH` to
      every node.
    * A node connection that fails reconnects with the backoff options, as a single-server connection
      does: its subscribers get `:disconnected`, then `:subscribed`/`:ssubscribed` again. While a node
      is down the slot map is read every second, so after a failover its channels go to the promoted
      replica.
    * `ping/2` pings the node serving classic channels; `get_client_id/1` answers
      `{:error, %RedixRs.ConnectionError{reason: :client_id_not_stored}}` (there is one connection
      per node).

  Every other option applies to each node connection. The seeds and options are checked as
  `RedixRs.Cluster` checks them: `:host`, `:port`, `:sentinel`, `:exit_on_disconnection` and
  `:fetch_client_id_on_connect` raise `ArgumentError` when given (whatever their value), as do a
  `:database` other than 0, credentials or a database in a seed URI and a `unix://` seed; a
  `rediss://` seed turns TLS on for every node. Subscribers may be on other nodes, as with one server. With `sync_connect: true`, `start_link/1`
  returns once a seed gave the slot map, or `{:error, %RedixRs.ConnectionError{}}` when none did.

  ## Options

  The options of `RedixRs.start_link/1`, plus:

  #{RedixRs.Options.docs(:pubsub_only)}
  #{RedixRs.Options.cluster_docs(:pubsub)}

  Unlike Redix, a failed `sync_connect: true` start returns `{:error, %RedixRs.ConnectionError{}}`
  (Redix returns the bare reason for pub/sub connections), as `RedixRs.start_link/1` does.
  """

  alias RedixRs.ConnectionError
  alias RedixRs.PubSub.Connection

  @typedoc "A pub/sub connection: a pid or a name."
  @type connection() :: GenServer.server()

  @typedoc "A subscriber process: a pid, local or on another node."
  @type subscriber() :: pid()

  @typedoc """
  A message's payload: a binary, or any Redis value (the list of keys, or `nil`, of a
  client-tracking invalidation).
  """
  @type payload() :: binary() | nil | [payload()] | integer() | term()

  @doc """
  Starts a pub/sub connection with default options.

  ## Examples

      iex> {:ok, pubsub} = RedixRs.PubSub.start_link(port: RedixRs.Doctest.port())
      iex> is_pid(pubsub)
      true
  """
  @spec start_link() :: GenServer.on_start()
  def start_link, do: start_link([])

  @doc ~S"""
  Starts a pub/sub connection from options or a URI (see `RedixRs.start_link/1`).

  ## Examples

      iex> {:ok, pubsub} = RedixRs.PubSub.start_link("redis://localhost:#{RedixRs.Doctest.port()}")
      iex> RedixRs.PubSub.ping(pubsub)
      :ok
  """
  @spec start_link(binary() | keyword()) :: GenServer.on_start()
  def start_link(uri) when is_binary(uri), do: start_link(uri, [])

  def start_link(opts) do
    if is_list(opts) and Keyword.keyword?(opts) and Keyword.has_key?(opts, :nodes) do
      opts = RedixRs.Options.validate_cluster!(opts, :pubsub)
      RedixRs.Native.ensure_loaded!()
      RedixRs.PubSub.Cluster.start_link(opts)
    else
      opts = RedixRs.Options.validate!(opts, :pubsub)
      RedixRs.Native.ensure_loaded!()
      Connection.start_link(opts)
    end
  end

  @doc ~S"""
  Starts a pub/sub connection from a URI and options; the options win.

  ## Examples

      iex> {:ok, pubsub} = RedixRs.PubSub.start_link("redis://localhost:1", port: RedixRs.Doctest.port())
      iex> RedixRs.PubSub.ping(pubsub)
      :ok
  """
  @spec start_link(binary(), keyword()) :: GenServer.on_start()
  def start_link(uri, opts) when is_binary(uri) and is_list(opts) do
    uri |> RedixRs.URI.to_start_options() |> Keyword.merge(opts) |> start_link()
  end

  @doc """
  A child specification, from options, a URI, or `{uri, options}`.

  ## Examples

      iex> RedixRs.PubSub.child_spec(name: :events)
      %{id: RedixRs.PubSub, type: :worker, start: {RedixRs.PubSub, :start_link, [[name: :events]]}}
  """
  @spec child_spec(keyword() | binary() | {binary(), keyword()}) :: Supervisor.child_spec()
  def child_spec({uri, opts}) when is_binary(uri), do: spec([uri, opts])
  def child_spec(uri_or_opts), do: spec([uri_or_opts])

  defp spec(args), do: %{id: __MODULE__, type: :worker, start: {__MODULE__, :start_link, args}}

  @doc """
  Stops the pub/sub connection.

  ## Examples

      iex> {:ok, pubsub} = RedixRs.PubSub.start_link(port: RedixRs.Doctest.port())
      iex> RedixRs.PubSub.stop(pubsub)
      :ok
  """
  @spec stop(connection(), timeout()) :: :ok
  def stop(conn, timeout \\ :infinity), do: GenServer.stop(conn, :normal, timeout!(timeout))

  @doc """
  Subscribes `subscriber` to one channel or a list of channels.

  Returns `{:ok, ref}` at once; a `:subscribed` message per channel follows.

  ## Examples

      iex> {:ok, pubsub} = RedixRs.PubSub.start_link(port: RedixRs.Doctest.port())
      iex> {:ok, ref} = RedixRs.PubSub.subscribe(pubsub, "news", self())
      iex> receive do
      ...>   {:redix_pubsub, ^pubsub, ^ref, :subscribed, %{channel: "news"}} -> :subscribed
      ...> end
      :subscribed
  """
  @spec subscribe(connection(), String.t() | [String.t()], subscriber()) :: {:ok, reference()}
  def subscribe(conn, channels, subscriber \\ self()),
    do: change(conn, :subscribe, :channel, channels, subscriber)

  @doc """
  Subscribes `subscriber` to one pattern or a list of patterns (`PSUBSCRIBE`).

  ## Examples

      iex> {:ok, pubsub} = RedixRs.PubSub.start_link(port: RedixRs.Doctest.port())
      iex> {:ok, ref} = RedixRs.PubSub.psubscribe(pubsub, "news:*")
      iex> receive do
      ...>   {:redix_pubsub, ^pubsub, ^ref, :psubscribed, %{pattern: "news:*"}} -> :psubscribed
      ...> end
      :psubscribed
  """
  @spec psubscribe(connection(), String.t() | [String.t()], subscriber()) :: {:ok, reference()}
  def psubscribe(conn, patterns, subscriber \\ self()),
    do: change(conn, :subscribe, :pattern, patterns, subscriber)

  @doc """
  Subscribes `subscriber` to one sharded channel or a list of them (`SSUBSCRIBE`, Redis 7).

  ## Examples

      iex> {:ok, pubsub} = RedixRs.PubSub.start_link(port: RedixRs.Doctest.port())
      iex> {:ok, ref} = RedixRs.PubSub.ssubscribe(pubsub, "orders")
      iex> receive do
      ...>   {:redix_pubsub, ^pubsub, ^ref, :ssubscribed, %{channel: "orders"}} -> :ssubscribed
      ...> end
      :ssubscribed
  """
  @spec ssubscribe(connection(), String.t() | [String.t()], subscriber()) :: {:ok, reference()}
  def ssubscribe(conn, channels, subscriber \\ self()),
    do: change(conn, :subscribe, :shard, channels, subscriber)

  @doc """
  Unsubscribes `subscriber` from one channel or a list of channels; an `:unsubscribed` message per
  channel follows at once.

  ## Examples

      iex> {:ok, pubsub} = RedixRs.PubSub.start_link(port: RedixRs.Doctest.port())
      iex> RedixRs.PubSub.unsubscribe(pubsub, "news")
      :ok
  """
  @spec unsubscribe(connection(), String.t() | [String.t()], subscriber()) :: :ok
  def unsubscribe(conn, channels, subscriber \\ self()),
    do: change(conn, :unsubscribe, :channel, channels, subscriber)

  @doc """
  Unsubscribes `subscriber` from one pattern or a list of patterns.

  ## Examples

      iex> {:ok, pubsub} = RedixRs.PubSub.start_link(port: RedixRs.Doctest.port())
      iex> RedixRs.PubSub.punsubscribe(pubsub, "news:*")
      :ok
  """
  @spec punsubscribe(connection(), String.t() | [String.t()], subscriber()) :: :ok
  def punsubscribe(conn, patterns, subscriber \\ self()),
    do: change(conn, :unsubscribe, :pattern, patterns, subscriber)

  @doc """
  Unsubscribes `subscriber` from one sharded channel or a list of them.

  ## Examples

      iex> {:ok, pubsub} = RedixRs.PubSub.start_link(port: RedixRs.Doctest.port())
      iex> RedixRs.PubSub.sunsubscribe(pubsub, "orders")
      :ok
  """
  @spec sunsubscribe(connection(), String.t() | [String.t()], subscriber()) :: :ok
  def sunsubscribe(conn, channels, subscriber \\ self()),
    do: change(conn, :unsubscribe, :shard, channels, subscriber)

  @doc """
  The connection's client ID, fetched at connect time when `fetch_client_id_on_connect: true`.

  Returns `{:error, %RedixRs.ConnectionError{reason: :client_id_not_stored}}` without that option, and
  `reason: :closed` while disconnected.

  ## Examples

      iex> {:ok, pubsub} = RedixRs.PubSub.start_link(port: RedixRs.Doctest.port(), fetch_client_id_on_connect: true, sync_connect: true)
      iex> {:ok, id} = RedixRs.PubSub.get_client_id(pubsub)
      iex> is_integer(id)
      true
  """
  @spec get_client_id(connection()) :: {:ok, integer()} | {:error, ConnectionError.t()}
  def get_client_id(conn), do: GenServer.call(conn, :get_client_id)

  @doc """
  Pings the server through the pub/sub connection: `:ok`, or a `RedixRs.ConnectionError` with reason
  `:timeout` or `:closed`.

  ## Examples

      iex> {:ok, pubsub} = RedixRs.PubSub.start_link(port: RedixRs.Doctest.port())
      iex> RedixRs.PubSub.ping(pubsub)
      :ok
  """
  @spec ping(connection(), timeout()) :: :ok | {:error, ConnectionError.t()}
  def ping(conn, timeout \\ 5_000) do
    GenServer.call(conn, :ping, timeout!(timeout))
  catch
    :exit, {:timeout, _} -> {:error, %ConnectionError{reason: :timeout}}
  end

  # Everything is checked here, in the caller: the pub/sub process gets only what it can honour.
  defp change(conn, action, kind, names, subscriber) when is_pid(subscriber) do
    names = to_names!(names)

    case GenServer.call(conn, {action, kind, names, subscriber}) do
      {:refused, message} -> raise ArgumentError, message
      reply -> reply
    end
  end

  defp change(_conn, _action, _kind, _names, subscriber) do
    raise ArgumentError,
          "a subscriber must be a pid (of this node or another), got: #{inspect(subscriber)}"
  end

  defp to_names!(names) when is_list(names), do: list_of_names!(names, names)
  defp to_names!(nil), do: []
  defp to_names!(name), do: [to_name!(name)]

  defp list_of_names!([], _all), do: []
  defp list_of_names!([name | rest], all), do: [to_name!(name) | list_of_names!(rest, all)]

  defp list_of_names!(_improper, all),
    do: raise(ArgumentError, "expected a proper list of names, got: #{inspect(all)}")

  defp to_name!(name) when is_binary(name), do: name
  defp to_name!(name) when is_atom(name) or is_number(name), do: to_string(name)

  defp to_name!(name) do
    raise ArgumentError, "expected a channel or pattern name (a string), got: #{inspect(name)}"
  end

  defp timeout!(timeout) when timeout == :infinity or (is_integer(timeout) and timeout >= 0),
    do: timeout

  defp timeout!(timeout) do
    raise ArgumentError,
          "expected a timeout (a non-negative integer or :infinity), got: #{inspect(timeout)}"
  end
end
