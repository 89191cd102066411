defmodule RedixRs.Bench.Svg do
  @moduledoc false
  # The picture of a `make bench` run, drawn as plain SVG text (no dependency): on the left,
  # throughput against the number of processes sharing one connection (medians, with a bar over
  # each point for the range across rounds); on the right, p50 (solid) and p99 (dashed) latency per
  # call, on a log scale. One colour per client.

  alias RedixRs.Bench.Report

  @width 1000
  @height 490
  @plot_w 380
  @plot_h 300
  @top 115
  @left_x 90
  @right_x 590
  @palette ["#c0392b", "#2471a3", "#7d3c98", "#1e8449", "#b9770e", "#566573"]
  @fixed %{redix_rs: "#c0392b", eredis: "#2471a3", redix: "#7d3c98"}

  @doc """
  The SVG document. `points` is %{client => [%{n: procs, median: ops/s, min: _, max: _, p50: µs,
  p99: µs}]}; `subtitle` says when and where it was measured.
  """
  def render(points, title, subtitle) do
    clients = points |> Map.keys() |> Enum.sort_by(&order/1)
    colors = colors(clients)

    ns =
      points |> Map.values() |> List.flatten() |> Enum.map(& &1.n) |> Enum.uniq() |> Enum.sort()

    [
      ~s(<svg xmlns="http://www.w3.org/2000/svg" width="#{@width}" height="#{@height}" ),
      ~s(viewBox="0 0 #{@width} #{@height}" font-family="Helvetica, Arial, sans-serif" font-size="13">\n),
      ~s(<rect width="100%" height="100%" fill="white"/>\n),
      text(@width / 2, 28, title, size: 17, anchor: "middle", weight: "bold"),
      text(@width / 2, 50, subtitle, size: 12, anchor: "middle", fill: "#555"),
      legend(clients, colors),
      throughput_panel(points, clients, colors, ns),
      latency_panel(points, clients, colors, ns),
      "</svg>\n"
    ]
    |> IO.iodata_to_binary()
  end

  defp order(client) do
    {Enum.find_index([:redix_rs, :eredis, :redix], &(&1 == client)) || 9, to_string(client)}
  end

  defp colors(clients) do
    free = @palette -- Map.values(@fixed)

    {map, _} =
      Enum.reduce(clients, {%{}, free}, fn client, {acc, free} ->
        case @fixed do
          %{^client => color} -> {Map.put(acc, client, color), free}
          _ -> {Map.put(acc, client, hd(free ++ ["#000"])), tl(free ++ ["#000"])}
        end
      end)

    map
  end

  defp legend(clients, colors) do
    clients
    |> Enum.with_index()
    |> Enum.map(fn {client, i} ->
      x = @width / 2 - length(clients) * 70 + i * 140 + 20
      y = 72

      [
        ~s(<line x1="#{x}" y1="#{y - 4}" x2="#{x + 24}" y2="#{y - 4}" stroke="#{colors[client]}" stroke-width="3"/>),
        text(x + 30, y, Report.client_name(client), weight: "bold")
      ]
    end)
  end

  # x: the process counts, evenly spaced on a log scale.
  defp x_of(n, ns, x0) do
    logs = Enum.map(ns, &:math.log10/1)
    {lo, hi} = {Enum.min(logs), Enum.max(logs)}
    span = if hi == lo, do: 1, else: hi - lo
    x0 + 20 + (:math.log10(n) - lo) / span * (@plot_w - 40)
  end

  defp throughput_panel(points, clients, colors, ns) do
    max = points |> Map.values() |> List.flatten() |> Enum.map(& &1.max) |> Enum.max(fn -> 1 end)
    top = nice_ceiling(max * 1.05)
    y_of = fn v -> @top + @plot_h - v / top * @plot_h end

    grid =
      for i <- 0..5 do
        v = top * i / 5
        y = y_of.(v)

        [
          ~s(<line x1="#{@left_x}" y1="#{f(y)}" x2="#{@left_x + @plot_w}" y2="#{f(y)}" stroke="#e5e5e5"/>),
          text(@left_x - 8, y + 4, Report.rate(v), anchor: "end", fill: "#444")
        ]
      end

    series =
      for {client, i} <- Enum.with_index(clients) do
        pts = Enum.sort_by(points[client], & &1.n)
        color = colors[client]
        # Clients side by side around each x, so that their range bars do not hide each other.
        shift = (i - (length(clients) - 1) / 2) * 7
        xy = Enum.map(pts, &{x_of(&1.n, ns, @left_x) + shift, y_of.(&1.median)})

        [
          polyline(xy, color, nil),
          for {p, {x, y}} <- Enum.zip(pts, xy) do
            [
              ~s(<line x1="#{f(x)}" y1="#{f(y_of.(p.min))}" x2="#{f(x)}" y2="#{f(y_of.(p.max))}" ),
              ~s(stroke="#{color}" stroke-width="1.5" opacity="0.6"/>),
              ~s(<circle cx="#{f(x)}" cy="#{f(y)}" r="3.5" fill="#{color}"/>)
            ]
          end
        ]
      end

    [
      frame(@left_x, ns, "GET throughput (ops/s), one connection"),
      grid,
      series,
      text(@left_x - 62, @top + @plot_h / 2, "ops/s (median; bar: min–max)",
        anchor: "middle",
        rotate: -90,
        fill: "#444"
      )
    ]
  end

  defp latency_panel(points, clients, colors, ns) do
    values =
      points
      |> Map.values()
      |> List.flatten()
      |> Enum.flat_map(&[&1.p50, &1.p99])
      |> Enum.reject(&is_nil/1)
      |> Enum.map(&max(&1, 1))

    {lo, hi} =
      case values do
        [] -> {1, 10}
        _ -> {decade_floor(Enum.min(values)), decade_ceil(Enum.max(values))}
      end

    {llo, lhi} = {:math.log10(lo), :math.log10(hi)}
    lspan = if lhi == llo, do: 1, else: lhi - llo
    y_of = fn v -> @top + @plot_h - (:math.log10(max(v, lo)) - llo) / lspan * @plot_h end

    grid =
      for e <- round(llo)..round(lhi) do
        v = :math.pow(10, e)
        y = y_of.(v)

        [
          ~s(<line x1="#{@right_x}" y1="#{f(y)}" x2="#{@right_x + @plot_w}" y2="#{f(y)}" stroke="#e5e5e5"/>),
          text(@right_x - 8, y + 4, latency_label(v), anchor: "end", fill: "#444")
        ]
      end

    series =
      for client <- clients, {key, dash} <- [p50: nil, p99: "6,4"] do
        pts = points[client] |> Enum.sort_by(& &1.n) |> Enum.reject(&is_nil(Map.get(&1, key)))
        xy = Enum.map(pts, &{x_of(&1.n, ns, @right_x), y_of.(Map.get(&1, key))})

        [
          polyline(xy, colors[client], dash),
          for(
            {x, y} <- xy,
            do: ~s(<circle cx="#{f(x)}" cy="#{f(y)}" r="3" fill="#{colors[client]}"/>)
          )
        ]
      end

    [
      frame(@right_x, ns, "Latency per call: p50 (solid), p99 (dashed)"),
      grid,
      series,
      text(@right_x - 58, @top + @plot_h / 2, "µs per call (log scale)",
        anchor: "middle",
        rotate: -90,
        fill: "#444"
      )
    ]
  end

  defp frame(x0, ns, title) do
    ticks =
      for n <- ns do
        x = x_of(n, ns, x0)

        [
          ~s(<line x1="#{f(x)}" y1="#{@top + @plot_h}" x2="#{f(x)}" y2="#{@top + @plot_h + 5}" stroke="#444"/>),
          text(x, @top + @plot_h + 20, count(n), anchor: "middle", fill: "#444")
        ]
      end

    [
      text(x0 + @plot_w / 2, @top - 10, title, anchor: "middle", weight: "bold"),
      ~s(<rect x="#{x0}" y="#{@top}" width="#{@plot_w}" height="#{@plot_h}" fill="none" stroke="#888"/>\n),
      ticks,
      text(
        x0 + @plot_w / 2,
        @top + @plot_h + 42,
        "concurrent processes on one connection (log scale)",
        anchor: "middle",
        fill: "#444"
      )
    ]
  end

  defp polyline([], _color, _dash), do: []

  defp polyline(xy, color, dash) do
    points = Enum.map_join(xy, " ", fn {x, y} -> "#{f(x)},#{f(y)}" end)
    dash = if dash, do: ~s( stroke-dasharray="#{dash}"), else: ""
    ~s(<polyline points="#{points}" fill="none" stroke="#{color}" stroke-width="2.2"#{dash}/>\n)
  end

  defp text(x, y, content, opts) do
    attrs =
      [
        {"x", f(x)},
        {"y", f(y)},
        {"text-anchor", opts[:anchor]},
        {"font-size", opts[:size]},
        {"font-weight", opts[:weight]},
        {"fill", opts[:fill]},
        {"transform", opts[:rotate] && "rotate(#{opts[:rotate]} #{f(x)} #{f(y)})"}
      ]
      |> Enum.reject(fn {_, v} -> is_nil(v) end)
      |> Enum.map_join(" ", fn {k, v} -> ~s(#{k}="#{v}") end)

    ~s(<text #{attrs}>#{escape(content)}</text>\n)
  end

  defp escape(s) do
    s
    |> to_string()
    |> String.replace("&", "&amp;")
    |> String.replace("<", "&lt;")
    |> String.replace(">", "&gt;")
  end

  # 1,000 rather than 1.00k on an axis of process counts.
  defp count(n), do: n |> Integer.to_string() |> String.replace(~r/\B(?=(\d{3})+$)/, ",")

  defp latency_label(v) when v >= 1_000_000, do: "#{round(v / 1_000_000)} s"
  defp latency_label(v) when v >= 1_000, do: "#{round(v / 1_000)} ms"
  defp latency_label(v), do: "#{round(v)} µs"

  defp decade_floor(v), do: :math.pow(10, Float.floor(:math.log10(v)))
  defp decade_ceil(v), do: :math.pow(10, Float.ceil(:math.log10(v) + 1.0e-9))

  # A round multiple of a power of ten, at least `v`.
  defp nice_ceiling(v) when v <= 0, do: 1

  defp nice_ceiling(v) do
    base = :math.pow(10, Float.floor(:math.log10(v)))
    Enum.find([1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10], &(&1 * base >= v)) * base
  end

  defp f(x), do: :erlang.float_to_binary(x / 1, decimals: 1)
end
