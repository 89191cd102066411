defmodule RedixRs.Test.FakeSentinel do
  @moduledoc false
  # A sentinel that says what the test tells it, for what real sentinels cannot be made to do:
  # announce a promotion that left the clients of the promoted replica connected (real sentinels
  # promote with REPLICAOF NO ONE and CLIENT KILL in one transaction), or change their answer
  # without announcing it. The data nodes stay real servers.
  #
  # It answers `SENTINEL get-master-addr-by-name <any>` with its primary, `SENTINEL replicas <any>`
  # with its replicas (flags "slave"), `SUBSCRIBE <channel>` with a confirmation, anything else
  # with an error. Everything is on 127.0.0.1; the listener and every connection die with the
  # process that started it.
  #
  #     fake = FakeSentinel.start(primary_port, [replica_port])
  #     FakeSentinel.subscribers(fake)                      #=> 1
  #     FakeSentinel.announce(fake, new_primary, [replica]) # answers change, then +switch-master
  #     FakeSentinel.drop_subscribers(fake)                 # closes the subscribed connections

  defstruct [:pid, :port]

  @type t :: %__MODULE__{pid: pid(), port: :inet.port_number()}

  @doc "Starts a fake sentinel naming `primary` (a port) and `replicas` (ports)."
  @spec start(:inet.port_number(), [:inet.port_number()]) :: t()
  def start(primary, replicas) do
    {:ok, listener} =
      :gen_tcp.listen(0, [:binary, ip: {127, 0, 0, 1}, active: false, reuseaddr: true])

    {:ok, port} = :inet.port(listener)
    state = %{primary: primary, replicas: replicas, subscribers: %{}, subscribes: 0, drop?: false}
    pid = spawn_link(fn -> controller(state) end)
    :ok = :gen_tcp.controlling_process(listener, pid)
    send(pid, {:listen, listener})
    %__MODULE__{pid: pid, port: port}
  end

  @doc "The number of connections subscribed to a channel."
  @spec subscribers(t()) :: non_neg_integer()
  def subscribers(fake), do: call(fake, :subscribers)

  @doc """
  From now on names `primary` and `replicas`; then publishes `+switch-master` from the former
  primary to `primary` to every subscriber.
  """
  @spec announce(t(), :inet.port_number(), [:inet.port_number()]) :: :ok
  def announce(fake, primary, replicas), do: call(fake, {:announce, primary, replicas, true})

  @doc "From now on names `primary` and `replicas`, without announcing it."
  @spec change(t(), :inet.port_number(), [:inet.port_number()]) :: :ok
  def change(fake, primary, replicas), do: call(fake, {:announce, primary, replicas, false})

  @doc "From now on closes each connection right after confirming its subscription (if `drop?`)."
  @spec drop_on_subscribe(t(), boolean()) :: :ok
  def drop_on_subscribe(fake, drop?), do: call(fake, {:drop_on_subscribe, drop?})

  @doc "How many subscriptions it has confirmed since it started."
  @spec subscribes(t()) :: non_neg_integer()
  def subscribes(fake), do: call(fake, :subscribes)

  @doc "Closes every subscribed connection."
  @spec drop_subscribers(t()) :: :ok
  def drop_subscribers(fake), do: call(fake, :drop_subscribers)

  defp call(%__MODULE__{pid: pid}, request) do
    ref = make_ref()
    send(pid, {:call, self(), ref, request})

    receive do
      {^ref, reply} -> reply
    after
      5_000 -> raise "FakeSentinel: no answer to #{inspect(request)}"
    end
  end

  ## The controller: holds the answers and the subscribers

  defp controller(state) do
    receive do
      {:listen, listener} ->
        controller = self()
        spawn_link(fn -> accept(listener, controller) end)
        controller(state)

      {:accepted, handler} ->
        Process.monitor(handler)
        controller(state)

      {:state, handler} ->
        send(handler, {:state, state.primary, state.replicas})
        controller(state)

      {:subscribe, handler} when state.drop? ->
        # The handler sends the confirmation before it reads this.
        send(handler, :close)
        controller(%{state | subscribes: state.subscribes + 1})

      {:subscribe, handler} ->
        subscribers = Map.put(state.subscribers, handler, true)
        controller(%{state | subscribers: subscribers, subscribes: state.subscribes + 1})

      {:DOWN, _ref, :process, handler, _reason} ->
        controller(%{state | subscribers: Map.delete(state.subscribers, handler)})

      {:call, from, ref, :subscribers} ->
        send(from, {ref, map_size(state.subscribers)})
        controller(state)

      {:call, from, ref, :subscribes} ->
        send(from, {ref, state.subscribes})
        controller(state)

      {:call, from, ref, {:drop_on_subscribe, drop?}} ->
        send(from, {ref, :ok})
        controller(%{state | drop?: drop?})

      {:call, from, ref, :drop_subscribers} ->
        Enum.each(Map.keys(state.subscribers), &send(&1, :close))
        send(from, {ref, :ok})
        controller(%{state | subscribers: %{}})

      {:call, from, ref, {:announce, primary, replicas, publish?}} ->
        payload = "mymaster 127.0.0.1 #{state.primary} 127.0.0.1 #{primary}"

        if publish? do
          Enum.each(Map.keys(state.subscribers), &send(&1, {:push, payload}))
        end

        send(from, {ref, :ok})
        controller(%{state | primary: primary, replicas: replicas})
    end
  end

  defp accept(listener, controller) do
    case :gen_tcp.accept(listener) do
      {:ok, socket} ->
        handler = spawn(fn -> handler_init(controller) end)
        :ok = :gen_tcp.controlling_process(socket, handler)
        send(handler, {:socket, socket})
        send(controller, {:accepted, handler})
        accept(listener, controller)

      {:error, _closed} ->
        :ok
    end
  end

  ## One connection

  defp handler_init(controller) do
    # Dies with the controller (which dies with the test).
    Process.monitor(controller)

    receive do
      {:socket, socket} ->
        :ok = :inet.setopts(socket, active: true)
        handle(socket, controller, "")
    end
  end

  defp handle(socket, controller, buffer) do
    receive do
      {:tcp, ^socket, data} ->
        handle(socket, controller, answer(socket, controller, buffer <> data))

      {:push, payload} ->
        :gen_tcp.send(socket, [
          "*3\r\n",
          bulk("message"),
          bulk("+switch-master"),
          bulk(payload)
        ])

        handle(socket, controller, buffer)

      :close ->
        :gen_tcp.close(socket)

      {:tcp_closed, ^socket} ->
        :ok

      {:DOWN, _, :process, ^controller, _} ->
        :gen_tcp.close(socket)
    end
  end

  # Answers every complete command in `buffer`; returns the rest.
  defp answer(socket, controller, buffer) do
    # Commands are arrays of bulk strings: RedixRs.Protocol reads them (an empty buffer included).
    case buffer != "" and RedixRs.Protocol.parse(buffer) do
      {:ok, command, rest} ->
        :gen_tcp.send(socket, reply(Enum.map(command, &String.downcase/1), command, controller))
        answer(socket, controller, rest)

      _incomplete ->
        buffer
    end
  end

  defp reply(["sentinel", "get-master-addr-by-name", _group], _, controller) do
    {primary, _replicas} = state(controller)
    ["*2\r\n", bulk("127.0.0.1"), bulk(Integer.to_string(primary))]
  end

  defp reply(["sentinel", "replicas", _group], _, controller) do
    {_primary, replicas} = state(controller)

    fields =
      Enum.map(replicas, fn port ->
        [
          "*6\r\n",
          Enum.map(
            ["ip", "127.0.0.1", "port", Integer.to_string(port), "flags", "slave"],
            &bulk/1
          )
        ]
      end)

    ["*#{length(replicas)}\r\n" | fields]
  end

  defp reply(["subscribe", _channel], [_, channel], controller) do
    send(controller, {:subscribe, self()})
    ["*3\r\n", bulk("subscribe"), bulk(channel), ":1\r\n"]
  end

  defp reply(_other, _command, _controller), do: "-ERR not in this fake\r\n"

  defp state(controller) do
    send(controller, {:state, self()})

    receive do
      {:state, primary, replicas} -> {primary, replicas}
    end
  end

  defp bulk(value), do: ["$#{byte_size(value)}\r\n", value, "\r\n"]
end
