defmodule RedixRs.Application do
  # Owns the ETS table through which callers find a connection's native handle without a process hop.
  @moduledoc false
  use Application

  @impl true
  def start(_type, _args) do
    children = [RedixRs.Handles]
    Supervisor.start_link(children, strategy: :one_for_one, name: RedixRs.Supervisor)
  end
end
