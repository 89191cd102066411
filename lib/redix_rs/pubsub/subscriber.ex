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

  ## When the pub/sub process restarts

  A subscriber monitors its `RedixRs.PubSub` process. When `:pubsub` is a name (an atom,
  `{:global, term}`, `{:via, module, term}` or `{atom, node}`) and that process goes down, the
  subscriber waits for the name to be registered again (looking every 10 ms at first, then less
  often, up to every second; it keeps handling its messages and calls meanwhile) and subscribes
  again to all its channels, patterns and sharded channels: the new `:subscribed` messages reach
  `handle_info/2`, then messages reach the callbacks again. So a supervisor that restarts the
  pub/sub process needs no `:rest_for_one` strategy for its subscribers: the `:one_for_one` tree
  above works as it is.

  When `:pubsub` is a pid, the subscriber cannot find a restarted process: it stops with reason
  `{:pubsub_down, reason}` (and its supervisor restarts it). At start, a `:pubsub` that is not
  running makes `start_link/3` fail with `{:pubsub_down, :noproc}`.
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

    unless server?(subscriber_opts[:pubsub]) do
      raise ArgumentError,
            "the :pubsub option must be a pid or a name (an atom, {:global, term}, " <>
              "{:via, module, term} or {atom, node}), got: #{inspect(subscriber_opts[:pubsub])}"
    end

    GenServer.start_link(
      RedixRs.PubSub.Subscriber.Server,
      {module, arg, subscriber_opts},
      gen_opts
    )
  end

  defp server?(pid) when is_pid(pid), do: true
  defp server?(name) when is_atom(name) and name != nil, do: true
  defp server?({:global, _}), do: true
  defp server?({:via, module, _}) when is_atom(module), do: true
  defp server?({name, node}) when is_atom(name) and is_atom(node), do: true
  defp server?(_), do: false
end

