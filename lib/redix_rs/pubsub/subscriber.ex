defmodule RedixRs.PubSub.Subscriber do
  @moduledoc """
  A behaviour for supervised subscriber processes.

  A module that does `use RedixRs.PubSub.Subscriber` is a `GenServer` that subscribes itself, when
  it starts, to the channels and patterns it is given, and gets each message through a callback:

      defmodule MyAppWeb.ChatListener do
        use RedixRs.PubSub.Subscriber

        def start_link(room) do
          RedixRs.PubSub.Subscriber.start_link(__MODULE__, room,
            pubsub: :redix_pubsub,
            channels: ["chat:" <> room],
            patterns: ["presence:*"]
          )
        end

        @impl RedixRs.PubSub.Subscriber
        def handle_message("chat:" <> _ = channel, payload, room) do
          MyAppWeb.Endpoint.broadcast(channel, "new_msg", %{body: payload})
          {:noreply, room}
        end

        @impl RedixRs.PubSub.Subscriber
        def handle_pmessage(_pattern, channel, payload, room) do
          MyAppWeb.Endpoint.broadcast(channel, "presence", %{who: payload})
          {:noreply, room}
        end
      end

      # in the application's supervision tree
      children = [
        {RedixRs.PubSub, name: :redix_pubsub, host: "localhost"},
        {MyAppWeb.ChatListener, "lobby"}
      ]

  `init/1` is optional (the default keeps the argument as the state). Any other `GenServer`
  callback the module defines (`handle_call/3`, `handle_cast/2`, `handle_info/2`,
  `handle_continue/2`, `terminate/2`) is called as usual (a call to a module without
  `handle_call/3` crashes the subscriber, as in a GenServer); `handle_info/2` also receives the pub/sub messages this behaviour does not
  turn into callbacks (`:subscribed`, `:disconnected`, ...).

  Subscriptions follow the pub/sub connection: after a reconnect they are restored, and
  `:disconnected` and `:subscribed` messages reach `handle_info/2` if defined.
  """

  @doc "Called once the subscriber process starts; returns its state."
  @callback init(arg :: term()) :: {:ok, state :: term()} | {:stop, reason :: term()}

  @doc "A message published on a subscribed channel (or sharded channel)."
  @callback handle_message(
              channel :: binary(),
              payload :: RedixRs.PubSub.payload(),
              state :: term()
            ) ::
              {:noreply, term()} | {:stop, reason :: term(), term()}

  @doc "A message published on a channel that matched a subscribed pattern."
  @callback handle_pmessage(
              pattern :: binary(),
              channel :: binary(),
              payload :: RedixRs.PubSub.payload(),
              state :: term()
            ) ::
              {:noreply, term()} | {:stop, reason :: term(), term()}

  @optional_callbacks init: 1, handle_pmessage: 4

  defmacro __using__(_opts) do
    quote do
      @behaviour RedixRs.PubSub.Subscriber

      @doc false
      def child_spec(arg) do
        %{id: __MODULE__, start: {__MODULE__, :start_link, [arg]}}
      end

      defoverridable child_spec: 1
    end
  end

  @typedoc """
  Options of `start_link/3`: `:pubsub` (the `RedixRs.PubSub` connection, required), `:channels`,
  `:patterns` and `:shard_channels` (lists of names), and `GenServer` options (`:name`, ...).
  """
  @type option() ::
          {:pubsub, RedixRs.PubSub.connection()}
          | {:channels, [String.t()]}
          | {:patterns, [String.t()]}
          | {:shard_channels, [String.t()]}
          | GenServer.option()

  @doc """
  Starts a subscriber process running `module`'s callbacks with `arg`.

  ## Examples

      iex> defmodule DocListener do
      ...>   use RedixRs.PubSub.Subscriber
      ...>   def handle_message(channel, payload, test), do: send(test, {channel, payload}) && {:noreply, test}
      ...> end
      iex> {:ok, pubsub} = RedixRs.PubSub.start_link(port: RedixRs.Doctest.port())
      iex> {:ok, _} = RedixRs.PubSub.Subscriber.start_link(DocListener, self(), pubsub: pubsub, channels: ["doc:news"])
      iex> RedixRs.PubSub.ping(pubsub)  # answered after the SUBSCRIBE sent at start
      :ok
      iex> RedixRs.command!(:redix, ["PUBLISH", "doc:news", "hi"])
      1
      iex> receive do
      ...>   {"doc:news", payload} -> payload
      ...> end
      "hi"
  """
  @spec start_link(module(), term(), [option()]) :: GenServer.on_start()
  def start_link(module, arg, opts) do
    {subscriber_opts, gen_opts} =
      Keyword.split(opts, [:pubsub, :channels, :patterns, :shard_channels])

    unless Keyword.has_key?(subscriber_opts, :pubsub) do
      raise ArgumentError, "the :pubsub option (a RedixRs.PubSub connection) is required"
    end

    GenServer.start_link(
      RedixRs.PubSub.Subscriber.Server,
      {module, arg, subscriber_opts},
      gen_opts
    )
  end
