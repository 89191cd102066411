defmodule RedixRs.Native do
  # The NIF stubs, and nothing else. Each stub calls `:erlang.nif_error/1`, so that Dialyzer takes its
  # @spec as the NIF's type; when the library could not be loaded, the call raises a `RuntimeError`
  # that says why and how to rebuild.
  #
  # The library is loaded once per node. Loading this module again in a running node (recompiling it,
  # `:code.load_binary/3`, a hot upgrade) is refused: the library has no upgrade callback, so
  # `:erlang.load_nif/2` answers `{:error, {:upgrade, _}}`, and `load_nif/0` then fails `@on_load`, which
  # leaves the running module (with its NIFs) current. A new native library needs a node restart.
  @moduledoc false

  require Logger

  @on_load :load_nif

  @typedoc "A connection's native handle (a NIF resource)."
  @type handle() :: reference()

  @typedoc "A submitted call's token, for `cancel/1`."
  @type token() :: {non_neg_integer(), non_neg_integer()}

  @typedoc "A change of subscriptions: `{action, kind, names, subscriber, ref, names_to_send}`."
  @type pubsub_op() ::
          {:subscribe | :unsubscribe | :drop, :channel | :pattern | :shard, [binary()], pid(),
           reference(), [binary()]}

  @typedoc "How `submit/4` and `submit_dirty/4` answer."
  @type submitted() :: {:ok, token()} | {:error, :closed | :full} | :normalize | {:side, pid()}

  @doc false
  @spec load_nif() :: :ok | {:error, {:reload_refused, String.t()}}
  def load_nif do
    path = :filename.join(:code.priv_dir(:redix_rs), ~c"native/libredix_rs_nif")

    case :erlang.load_nif(path, 0) do
      :ok ->
        :ok

      # This module is being loaded again while a version of it holds the library: keep that one.
      {:error, {kind, text}} when kind in [:upgrade, :reload] ->
        message =
          "RedixRs.Native cannot be reloaded in a running node (#{kind}: #{text}); the loaded " <>
            "version stays in use. A new native library needs a node restart."

        Logger.error("redix_rs: " <> message)
        {:error, {:reload_refused, message}}

      {:error, {reason, text}} ->
        :persistent_term.put({__MODULE__, :load_error}, {reason, to_string(text)})
        Logger.error("redix_rs: could not load its NIF: #{text}")
        :ok
    end
  end

  @doc "Raises the load error, if the library could not be loaded; called before starting a connection."
  @spec ensure_loaded!() :: :ok
  def ensure_loaded! do
    if :persistent_term.get({__MODULE__, :load_error}, nil), do: raise(not_loaded()), else: :ok
  end

  @spec connect(map(), pid()) :: {:ok, handle(), non_neg_integer()}
  def connect(_config, _owner), do: :erlang.nif_error(not_loaded())

  @spec submit(handle(), reference(), list(), RedixRs.Call.kind()) ::
          submitted() | :dirty | {:not_cacheable, String.t()}
  def submit(_handle, _ref, _commands, _kind), do: :erlang.nif_error(not_loaded())

  @spec submit_dirty(handle(), reference(), list(), RedixRs.Call.kind()) :: submitted()
  def submit_dirty(_handle, _ref, _commands, _kind), do: :erlang.nif_error(not_loaded())

  @spec cancel(token()) :: :cancelled | :sent
  def cancel(_token), do: :erlang.nif_error(not_loaded())

  @spec pubsub_op(handle(), pubsub_op()) ::
          non_neg_integer() | {pos_integer(), non_neg_integer()}
  def pubsub_op(_handle, _op), do: :erlang.nif_error(not_loaded())

  @spec pubsub_drain(handle(), %{optional(pid()) => reference()}) ::
          {:done | :more, non_neg_integer()}
  def pubsub_drain(_handle, _refs), do: :erlang.nif_error(not_loaded())

  @spec close(handle(), :owner_down | :health_check_timeout) :: :ok
  def close(_handle, _why), do: :erlang.nif_error(not_loaded())

  @spec key_slot(binary()) :: 0..16_383 | :dirty
  def key_slot(_key), do: :erlang.nif_error(not_loaded())

  @spec cluster_pubsub_discover(map(), reference()) :: :ok
  def cluster_pubsub_discover(_config, _ref), do: :erlang.nif_error(not_loaded())

  @spec key_slot_dirty(binary()) :: 0..16_383
  def key_slot_dirty(_key), do: :erlang.nif_error(not_loaded())

  # The blocking commands sent to side connections, and those kept on the shared one.
  @spec blocking_commands() :: {[String.t()], [String.t()]}
  def blocking_commands, do: :erlang.nif_error(not_loaded())

  @typedoc "A client-side cache (a NIF resource), kept by its connection process."
  @type cache() :: reference()

  @spec cache_new(map()) :: cache()
  def cache_new(_config), do: :erlang.nif_error(not_loaded())

  @spec cache_get(cache(), list()) :: {:ok, term()} | :miss | :normalize
  def cache_get(_cache, _command), do: :erlang.nif_error(not_loaded())

  @spec cache_stats(cache()) :: %{atom() => non_neg_integer()}
  def cache_stats(_cache), do: :erlang.nif_error(not_loaded())

  # Redis Cluster (RedixRs.Cluster).

  @spec cluster_start(map(), [{String.t(), :inet.port_number()}], map(), pid()) :: {:ok, handle()}
  def cluster_start(_config, _seeds, _opts, _owner), do: :erlang.nif_error(not_loaded())

  @spec cluster_submit(handle(), reference(), list(), :pipeline | :transaction, term(), timeout()) ::
          submitted() | :dirty | {:error, {:redis_error, String.t()} | atom()}
  def cluster_submit(_handle, _ref, _commands, _kind, _route, _timeout),
    do: :erlang.nif_error(not_loaded())

  @spec cluster_submit_dirty(
          handle(),
          reference(),
          list(),
          :pipeline | :transaction,
          term(),
          timeout()
        ) ::
          submitted() | {:error, {:redis_error, String.t()} | atom()}
  def cluster_submit_dirty(_handle, _ref, _commands, _kind, _route, _timeout),
    do: :erlang.nif_error(not_loaded())

  @spec cluster_close(handle()) :: :ok
  def cluster_close(_handle), do: :erlang.nif_error(not_loaded())

  @spec cluster_info(handle()) :: {[String.t()], [{String.t(), boolean(), boolean()}]}
  def cluster_info(_handle), do: :erlang.nif_error(not_loaded())

  @spec pubsub_lanes(handle(), pos_integer()) :: boolean()
  def pubsub_lanes(_handle, _lanes), do: :erlang.nif_error(not_loaded())

  @spec pubsub_drain_lane(handle(), %{optional(pid()) => reference()}, non_neg_integer()) ::
          {:done | :more, non_neg_integer()}
  def pubsub_drain_lane(_handle, _refs, _lane), do: :erlang.nif_error(not_loaded())

  # Raised by the stubs (`:erlang.nif_error/1` raises it as it is).
  defp not_loaded do
    {reason, text} = :persistent_term.get({__MODULE__, :load_error}, {:unknown, "unknown"})

    %RuntimeError{
      message: """
      redix_rs's native library (libredix_rs_nif.so) is not loaded: #{reason}: #{text}
      It is installed by `mix compile` (a precompiled library, or a cargo build: see "Requirements" \
      in redix_rs's README) for the OTP release that runs it. Rebuild it with \
      `mix compile --force` (or `mix deps.compile redix_rs --force` when redix_rs is a dependency).\
      """
    }
  end
end
