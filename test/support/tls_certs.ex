defmodule RedixRs.Test.TLSCerts do
  @moduledoc false
  # A throwaway CA and a server certificate for 127.0.0.1/localhost, made with openssl, for the TLS
  # scenario.

  def generate!(dir) do
    File.mkdir_p!(dir)
    path = &Path.join(dir, &1)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    openssl!(
      ["req", "-x509"] ++
        ec ++ ~w(-days 2 -subj /CN=bench-ca -keyout) ++ [path.("ca.key"), "-out", path.("ca.pem")]
    )

    openssl!(
      ["req"] ++
        ec ++
        ~w(-subj /CN=localhost -keyout) ++ [path.("server.key"), "-out", path.("server.csr")]
    )

    File.write!(path.("ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n")

    openssl!(
      ~w(x509 -req -days 2 -CAcreateserial -in) ++
        [path.("server.csr"), "-CA", path.("ca.pem"), "-CAkey", path.("ca.key")] ++
        ["-out", path.("server.pem"), "-extfile", path.("ext")]
    )

    %{ca: path.("ca.pem"), cert: path.("server.pem"), key: path.("server.key")}
  end

  defp openssl!(args) do
    {_, 0} = System.cmd("openssl", args, stderr_to_stdout: true)
  end
end
