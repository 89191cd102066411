defmodule RedixRs.Native do
  # The NIF stubs, and nothing else: recompiling this module inside a running VM cannot re-load the
  # library ("Upgrade not supported"), so it stays small and stable.
  @moduledoc false

  require Logger

  @on_load :load_nif

  @doc false
  def load_nif do
    path = :filename.join(:code.priv_dir(:redix_rs), ~c"native/libredix_rs_nif")

    case :erlang.load_nif(path, 0) do
      :ok ->
        :ok

      {:error, {reason, text}} ->
        :persistent_term.put({__MODULE__, :load_error}, {reason, to_string(text)})
        Logger.error("redix_rs: could not load its NIF: #{text}")
        :ok
    end
  end

  @doc "Raises the load error, if the library could not be loaded; called before starting a connection."
  def ensure_loaded! do
    if :persistent_term.get({__MODULE__, :load_error}, nil), do: not_loaded(), else: :ok
  end

  def connect(_config, _owner), do: not_loaded()
  def submit(_handle, _ref, _commands, _kind), do: not_loaded()
  def submit_dirty(_handle, _ref, _commands, _kind), do: not_loaded()
  def cancel(_token), do: not_loaded()
  def pubsub_op(_handle, _op), do: not_loaded()
  def pubsub_drain(_handle, _refs), do: not_loaded()
  def close(_handle, _why), do: not_loaded()

  defp not_loaded do
    {reason, text} = :persistent_term.get({__MODULE__, :load_error}, {:unknown, "unknown"})

    raise RuntimeError, """
    redix_rs's native library (libredix_rs_nif.so) is not loaded: #{reason}: #{text}
    It is built by `mix compile` (which runs cargo; Rust >= 1.91 is needed) for the OTP release \
    that runs it. Rebuild it with `mix compile --force` (or `mix deps.compile redix_rs --force` \
    when redix_rs is a dependency).\
    """
  end
end
