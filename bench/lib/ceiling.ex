defmodule RedixRs.Bench.Ceiling do
  @moduledoc false
  # redis-benchmark on the same server: what the server itself can do, the ceiling for each scenario.

  @doc "Requests per second redis-benchmark reports for `args` (plus -q, host and port)."
  def rps(port, args) do
    {out, 0} =
      System.cmd("redis-benchmark", ["-h", "127.0.0.1", "-p", "#{port}", "-q" | args],
        stderr_to_stdout: true
      )

    case Regex.run(~r/:\s*([\d.]+) requests per second/, out) do
      [_, rps] -> String.to_float(rps)
      nil -> raise "could not read redis-benchmark output: #{out}"
    end
  end
end