end

defmodule RedixRs.PubSub.Subscriber.Server do
  # The GenServer behind a `RedixRs.PubSub.Subscriber` module: subscribes at init, turns pub/sub
  # messages into callbacks, and passes every other callback to the module.
  @moduledoc false
  use GenServer

  @impl true
  def init({module, arg, opts}) do
    case init_module(module, arg) do
      {:ok, state} ->
        subscribe_all(opts)
        {:ok, {module, state}}

      {:ok, state, extra} ->
        subscribe_all(opts)
        {:ok, {module, state}, extra}

      other ->
        other
    end
  end

  defp subscribe_all(opts) do
    pubsub = Keyword.fetch!(opts, :pubsub)
    subscribe(pubsub, &RedixRs.PubSub.subscribe/3, opts[:channels])
    subscribe(pubsub, &RedixRs.PubSub.psubscribe/3, opts[:patterns])
    subscribe(pubsub, &RedixRs.PubSub.ssubscribe/3, opts[:shard_channels])
  end

  defp init_module(module, arg) do
    if function_exported?(module, :init, 1), do: module.init(arg), else: {:ok, arg}
  end

  defp subscribe(_pubsub, _fun, names) when names in [nil, []], do: :ok
  defp subscribe(pubsub, fun, names), do: {:ok, _ref} = fun.(pubsub, names, self())

  @impl true
  def handle_info({:redix_pubsub, _pid, _ref, type, props} = message, {module, state})
      when type in [:message, :smessage, :pmessage] do
    result =
      case type do
        :pmessage -> module.handle_pmessage(props.pattern, props.channel, props.payload, state)
        _ -> module.handle_message(props.channel, props.payload, state)
      end

    wrap(result, module, message)
  end

  def handle_info(message, {module, state}) do
    if function_exported?(module, :handle_info, 2) do
      wrap(module.handle_info(message, state), module, message)
    else
      {:noreply, {module, state}}
    end
  end

  @impl true
  def handle_call(request, from, {module, state}) do
    unless function_exported?(module, :handle_call, 3) do
      raise "#{inspect(module)} received a call but does not define handle_call/3: #{inspect(request)}"
    end

    case module.handle_call(request, from, state) do
      {:reply, reply, state} -> {:reply, reply, {module, state}}
      {:reply, reply, state, extra} -> {:reply, reply, {module, state}, extra}
      {:stop, reason, reply, state} -> {:stop, reason, reply, {module, state}}
      other -> wrap(other, module, request)
    end
  end

  @impl true
  def handle_cast(request, {module, state}),
    do: wrap(module.handle_cast(request, state), module, request)

  @impl true
  def terminate(reason, {module, state}) do
    if function_exported?(module, :terminate, 2), do: module.terminate(reason, state)
  end

  # Crash reports and `:sys.get_status/1` show passwords redacted: in the module's state, and in
  # a crash reason, which may hold a pub/sub connection's state (from a call that crashed it).
  # OTP 25+ calls format_status/1 (not declared by Elixir 1.14's GenServer, hence no @impl).
  def format_status(status), do: RedixRs.Redact.status(status)

  @impl true
  def format_status(reason, pdict_and_state), do: RedixRs.Redact.status(reason, pdict_and_state)

  defp wrap({:noreply, state}, module, _), do: {:noreply, {module, state}}
  defp wrap({:noreply, state, extra}, module, _), do: {:noreply, {module, state}, extra}
  defp wrap({:stop, reason, state}, module, _), do: {:stop, reason, {module, state}}

  defp wrap(other, module, message) do
    raise ArgumentError,
          "#{inspect(module)} returned #{inspect(other)} for #{inspect(message)}; " <>
            "expected {:noreply, state} or {:stop, reason, state}"
  end
end
