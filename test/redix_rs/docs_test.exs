defmodule RedixRs.DocsTest do
  # What a user reads first (ex_doc cannot be fetched here, so this reads what it would render):
  # every public module of redix_rs has a @moduledoc, every public function, macro and callback an
  # @doc, every public type a @typedoc, and every public function and macro an @spec. Read from the
  # compiled .beam files: the docs chunk (Code.fetch_docs/1) and the specs in the debug info
  # (Code.Typespec.fetch_specs/1).
  use ExUnit.Case, async: true

  @root Path.expand("../..", __DIR__)

  defp public_modules do
    {:ok, modules} = :application.get_key(:redix_rs, :modules)

    # Protocol implementations (`defimpl Inspect, for: ...`) are not pages of the docs.
    for module <- Enum.sort(modules),
        Code.ensure_loaded!(module),
        not function_exported?(module, :__impl__, 1),
        {:docs_v1, _, :elixir, _, moduledoc, _, _} = docs = Code.fetch_docs(module),
        moduledoc != :hidden,
        do: {module, docs}
  end

  test "the public modules are the ones users know" do
    names = Enum.map(public_modules(), fn {module, _} -> module end)
    assert RedixRs in names
    assert RedixRs.PubSub in names
    assert RedixRs.PubSub.Subscriber in names
    assert RedixRs.Error in names
    assert RedixRs.ConnectionError in names
    refute RedixRs.Native in names

    # And what the checks below go through: the API, not a handful of functions.
    functions =
      for {_, {_, _, _, _, _, _, entries}} <- public_modules(),
          {{:function, _, _}, _, _, doc, _} <- entries,
          doc != :hidden,
          do: doc

    assert length(functions) > 30
  end

  test "every public module has a @moduledoc" do
    missing = for {module, {_, _, _, _, :none, _, _}} <- public_modules(), do: module
    assert missing == [], "no @moduledoc: #{inspect(missing)}"
  end

  test "every public function, macro, callback and type has an @doc or @typedoc" do
    missing =
      for {module, {_, _, _, _, _, _, entries}} <- public_modules(),
          {{kind, name, arity}, _, _, :none, _} <- entries,
          kind in [:function, :macro, :callback, :macrocallback, :type],
          do: "#{inspect(module)}.#{name}/#{arity} (#{kind})"

    assert missing == [], "no @doc:\n  " <> Enum.join(missing, "\n  ")
  end

  test "every public function and macro has an @spec" do
    missing =
      for {module, {_, _, _, _, _, _, entries}} <- public_modules(),
          specs = specs(module),
          {{kind, name, arity}, _, _, doc, _} <- entries,
          kind in [:function, :macro] and doc != :hidden,
          spec_name = if(kind == :macro, do: :"MACRO-#{name}", else: name),
          spec_arity = if(kind == :macro, do: arity + 1, else: arity),
          not Map.has_key?(specs, {spec_name, spec_arity}),
          do: "#{inspect(module)}.#{name}/#{arity}"

    assert missing == [], "no @spec:\n  " <> Enum.join(missing, "\n  ")
  end

  # The README and the guides link to each other (the migration guide to the README's one list of
  # differences, for instance): every relative link must lead to a file, and to a heading of it.
  test "links between the README and the guides lead somewhere" do
    pages = ["README.md", "CHANGELOG.md" | Path.wildcard(Path.join(@root, "guides/*.md"))]
    pages = Enum.map(pages, &Path.expand(&1, @root))
    assert length(pages) >= 6

    broken =
      for page <- pages,
          [_, target] <- Regex.scan(~r/\]\(([^)\s]+)\)/, File.read!(page)),
          not String.contains?(target, "://"),
          [file | anchor] = String.split(target, "#", parts: 2),
          path = if(file == "", do: page, else: Path.expand(file, Path.dirname(page))),
          not File.exists?(path) or
            (anchor != [] and hd(anchor) not in anchors(path)),
          do: "#{Path.relative_to(page, @root)}: #{target}"

    assert broken == [], "broken links:\n  " <> Enum.join(broken, "\n  ")

    migrating = File.read!(Path.join(@root, "guides/migrating_from_redix.md"))
    assert migrating =~ "(../README.md#differences-from-redix)"
  end

  # GitHub's anchors: a heading, lowercased, without punctuation, spaces made dashes.
  defp anchors(path) do
    for [_, heading] <- Regex.scan(~r/^#+ (.+)$/m, File.read!(path)) do
      heading
      |> String.downcase()
      |> String.replace(~r/[^\p{L}\p{N} _-]/u, "")
      |> String.replace(" ", "-")
    end
  end

  defp specs(module) do
    {:ok, specs} = Code.Typespec.fetch_specs(module)
    Map.new(specs)
  end
end
