defmodule RedixRs.PubSub.Cluster do
  # The process behind a `RedixRs.PubSub` started with `:nodes`: pub/sub on a Redis Cluster.
  #
  # It owns one native pub/sub connection (the handle `RedixRs.PubSub.Connection` uses for one
  # server) per node that has something to serve: the node owning the slot of each subscribed shard
  # channel (`SSUBSCRIBE` is served by the slot's primary only), and one node, any node, for classic
  # channels and patterns (a cluster broadcasts `PUBLISH` to every node). It is the owner of all
  # those handles, so every message names this process, carries the subscriber's one reference, and
  # has this process as its one sender (it runs `pubsub_drain/2` for each handle). A subscriber on
  # another node is reached through a relay (`RedixRs.PubSub.Relay`), as with one server.
  #
  # The slot map comes from `CLUSTER SHARDS` (`CLUSTER SLOTS` before Redis 7), asked of one node at a
  # time by `RedixRs.Native.cluster_pubsub_discover/2`. It is refreshed (at most once a second) when
  # Redis ends a shard subscription on its own (`sunsubscribe` for a slot that moved: the native side
  # tells this process `{:redix_rs_pubsub_ended, id, channel}`), when a node refuses a subscription
  # (`MOVED`, `ASK`, `CLUSTERDOWN`, `TRYAGAIN`: tried again after each refresh), and when a node
  # connection fails. After each refresh, shard channels whose slot has
  # another owner are subscribed there, and node connections that serve nothing are closed.
  #
  # What subscribers see (documented in `RedixRs.PubSub`): node connection failures as with one
  # server (`:disconnected` from that node's handle, then `:ssubscribed`/`:subscribed` again once
  # subscribed anew); a slot that moved, `:disconnected` (reason `:slot_moved`) then `:ssubscribed`
  # from the new owner.
  @moduledoc false
  use GenServer

  require Logger

  alias RedixRs.{ConnectionError, Connector, Native}
  alias RedixRs.PubSub.Subscriptions

  # At most one topology refresh per this many milliseconds.
  @refresh_interval 1_000

  # A refusal that routing answers: the node's slot map differs from ours (`MOVED`, `ASK`), or the
  # cluster cannot serve the slot now (`CLUSTERDOWN`, `TRYAGAIN`).
  defguardp is_routing_error(message)
            when binary_part(message, 0, 3) in ["MOV", "ASK", "CLU", "TRY"]

  defstruct [
    :opts,
    # [{host, port}] as given
    :seeds,
    # [{first_slot, last_slot, {host, port}}], nil before the first discovery
    :ranges,
    # The discovery in flight: %{ref: ref, addr: addr, rest: [addr]}
    :discovery,
    :last_refresh,
    :refresh_timer,
    :discovery_backoff,
    # The node asked first at the next refresh (the one that ended a subscription knows the slot's
    # new owner).
    :hint,
    # The node serving classic channels and patterns.
    :classic,
    refresh_again: false,
    # {host, port} => %{handle, id, status: :connecting | :connected | :backoff, backoff}
    nodes: %{},
    # native id => {host, port}
    ids: %{},
    # shard channel => the node it is subscribed at
    placed: %{},
    # Who subscribed to what (kept by `RedixRs.PubSub.Subscriptions`, which says what each holds).
    subscriptions: %{},
    subscribers: %{},
    refs: %{},
    relays: %{},
    retiring: %{},
    relay_monitors: %{},
    # {ref, from} of pings in flight on the classic node
    pings: %{},
    # pings waiting for the classic node to connect
    waiting: [],
    connected_before: MapSet.new()
  ]

  ## Start

  def start_link(opts), do: Connector.start_link(__MODULE__, opts)

  @impl true
  def init(opts) do
    state = %__MODULE__{opts: Keyword.delete(opts, :nodes), seeds: opts[:nodes]}

    if opts[:sync_connect] do
      case discover_synchronously(state, state.seeds, nil) do
        {:ok, state} -> {:ok, state}
        {:error, error} -> {:stop, error}
      end
    else
      {:ok, state, {:continue, :discover}}
    end
  end

  @impl true
  def handle_continue(:discover, state), do: {:noreply, start_discovery(state)}

  ## Calls

  @impl true
  def handle_call({action, _kind, _names, pid}, _from, state)
      when action in [:subscribe, :unsubscribe] and pid == self() do
    {:reply, {:refused, "a subscriber cannot be the pub/sub connection itself"}, state}
  end

  def handle_call({:subscribe, kind, names, pid}, _from, state) do
    {ref, new, state} = Subscriptions.add(state, kind, names, pid)

    state =
      case kind do
        :shard -> subscribe_shards(state, names, new, pid, ref)
        _ -> subscribe_classic(state, kind, names, new, pid, ref)
      end

    {:reply, {:ok, ref}, state}
  end

  def handle_call({:unsubscribe, kind, names, pid}, _from, state) do
    ref = Map.get(state.subscribers, pid) || make_ref()
    # A remote pid that subscribed to nothing gets a relay for this call's messages.
    {sender, state} = Subscriptions.sender(state, pid)
    {state, emptied} = Subscriptions.remove(state, kind, names, pid)

    names
    |> Enum.group_by(&node_of(state, kind, &1))
    |> Enum.each(fn {addr, names} ->
      case connected_handle(state, addr) do
        nil ->
          Enum.each(
            names,
            &send(sender, Subscriptions.unsubscribed(ref, kind, &1))
          )

        handle ->
          redis = Enum.filter(names, &(&1 in emptied))

          by_slot(kind, names, redis, fn names, redis ->
            op(state, handle, :unsubscribe, kind, names, pid, ref, redis)
          end)
          |> then(&drain(state, addr, &1))
      end
    end)

    state =
      if kind == :shard,
        do: %{state | placed: Map.drop(state.placed, emptied)},
        else: state

    state = state |> Subscriptions.forget_if_idle(pid) |> close_idle_nodes()
    {:reply, :ok, state}
  end

  def handle_call(:get_client_id, _from, state) do
    {:reply, {:error, %ConnectionError{reason: :client_id_not_stored}}, state}
  end

  # A ping goes to the node of classic subscriptions, connected to for it if need be; as on one
  # server, one made while connecting waits for it (bounded by the caller's timeout).
  def handle_call(:ping, from, state) do
    case state.nodes[state.classic] do
      %{status: :connected, handle: handle} ->
        {:noreply, ping(state, handle, from)}

      %{status: :backoff} ->
        {:reply, {:error, %ConnectionError{reason: :closed}}, state}

      _ when state.classic == nil and state.discovery == nil ->
        {:reply, {:error, %ConnectionError{reason: :closed}}, state}

      _ ->
        {:noreply, ensure_nodes(%{state | waiting: [from | state.waiting]})}
    end
  end

  ## Messages

  @impl true
  def handle_info({ref, result}, %{discovery: %{ref: ref}} = state) do
    {:noreply, discovered(state, result)}
  end

  def handle_info(:refresh, state) do
    {:noreply, start_discovery(%{state | refresh_timer: nil})}
  end

  def handle_info({:redix_rs_native, id, event}, state) do
    case state.ids do
      %{^id => addr} -> node_event(state, addr, event)
      _ -> {:noreply, state}
    end
  end

  def handle_info({:reconnect, addr}, state) do
    case state.nodes do
      %{^addr => %{status: :backoff}} -> {:noreply, connect_node(state, addr)}
      _ -> {:noreply, state}
    end
  end

  def handle_info({:redix_rs_pubsub_drain, id}, state) do
    with %{^id => addr} <- state.ids, %{handle: handle} <- state.nodes[addr] do
      case Native.pubsub_drain(handle, state.refs) do
        {:more, _sent} -> send(self(), {:redix_rs_pubsub_drain, id})
        {:done, _sent} -> :ok
      end
    end

    {:noreply, state}
  end

  # Redis ended a shard subscription on its own: its slot moved. Subscribed again at the new owner
  # once the slot map says which node that is.
  def handle_info({:redix_rs_pubsub_ended, id, channel}, state) do
    with %{^id => addr} <- state.ids,
         %{^channel => ^addr} <- state.placed,
         %{handle: handle} <- state.nodes[addr] do
      pids = Map.get(state.subscriptions, {:shard, channel}, MapSet.new())
      state = unplace(state, handle, [channel], addr)
      # What the old owner delivered goes out first.
      Subscriptions.drain_all(handle, state.refs)
      error = %ConnectionError{reason: :slot_moved}

      Enum.each(pids, fn pid ->
        message = {:redix_pubsub, self(), state.subscribers[pid], :disconnected, %{error: error}}
        send(Subscriptions.target(state, pid), message)
      end)

      {:noreply, state}
    else
      _ -> {:noreply, state}
    end
  end

  # A node refused shard channels because its slot map differs from ours (`MOVED`, or `ASK` while
  # the slot migrates) or it cannot serve them now (`CLUSTERDOWN`, `TRYAGAIN`): they are taken off
  # that node and placed again after a refresh (which asks the node `MOVED` names first), so they are
  # subscribed at the slot's owner, or refused again and tried at the next refresh (one a second).
  # Their subscribers were never told `:ssubscribed`, so they are told nothing. (A refused
  # SUNSUBSCRIBE: the slot left that node, and its subscriptions with it; nothing to undo.)
  def handle_info(
        {:redix_rs_pubsub_rejected, %RedixRs.Error{message: message},
         {id, action, :shard, names}},
        state
      )
      when is_routing_error(message) do
    with :subscribe <- action,
         %{^id => addr} <- state.ids,
         %{handle: handle} <- state.nodes[addr] do
      refused = Enum.filter(names, &(Map.get(state.placed, &1) == addr))
      {:noreply, unplace(state, handle, refused, moved_to(message, state))}
    else
      _ -> {:noreply, state}
    end
  end

  def handle_info({:redix_rs_pubsub_rejected, %RedixRs.Error{message: message}, _what}, state) do
    Logger.error(
      "RedixRs.PubSub #{inspect(state.opts[:name] || self())}: Redis refused a subscription: #{message}"
    )

    {:noreply, state}
  end

  def handle_info({ref, result, _reply}, state) when is_map_key(state.pings, ref) do
    {from, pings} = Map.pop(state.pings, ref)

    GenServer.reply(
      from,
      if(result == :ok, do: :ok, else: {:error, %ConnectionError{reason: :disconnected}})
    )

    {:noreply, %{state | pings: pings}}
  end

  def handle_info({:DOWN, ref, :process, pid, _reason}, state) do
    case state.subscribers do
      %{^pid => ^ref} -> {:noreply, drop_subscriber(state, pid, ref)}
      _ -> {:noreply, Subscriptions.relay_ended(state, ref, pid)}
    end
  end

  def handle_info(_unexpected, state), do: {:noreply, state}

  def format_status(status), do: RedixRs.Redact.status(status)

  @impl true
  def format_status(reason, pdict_and_state), do: RedixRs.Redact.status(reason, pdict_and_state)

  ## Topology

  # The node a `MOVED` error names (it owns the slot, so its map says so), else the current hint.
  defp moved_to("MOVED " <> where, state) do
    with [_slot, address] <- String.split(where, " "),
         [host, port] when host != "" <- String.split(address, ":"),
         {port, ""} <- Integer.parse(port) do
      {host, port}
    else
      _ -> state.hint
    end
  end

  defp moved_to(_message, state), do: state.hint

  defp discover_synchronously(_state, [], last_error) do
    {:error, %ConnectionError{reason: last_error || :closed}}
  end

  defp discover_synchronously(state, [addr | rest], _last_error) do
    ref = make_ref()
    :ok = Native.cluster_pubsub_discover(config(state, addr, :plain), ref)

    timeout =
      if state.opts[:timeout] == :infinity, do: :infinity, else: 2 * state.opts[:timeout] + 1_000

    receive do
      {^ref, {:ok, _} = result} ->
        {:ok, discovered(%{state | discovery: %{ref: ref, addr: addr, rest: []}}, result)}

      {^ref, {:error, reason}} ->
        Connector.emit(:failed_connection, node_opts(state, addr), %{
          reason: %ConnectionError{reason: reason}
        })

        discover_synchronously(state, rest, reason)
    after
      timeout -> discover_synchronously(state, rest, :timeout)
    end
  end

  # Asks for a refresh: now, or after the last one is a second old, or after the one in flight.
  defp request_refresh(state) do
    now = System.monotonic_time(:millisecond)

    cond do
      state.discovery != nil ->
        %{state | refresh_again: true}

      state.refresh_timer != nil ->
        state

      state.last_refresh == nil or now - state.last_refresh >= @refresh_interval ->
        start_discovery(state)

      true ->
        timer =
          Process.send_after(self(), :refresh, @refresh_interval - (now - state.last_refresh))

        %{state | refresh_timer: timer}
    end
  end

  # Asks the hinted node first, then the nodes the slot map knows, then the seeds.
  defp start_discovery(%{discovery: nil} = state) do
    known = for {_, _, addr} <- state.ranges || [], do: addr
    candidates = Enum.uniq(Enum.reject([state.hint], &is_nil/1) ++ known ++ state.seeds)

    state = %{
      state
      | hint: nil,
        refresh_again: false,
        last_refresh: System.monotonic_time(:millisecond)
    }

    ask(state, candidates)
  end

  defp start_discovery(state), do: %{state | refresh_again: true}

  defp ask(state, [addr | rest]) do
    ref = make_ref()
    :ok = Native.cluster_pubsub_discover(config(state, addr, :plain), ref)
    %{state | discovery: %{ref: ref, addr: addr, rest: rest}}
  end

  # Nobody answered: try again after a backoff.
  defp ask(state, []) do
    backoff = Connector.next_backoff(state.discovery_backoff, state.opts)
    timer = Process.send_after(self(), :refresh, backoff)
    state = %{state | discovery: nil, discovery_backoff: backoff, refresh_timer: timer}

    if state.ranges == nil,
      do: answer_waiting(state, {:error, %ConnectionError{reason: :closed}}),
      else: state
  end

  defp discovered(%{discovery: %{addr: addr}} = state, {:ok, ranges}) do
    ranges = for {first, last, host, port} <- ranges, do: {first, last, {host, port}}
    state = %{state | ranges: ranges, discovery: nil, discovery_backoff: nil}
    state = if state.classic == nil, do: %{state | classic: addr}, else: state
    state = reconcile(state)

    # While a node that serves subscriptions is down, or a shard channel's slot has no owner, the slot
    # map is asked again every second: a failover gives a node's slots to a replica, and a slot left
    # unowned is given to a node by hand (CLUSTER ADDSLOTS).
    if state.refresh_again or any_down?(state) or any_unplaced?(state),
      do: request_refresh(%{state | refresh_again: false}),
      else: state
  end

  defp discovered(%{discovery: %{addr: addr, rest: rest}} = state, {:error, reason}) do
    Connector.emit(:failed_connection, node_opts(state, addr), %{
      reason: %ConnectionError{reason: reason}
    })

    ask(%{state | discovery: nil}, rest)
  end

  defp any_down?(state), do: Enum.any?(state.nodes, fn {_, node} -> node.status == :backoff end)

  defp any_unplaced?(state) do
    Enum.any?(state.subscriptions, fn {{kind, name}, _} ->
      kind == :shard and not Map.has_key?(state.placed, name)
    end)
  end

  @doc """
  The hash slot of a shard channel; a long name is hashed on a dirty scheduler (`Native.key_slot/1`
  answers `:dirty` rather than hold a normal one).
  """
  @spec slot(binary()) :: 0..16_383
  def slot(name) do
    case Native.key_slot(name) do
      :dirty -> Native.key_slot_dirty(name)
      slot -> slot
    end
  end

  defp owner(state, slot) do
    Enum.find_value(state.ranges || [], fn {first, last, addr} -> slot in first..last && addr end)
  end

  defp owners(state), do: state.ranges |> Enum.map(&elem(&1, 2)) |> Enum.uniq()

  # Takes shard channels off the node of `handle` (their subscribers dropped there, silently) and asks
  # for a refresh, which places them again; `hint` is the node asked first.
  defp unplace(state, handle, names, hint) do
    for name <- names, pid <- Map.get(state.subscriptions, {:shard, name}, []) do
      op(state, handle, :drop, :shard, [name], pid, state.subscribers[pid], [])
    end

    request_refresh(%{state | placed: Map.drop(state.placed, names), hint: hint})
  end

  # Follows the slot map: shard channels go to their slot's owner, classic subscriptions to a node
  # that is still in the cluster; nodes left serving nothing are closed.
  defp reconcile(state) do
    state = reconcile_classic(state)

    state =
      for({{:shard, name}, _} <- state.subscriptions, do: name)
      |> Enum.reduce(state, fn name, state ->
        target = owner(state, slot(name))
        current = Map.get(state.placed, name)

        if target != nil and target != current,
          do: move(state, name, current, target),
          else: state
      end)

    state |> ensure_nodes() |> close_idle_nodes()
  end

  # A connected node keeps serving classic subscriptions (any node gets every PUBLISH, with slots or
  # without); one that is down and has no slots any more (a primary that failed over, a replica
  # given as the seed) is replaced by a primary.
  defp reconcile_classic(state) do
    owners = owners(state)

    if owners == [] or state.classic in owners or connected_handle(state, state.classic) != nil do
      state
    else
      {old, state} = pop_node(state, state.classic)
      if old, do: Native.close(old.handle, :owner_down)
      %{state | classic: hd(owners)}
    end
  end

  defp move(state, name, from, to) do
    pids = Map.get(state.subscriptions, {:shard, name}, MapSet.new())

    case connected_handle(state, from) do
      nil ->
        :ok

      handle ->
        Enum.each(pids, &op(state, handle, :drop, :shard, [name], &1, state.subscribers[&1], []))
        Subscriptions.drain_all(handle, state.refs)
    end

    state = %{state | placed: Map.put(state.placed, name, to)}

    case connected_handle(state, to) do
      nil ->
        state

      handle ->
        pids
        |> Enum.with_index()
        |> Enum.map(fn {pid, i} ->
          redis = if i == 0, do: [name], else: []
          op(state, handle, :subscribe, :shard, [name], pid, state.subscribers[pid], redis)
        end)
        |> then(&drain(state, to, Enum.max([0 | &1])))

        state
    end
  end

  ## Subscribing

  defp subscribe_shards(state, names, new, pid, ref) do
    # A name already subscribed stays where it is (or, when it has no node, waiting for the slot map:
    # `reconcile/1` subscribes all its subscribers at once); a new one goes to its slot's owner when
    # the slot map is known, otherwise once it is.
    {state, unplaced} =
      Enum.reduce(new, {state, false}, fn name, {state, unplaced} ->
        case state.ranges && owner(state, slot(name)) do
          nil -> {state, unplaced or state.ranges != nil}
          addr -> {%{state | placed: Map.put(state.placed, name, addr)}, unplaced}
        end
      end)

    names
    |> Enum.filter(&Map.has_key?(state.placed, &1))
    |> Enum.group_by(&state.placed[&1])
    |> Enum.each(fn {addr, names} ->
      with handle when handle != nil <- connected_handle(state, addr) do
        by_slot(:shard, names, Enum.filter(names, &(&1 in new)), fn names, redis ->
          op(state, handle, :subscribe, :shard, names, pid, ref, redis)
        end)
        |> then(&drain(state, addr, &1))
      end
    end)

    state = ensure_nodes(state)
    # A slot no node owns: the slot map may be out of date.
    if unplaced, do: request_refresh(state), else: state
  end

  defp subscribe_classic(state, kind, names, new, pid, ref) do
    case connected_handle(state, state.classic) do
      nil ->
        ensure_nodes(state)

      handle ->
        queued = op(state, handle, :subscribe, kind, names, pid, ref, new)
        drain(state, state.classic, queued)
        state
    end
  end

  # SSUBSCRIBE and SUNSUBSCRIBE take channels of one slot: one op per slot. Returns how many
  # messages the last op left queued (what the caller must drain before it replies).
  defp by_slot(:shard, names, redis, fun) do
    names
    |> Enum.group_by(&slot/1)
    |> Enum.map(fn {_slot, names} -> fun.(names, Enum.filter(redis, &(&1 in names))) end)
    |> Enum.max(fn -> 0 end)
  end

  defp by_slot(_kind, names, redis, fun), do: fun.(names, redis)

  # The node a subscription of `kind` to `name` is made at (nil: none yet).
  defp node_of(state, :shard, name), do: Map.get(state.placed, name)
  defp node_of(state, _kind, _name), do: state.classic

  ## Nodes

  defp node_opts(state, {host, port}), do: Keyword.merge(state.opts, host: host, port: port)

  defp config(state, addr, mode) do
    RedixRs.Redact.scrub(fn -> Connector.native_config(node_opts(state, addr), mode) end)
  end

  defp connected_handle(state, addr) do
    case state.nodes[addr] do
      %{status: :connected, handle: handle} -> handle
      _ -> nil
    end
  end

  # The nodes that serve something: the classic node (with subscriptions or pings waiting), and the
  # node of each placed shard channel.
  defp wanted(state) do
    classic? =
      state.classic != nil and
        (state.waiting != [] or
           Enum.any?(state.subscriptions, fn {{kind, _}, _} -> kind != :shard end))

    shard_nodes = state.placed |> Map.values() |> MapSet.new()
    if classic?, do: MapSet.put(shard_nodes, state.classic), else: shard_nodes
  end

  defp ensure_nodes(state) do
    state
    |> wanted()
    |> Enum.reduce(state, fn addr, state ->
      if Map.has_key?(state.nodes, addr), do: state, else: connect_node(state, addr)
    end)
  end

  defp close_idle_nodes(state) do
    wanted = wanted(state)

    state.nodes
    |> Map.keys()
    |> Enum.reject(&(&1 in wanted or (&1 == state.classic and state.pings != %{})))
    |> Enum.reduce(state, fn addr, state ->
      {node, state} = pop_node(state, addr)
      if node.handle, do: Native.close(node.handle, :owner_down)
      state
    end)
  end

  defp pop_node(state, addr) do
    case Map.pop(state.nodes, addr) do
      {nil, _} -> {nil, state}
      {node, nodes} -> {node, %{state | nodes: nodes, ids: Map.delete(state.ids, node.id)}}
    end
  end

  defp connect_node(state, addr) do
    {handle, id} =
      RedixRs.Redact.scrub(fn -> Connector.connect(node_opts(state, addr), :pubsub) end)

    previous = state.nodes[addr]
    ids = if previous, do: Map.delete(state.ids, previous.id), else: state.ids
    node = %{handle: handle, id: id, status: :connecting, backoff: previous && previous.backoff}
    %{state | nodes: Map.put(state.nodes, addr, node), ids: Map.put(ids, id, addr)}
  end

  defp node_event(state, addr, :connected) do
    Connector.emit(:connection, node_opts(state, addr), %{
      reconnection: addr in state.connected_before
    })

    state = update_in(state.nodes[addr], &%{&1 | status: :connected, backoff: nil})
    state = %{state | connected_before: MapSet.put(state.connected_before, addr)}
    resubscribe(state, addr)
    state = if addr == state.classic, do: answer_waiting(state, :connected), else: state
    {:noreply, state}
  end

  # The native side already told the node's subscribers `:disconnected`.
  defp node_event(state, addr, {:disconnected, reason}) do
    error = %ConnectionError{reason: reason}
    Connector.emit(:disconnection, node_opts(state, addr), %{reason: error})
    node = state.nodes[addr]
    Subscriptions.drain_all(node.handle, state.refs)

    state =
      if addr == state.classic do
        Enum.each(state.pings, fn {_, from} -> GenServer.reply(from, {:error, error}) end)
        %{state | pings: %{}}
      else
        state
      end

    {:noreply, state |> backoff(addr) |> request_refresh()}
  end

  defp node_event(state, addr, {:connect_failed, %RedixRs.Error{} = error}) do
    Connector.emit(:failed_connection, node_opts(state, addr), %{
      reason: %ConnectionError{reason: error}
    })

    {:stop, error, state}
  end

  defp node_event(state, addr, {:connect_failed, reason}) do
    Connector.emit(:failed_connection, node_opts(state, addr), %{
      reason: %ConnectionError{reason: reason}
    })

    state =
      if addr == state.classic,
        do: answer_waiting(state, {:error, %ConnectionError{reason: :closed}}),
        else: state

    {:noreply, state |> backoff(addr) |> request_refresh()}
  end

  defp node_event(state, _addr, _sentinel_event), do: {:noreply, state}

  defp backoff(state, addr) do
    node = state.nodes[addr]
    backoff = Connector.next_backoff(node.backoff, state.opts)
    Process.send_after(self(), {:reconnect, addr}, backoff)
    put_in(state.nodes[addr], %{node | status: :backoff, backoff: backoff})
  end

  # Every subscription served by `addr`, again; each Redis-side name once.
  defp resubscribe(state, addr) do
    handle = state.nodes[addr].handle

    state.subscriptions
    |> Enum.filter(fn {{kind, name}, _} -> node_of(state, kind, name) == addr end)
    |> Enum.flat_map(fn {{kind, name}, pids} -> Enum.map(pids, &{&1, kind, name}) end)
    |> Enum.group_by(fn {pid, kind, _} -> {pid, kind} end, fn {_, _, name} -> name end)
    |> Enum.reduce({MapSet.new(), 0}, fn {{pid, kind}, names}, {told, _queued} ->
      redis = Enum.reject(names, &MapSet.member?(told, {kind, &1}))

      queued =
        by_slot(kind, names, redis, fn names, redis ->
          op(state, handle, :subscribe, kind, names, pid, state.subscribers[pid], redis)
        end)

      {Enum.reduce(redis, told, &MapSet.put(&2, {kind, &1})), queued}
    end)
    |> then(fn {_told, queued} -> drain(state, addr, queued) end)
  end

  ## Pings

  defp ping(state, handle, from) do
    ref = make_ref()

    case RedixRs.Call.submit_for_self(handle, ref, [["PING"]]) do
      {:ok, _token} ->
        %{state | pings: Map.put(state.pings, ref, from)}

      {:error, _} ->
        GenServer.reply(from, {:error, %ConnectionError{reason: :closed}})
        state
    end
  end

  defp answer_waiting(state, :connected) do
    handle = connected_handle(state, state.classic)
    Enum.reduce(Enum.reverse(state.waiting), %{state | waiting: []}, &ping(&2, handle, &1))
  end

  defp answer_waiting(state, reply) do
    Enum.each(state.waiting, &GenServer.reply(&1, reply))
    %{state | waiting: []}
  end

  ## Subscribers

  defp drop_subscriber(state, pid, ref) do
    state =
      Enum.reduce(Subscriptions.of(state, pid), state, fn {kind, names}, state ->
        {state, emptied} = Subscriptions.remove(state, kind, names, pid)

        names
        |> Enum.group_by(&node_of(state, kind, &1))
        |> Enum.each(fn {addr, names} ->
          with handle when handle != nil <- connected_handle(state, addr) do
            redis = Enum.filter(names, &(&1 in emptied))

            by_slot(kind, names, redis, fn names, redis ->
              op(state, handle, :drop, kind, names, pid, ref, redis)
            end)
          end
        end)

        if kind == :shard,
          do: %{state | placed: Map.drop(state.placed, emptied)},
          else: state
      end)

    state |> Subscriptions.forget(pid) |> close_idle_nodes()
  end

  ## Native operations

  # The native side sends to `pid`'s target: `pid` itself, or its relay.
  defp op(state, handle, action, kind, names, pid, ref, redis_names) do
    Native.pubsub_op(
      handle,
      {action, kind, names, Subscriptions.target(state, pid), ref, redis_names}
    )
  end

  # Sends at least `count` queued messages (those up to the last op's own) before the caller gets
  # its reply, as `RedixRs.PubSub.Connection` does; what keeps arriving after them goes out on the
  # next wake-up.
  defp drain(state, addr, count) do
    %{handle: handle, id: id} = state.nodes[addr]

    case Native.pubsub_drain(handle, state.refs) do
      {:more, sent} when sent < count -> drain(state, addr, count - sent)
      {:more, _sent} -> send(self(), {:redix_rs_pubsub_drain, id})
      {:done, _sent} -> :ok
    end
  end
end

defimpl Inspect, for: RedixRs.PubSub.Cluster do
  # The options hold the connection's passwords: shown redacted.
  def inspect(state, opts), do: RedixRs.Redact.inspect_struct(state, opts)
end
