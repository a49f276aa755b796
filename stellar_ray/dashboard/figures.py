"""The dashboard's Plotly figures, built on the server from arrays: spectra with residuals,
the Kiel diagram (stars, or a density image of mean colour when there are many), label
histograms, corner plots of posterior draws and training curves."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .catalog_view import MAX_POINTS, CatalogView

#: Labels whose axes run backwards by astronomers' convention (hot and dwarf to the left
#: and bottom of a Kiel diagram).
REVERSED = ("teff", "logg")
LAYOUT = {"margin": {"l": 60, "r": 20, "t": 40, "b": 50}, "template": "plotly_white"}


def titled(name: str, units: dict[str, str]) -> str:
    unit = units.get(name)
    return f"{name} [{unit}]" if unit else name


def spectrum_figure(wave: np.ndarray, flux: np.ndarray, name: str,
                    other: np.ndarray | None = None, other_name: str = "",
                    sigma: np.ndarray | None = None, title: str = "",
                    revision: str = "spectrum") -> go.Figure:
    """Flux (L,) against wavelength (Å), with ``other`` (L,) overlaid and ``flux −
    other`` below it (with ±σ when ``sigma`` is given). ``revision`` keeps the user's zoom
    across updates of the same view."""
    rows = 2 if other is not None else 1
    fig = make_subplots(rows=rows, cols=1, shared_xaxes=True, vertical_spacing=0.04,
                        row_heights=[0.72, 0.28] if rows == 2 else [1.0])
    fig.add_trace(go.Scatter(x=wave, y=flux, name=name, mode="lines",
                             line={"width": 1, "color": "#1f3b73"}), row=1, col=1)
    if other is not None:
        fig.add_trace(go.Scatter(x=wave, y=other, name=other_name, mode="lines",
                                 line={"width": 1, "color": "#d9480f"}), row=1, col=1)
        if sigma is not None:
            band = np.concatenate([sigma, -sigma[::-1]])
            fig.add_trace(go.Scatter(x=np.concatenate([wave, wave[::-1]]), y=band,
                                     fill="toself", name="±σ", line={"width": 0},
                                     fillcolor="rgba(120,120,120,0.25)", hoverinfo="skip"),
                          row=2, col=1)
        fig.add_trace(go.Scatter(x=wave, y=flux - other, name="residual", mode="lines",
                                 line={"width": 1, "color": "#2b8a3e"}), row=2, col=1)
        fig.update_yaxes(title_text="residual", row=2, col=1)
    fig.update_xaxes(title_text="wavelength [Å]", row=rows, col=1)
    fig.update_yaxes(title_text="flux", row=1, col=1)
    fig.update_layout(title=title, uirevision=revision, height=460,
                      legend={"orientation": "h", "y": 1.08}, **LAYOUT)
    return fig


def kiel_figure(view: CatalogView, keep: np.ndarray, x: str, y: str, colour: str
                ) -> go.Figure:
    """The selected stars in the (x, y) plane coloured by ``colour``: each star (its row
    index as customdata) up to :data:`MAX_POINTS`, else a density image of each bin's
    mean colour, aggregated on the server."""
    units = view.units
    n = int(keep.sum())
    if n <= MAX_POINTS:
        rows = np.flatnonzero(keep)
        trace = go.Scatter(
            x=view.labels[x][rows], y=view.labels[y][rows], mode="markers",
            customdata=rows, name="stars",
            marker={"size": 6, "color": view.labels[colour][rows], "colorscale": "Viridis",
                    "colorbar": {"title": {"text": titled(colour, units)}}},
            hovertemplate=f"{x} %{{x:.4g}}<br>{y} %{{y:.4g}}<br>{colour} "
                          "%{marker.color:.3g}<extra></extra>")
    else:
        d = view.density(keep, x, y, colour)
        trace = go.Heatmap(
            x=d.x, y=d.y, z=np.where(d.count > 0, d.colour, np.nan), customdata=d.count,
            colorscale="Viridis", colorbar={"title": {"text": f"mean {titled(colour, units)}"}},
            hovertemplate=f"{x} %{{x:.4g}}<br>{y} %{{y:.4g}}<br>mean {colour} %{{z:.3g}}"
                          "<br>%{customdata} stars<extra></extra>")
    fig = go.Figure(trace)
    fig.update_xaxes(title_text=titled(x, units), range=_range(view, x))
    fig.update_yaxes(title_text=titled(y, units), range=_range(view, y))
    fig.update_layout(title=f"{n:,} of {len(view):,} stars", height=520,
                      clickmode="event", hovermode="closest", uirevision=f"{x}/{y}",
                      **LAYOUT)
    return fig


def _range(view: CatalogView, name: str) -> list[float]:
    lo, hi = view.ranges[name]
    pad = 0.02 * (hi - lo)
    return [hi + pad, lo - pad] if name in REVERSED else [lo - pad, hi + pad]


def histograms_figure(view: CatalogView, keep: np.ndarray) -> go.Figure:
    """One histogram per label of the selected stars (binned on the server)."""
    names = list(view.labels)
    fig = make_subplots(rows=1, cols=len(names))
    for k, name in enumerate(names, start=1):
        edges, counts = view.histogram(keep, name)
        fig.add_trace(go.Bar(x=0.5 * (edges[1:] + edges[:-1]), y=counts,
                             width=np.diff(edges), name=name, marker_color="#1f3b73",
                             showlegend=False), row=1, col=k)
        fig.update_xaxes(title_text=titled(name, view.units), row=1, col=k)
    fig.update_layout(height=260, bargap=0, **LAYOUT)
    return fig


def corner_figure(samples: np.ndarray, names: Sequence[str], units: dict[str, str],
                  estimate: Sequence[float] | None = None) -> go.Figure:
    """A corner plot of posterior draws (S, K): histograms on the diagonal, 2-D densities
    below it, the catalog's estimate marked."""
    k = len(names)
    # each label's axis spans the central 99 % of its draws: a few stray draws do not
    # squash the plot
    limits = [list(np.nanpercentile(samples[:, i], [0.5, 99.5])) for i in range(k)]
    fig = make_subplots(rows=k, cols=k, horizontal_spacing=0.03, vertical_spacing=0.03)
    for i in range(k):
        for j in range(i + 1):
            if i == j:
                fig.add_trace(go.Histogram(x=samples[:, i], nbinsx=40, showlegend=False,
                                           marker_color="#1f3b73"), row=i + 1, col=j + 1)
            else:
                fig.add_trace(go.Histogram2dContour(
                    x=samples[:, j], y=samples[:, i], showscale=False, ncontours=8,
                    colorscale="Blues", contours={"coloring": "fill"}),
                    row=i + 1, col=j + 1)
                if estimate is not None:
                    fig.add_trace(go.Scatter(x=[estimate[j]], y=[estimate[i]], mode="markers",
                                             marker={"symbol": "x", "color": "#d9480f",
                                                     "size": 9}, showlegend=False),
                                  row=i + 1, col=j + 1)
            fig.update_xaxes(range=limits[j], row=i + 1, col=j + 1)
            if i != j:
                fig.update_yaxes(range=limits[i], row=i + 1, col=j + 1)
            if i == k - 1:
                fig.update_xaxes(title_text=titled(names[j], units), row=i + 1, col=j + 1)
            if j == 0 and i > 0:
                fig.update_yaxes(title_text=titled(names[i], units), row=i + 1, col=j + 1)
    fig.update_layout(height=160 * k + 80, title="posterior draws", **LAYOUT)
    return fig


def curves_figure(histories: dict[str, list[dict[str, float]]], metrics: Sequence[str]
                  ) -> go.Figure:
    """Each run's ``metrics`` against epoch (1-based), one line per run and metric."""
    fig = go.Figure()
    for run, rows in histories.items():
        for metric in metrics:
            points = [(r["epoch"] + 1, r[metric]) for r in rows if metric in r]
            if points:
                epochs, values = zip(*points)
                fig.add_trace(go.Scatter(x=epochs, y=values, mode="lines+markers",
                                         name=f"{run}: {metric}"))
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(height=420, legend={"orientation": "h", "y": -0.2}, **LAYOUT)
    return fig