defmodule RedixRs.PubSub.Subscriber.Server do
  # The GenServer behind a `RedixRs.PubSub.Subscriber` module: subscribes at init, turns pub/sub
  # messages into callbacks, and passes every other callback to the module.
  #
  # It monitors its pub/sub process. When that one goes down and `:pubsub` is a name, it waits for
  # the name to be registered again (polling on a timer, so its mailbox keeps being served) and
  # subscribes again to everything; when `:pubsub` is a pid, it stops with `{:pubsub_down, reason}`.
  @moduledoc false
  use GenServer

  # Between two looks for a restarted pub/sub process: from this, doubling up to the max.
  @retry_initial 10
  @retry_max 1_000

  defstruct [:module, :state, :pubsub, :subscriptions, :monitor, :retry]

  @impl true
  def init({module, arg, opts}) do
    case init_module(module, arg) do
      {:ok, state} -> start(module, state, opts, [])
      {:ok, state, extra} -> start(module, state, opts, [extra])
      other -> other
    end
  end

  defp init_module(module, arg) do
    if function_exported?(module, :init, 1), do: module.init(arg), else: {:ok, arg}
  end

  defp start(module, state, opts, extra) do
    s = %__MODULE__{
      module: module,
      state: state,
      pubsub: Keyword.fetch!(opts, :pubsub),
      subscriptions: subscriptions(opts)
    }

    # At start, a pub/sub process that is not there is an error, as before; a bad name raises.
    case subscribe_all(s) do
      {:ok, s} -> List.to_tuple([:ok, s | extra])
      {:error, reason} -> {:stop, {:pubsub_down, reason}}
    end
  end

  defp subscriptions(opts) do
    kinds = [channels: :subscribe, patterns: :psubscribe, shard_channels: :ssubscribe]
    for {key, fun} <- kinds, opts[key] not in [nil, []], do: {fun, opts[key]}
  end

  # Finds the pub/sub process, monitors it and subscribes to everything: `{:ok, s}`, or
  # `{:error, reason}` when it is not there (or went down meanwhile).
  defp subscribe_all(s) do
    case GenServer.whereis(s.pubsub) do
      nil ->
        {:error, :noproc}

      server ->
        monitor = Process.monitor(server)

        try do
          for {fun, names} <- s.subscriptions do
            {:ok, _ref} = apply(RedixRs.PubSub, fun, [server, names, self()])
          end

          {:ok, %{s | monitor: monitor, retry: nil}}
        catch
          :exit, reason ->
            Process.demonitor(monitor, [:flush])
            {:error, exit_reason(reason)}
        end
    end
  end

  defp exit_reason({reason, {GenServer, :call, _}}), do: reason
  defp exit_reason(reason), do: reason

  @impl true
  def handle_info({:redix_pubsub, _pid, _ref, type, props} = message, s)
      when type in [:message, :smessage, :pmessage] do
    result =
      case type do
        :pmessage ->
          s.module.handle_pmessage(props.pattern, props.channel, props.payload, s.state)

        _ ->
          s.module.handle_message(props.channel, props.payload, s.state)
      end

    wrap(result, s, message)
  end

  # The pub/sub process went down.
  def handle_info({:DOWN, ref, :process, _, reason}, %{monitor: ref} = s) do
    s = %{s | monitor: nil}

    if is_pid(s.pubsub) do
      # Nothing to follow: its supervisor restarts this process (and it is the supervisor's to
      # start it again with the new pid).
      {:stop, {:pubsub_down, reason}, s}
    else
      {:noreply, retry_later(s)}
    end
  end

  def handle_info({__MODULE__, :resubscribe, token}, %{retry: {token, _delay}} = s) do
    case subscribe_all(s) do
      {:ok, s} -> {:noreply, s}
      {:error, _not_yet} -> {:noreply, retry_later(s)}
    end
  end

  def handle_info(message, s) do
    if function_exported?(s.module, :handle_info, 2) do
      wrap(s.module.handle_info(message, s.state), s, message)
    else
      {:noreply, s}
    end
  end

  defp retry_later(s) do
    delay =
      case s.retry do
        nil -> @retry_initial
        {_token, previous} -> min(previous * 2, @retry_max)
      end

    token = make_ref()
    Process.send_after(self(), {__MODULE__, :resubscribe, token}, delay)
    %{s | retry: {token, delay}}
  end

  @impl true
  def handle_call(request, from, s) do
    unless function_exported?(s.module, :handle_call, 3) do
      raise "#{inspect(s.module)} received a call but does not define handle_call/3: #{inspect(request)}"
    end

    case s.module.handle_call(request, from, s.state) do
      {:reply, reply, state} -> {:reply, reply, %{s | state: state}}
      {:reply, reply, state, extra} -> {:reply, reply, %{s | state: state}, extra}
      {:stop, reason, reply, state} -> {:stop, reason, reply, %{s | state: state}}
      other -> wrap(other, s, request)
    end
  end

  @impl true
  def handle_cast(request, s), do: wrap(s.module.handle_cast(request, s.state), s, request)

  @impl true
  def handle_continue(continue, s),
    do: wrap(s.module.handle_continue(continue, s.state), s, continue)

  @impl true
  def terminate(reason, s) do
    if function_exported?(s.module, :terminate, 2), do: s.module.terminate(reason, s.state)
  end

  # Crash reports and `:sys.get_status/1` show passwords redacted: in the module's state, and in
  # a crash reason, which may hold a pub/sub connection's state (from a call that crashed it).
  # OTP 25+ calls format_status/1 (not declared by Elixir 1.14's GenServer, hence no @impl).
  def format_status(status), do: RedixRs.Redact.status(status)

  @impl true
  def format_status(reason, pdict_and_state), do: RedixRs.Redact.status(reason, pdict_and_state)

  defp wrap({:noreply, state}, s, _), do: {:noreply, %{s | state: state}}
  defp wrap({:noreply, state, extra}, s, _), do: {:noreply, %{s | state: state}, extra}
  defp wrap({:stop, reason, state}, s, _), do: {:stop, reason, %{s | state: state}}

  defp wrap(other, s, message) do
    raise ArgumentError,
          "#{inspect(s.module)} returned #{inspect(other)} for #{inspect(message)}; " <>
            "expected {:noreply, state} or {:stop, reason, state}"
  end
end
