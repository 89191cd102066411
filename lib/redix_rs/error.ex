defmodule RedixRs.Error do
  @moduledoc """
  An error reply from Redis, such as `WRONGTYPE` or `ERR unknown command`.

  `message` is the error line without the leading `-`, as Redis sent it:

      iex> {:error, %RedixRs.Error{message: message}} = RedixRs.command(:redix, ["INCR", "a", "b"])
      iex> message
      "ERR wrong number of arguments for 'incr' command"

  (Examples in these docs use a connection started as `{RedixRs, name: :redix}`.)
  """

  defexception [:message]

  @typedoc "An error reply from Redis, such as `\"ERR unknown command\"` or `\"WRONGTYPE ...\"`."
  @type t() :: %__MODULE__{message: String.t()}
end
