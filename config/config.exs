import Config

# redix_rs needs no configuration. The tokio worker count is read from the
# REDIX_RS_TOKIO_WORKERS environment variable when the first connection starts.

if File.exists?(Path.join(__DIR__, "#{config_env()}.exs")) do
  import_config "#{config_env()}.exs"
end
