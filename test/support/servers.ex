defmodule RedixRs.Test.Servers do
  @moduledoc false
  # The redis-server processes test_helper.exs started, by role: :plain, :password, :acl, :unix.

  def put(servers), do: :persistent_term.put(__MODULE__, servers)
  def get(role), do: Map.fetch!(:persistent_term.get(__MODULE__), role)
  def port(role \\ :plain), do: get(role).port
end

defmodule RedixRs.Doctest do
  @moduledoc false
  # The port the docs' examples connect to: in the docs it stands for "your Redis port".
  def port, do: RedixRs.Test.Servers.port(:plain)
end

defmodule RedixRs.Test.Helpers do
  @moduledoc false

  @doc "Polls `fun` every 20 ms until it returns true; false after `tries` attempts."
  def eventually(fun, tries \\ 100) do
    cond do
      fun.() -> true
      tries == 0 -> false
      true -> Process.sleep(20) && eventually(fun, tries - 1)
    end
  end
end
