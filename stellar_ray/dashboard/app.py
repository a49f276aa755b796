"""The dashboard as a Dash application: three tabs (emulator explorer, catalog explorer,
training runs) over the sources a :class:`DashboardConfig` names. Every figure is computed
on the server (Python callbacks); the browser receives finished figures, never a catalog.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from dash import ALL, Dash, Input, Output, State, dash_table, dcc, html
from dash.exceptions import PreventUpdate
from pydantic import BaseModel, ConfigDict, Field

from ..artifact import load_artifact
from ..errors import StellarRayError
from ..inference.quality import CatalogFlag
from ..threads import use_allotted_threads
from ..training.history import read_history
from .catalog_view import CatalogView, Filter, flag_names
from .emulator_view import EmulatorView
from .figures import (
    corner_figure,
    curves_figure,
    histograms_figure,
    kiel_figure,
    spectrum_figure,
    titled,
)
from .runs import Found, find_runs, sweep_table
from .star import StarInspector, recorded_config

log = logging.getLogger(__name__)

NONE = "none"
NEAREST = "nearest training spectrum"
#: Metrics drawn first when a run is chosen.
DEFAULT_CURVES = ("train_loss", "val_loss")
SLIDER_STEPS = 200


class DashboardConfig(BaseModel):
    """What the dashboard shows (each source optional) and where it listens."""

    model_config = ConfigDict(extra="forbid")

    artifacts: list[str] = Field(default_factory=list, description="model artifacts: "
                                 "emulators for the explorer, any model for tracing catalogs")
    catalog: str | None = Field(default=None, description="a result catalog")
    data: str | None = Field(default=None, description="the catalog's input spectra "
                             "(default: the dataset the catalog records)")
    runs: str | None = Field(default=None, description="a folder of training runs and sweeps")
    host: str = Field(default="127.0.0.1", description="address to listen on (0.0.0.0 "
                      "exposes the dashboard to the network)")
    port: int = Field(default=8050, ge=0, le=65535)
    storage_options: dict[str, Any] | None = None


@dataclass
class Sources:
    """Everything the callbacks read, loaded once when the dashboard starts."""

    config: DashboardConfig
    emulators: dict[str, EmulatorView] = field(default_factory=dict)
    catalog: CatalogView | None = None
    inspector: StarInspector | None = None
    inspector_problem: str = ""
    runs: Found = field(default_factory=lambda: Found({}, {}))

    @classmethod
    def load(cls, config: DashboardConfig) -> Sources:
        so = config.storage_options
        out = cls(config=config)
        artifacts = {url: load_artifact(url, so) for url in config.artifacts}
        for url, art in artifacts.items():
            if "fit" in art.task.modes:
                name = f"{art.metadata.model} ({_short_name(url)})"
                while name in out.emulators:
                    name += "'"
                out.emulators[name] = EmulatorView(art, name, so)
        if config.catalog:
            out.catalog = CatalogView.open(config.catalog, so)
            provenance = out.catalog.manifest.provenance
            recorded = provenance.config if provenance else None
            try:
                out.inspector = StarInspector(recorded_config(
                    recorded, config.data, _traceable(recorded, artifacts)))
            except (StellarRayError, ValueError, OSError) as err:
                out.inspector_problem = f"spectra cannot be shown: {err}"
        if config.runs:
            out.runs = find_runs(config.runs, so)
        return out


def _short_name(url: str) -> str:
    """An artifact's folder name, or its run's name for ``<run>/artifact``."""
    parts = url.rstrip("/").split("/")
    return parts[-2] if parts[-1] == "artifact" and len(parts) > 1 else parts[-1]


def _traceable(recorded: dict | None, artifacts: dict) -> str | None:
    """The artifact to trace catalog rows with: None for the recorded one if it still
    loads, else the given artifact with the recorded id, else the first given one."""
    if recorded and recorded.get("model"):
        try:
            load_artifact(recorded["model"], recorded.get("storage_options"))
            return None  # the recorded one
        except (StellarRayError, OSError):
            pass
    wanted = (recorded or {}).get("artifact_id")
    for url, art in artifacts.items():
        if wanted is None or art.artifact_id == wanted:
            return url
    return next(iter(artifacts), None)


def _panel(title: str, *children: Any) -> html.Div:
    return html.Div([html.H3(title), *children], className="panel")


def _emulator_tab(s: Sources) -> dcc.Tab:
    names = list(s.emulators)
    if not names:
        body = html.P("No emulator given: start the dashboard with --artifact URL of an "
                      "emulator (The Payne, TransformerPayne, SM-Net, HML).", id="emu-none")
    else:
        body = html.Div([
            html.Div([
                html.Label("emulator"),
                dcc.Dropdown(names, names[0], id="emu-select", clearable=False),
                html.Div(id="emu-sliders"),
                html.Label("overlay"),
                dcc.Dropdown([NONE, NEAREST, *names[1:]], NONE, id="emu-overlay",
                             clearable=False),
                html.Label("S/N per pixel for the Cramér–Rao bounds"),
                dcc.Input(id="emu-snr", type="number", value=50, min=1, debounce=True),
                html.Div([html.Button("download FITS", id="emu-fits"),
                          html.Button("download CSV", id="emu-csv")]),
                dcc.Download(id="emu-download"),
            ], style={"width": "30%", "display": "inline-block", "verticalAlign": "top"}),
            html.Div([dcc.Graph(id="emu-spectrum"), html.Div(id="emu-bounds"),
                      html.Div(id="emu-note")],
                     style={"width": "68%", "display": "inline-block"}),
        ])
    return dcc.Tab(label="Emulator", value="emulator", children=[body])


def _catalog_tab(s: Sources) -> dcc.Tab:
    view = s.catalog
    if view is None:
        body = html.P("No catalog given: start the dashboard with --catalog URL.",
                      id="cat-none")
        return dcc.Tab(label="Catalog", value="catalog", children=[body])
    names = list(view.labels)

    def pick(wanted: str, k: int) -> str:
        return wanted if wanted in names else names[min(k, len(names) - 1)]

    flags = [{"label": f.name, "value": int(f.value)} for f in CatalogFlag]
    body = html.Div([
        html.Div([
            html.Label("x"), dcc.Dropdown(names, pick("teff", 0), id="cat-x", clearable=False),
            html.Label("y"), dcc.Dropdown(names, pick("logg", 1), id="cat-y", clearable=False),
            html.Label("colour"),
            dcc.Dropdown(names, pick("fe_h", 2), id="cat-colour", clearable=False),
            html.Label("S/N from / to"),
            html.Div([dcc.Input(id="cat-min-snr", type="number", debounce=True),
                      dcc.Input(id="cat-max-snr", type="number", debounce=True)]),
            html.Label("leave out stars flagged"),
            dcc.Checklist(flags, [], id="cat-flags"),
        ], style={"width": "22%", "display": "inline-block", "verticalAlign": "top"}),
        html.Div([dcc.Graph(id="cat-kiel"), dcc.Graph(id="cat-hist")],
                 style={"width": "76%", "display": "inline-block"}),
        dcc.Store(id="star-index"),
        _panel("star", html.Div("Click a star in the diagram.", id="star-info"),
               html.Div(id="star-plots")),
    ])
    return dcc.Tab(label="Catalog", value="catalog", children=[body])


def _runs_tab(s: Sources) -> dcc.Tab:
    runs, sweeps = list(s.runs.runs), list(s.runs.sweeps)
    if not runs and not sweeps:
        body = html.P("No training runs: start the dashboard with --runs FOLDER (the "
                      "output folder of stellar-ray train or tune).", id="runs-none")
        return dcc.Tab(label="Training", value="training", children=[body])
    body = html.Div([
        html.Label("runs"), dcc.Dropdown(runs, runs[:1], id="run-select", multi=True),
        html.Label("metrics"), dcc.Dropdown([], list(DEFAULT_CURVES), id="run-metric",
                                            multi=True),
        dcc.Graph(id="run-curves"),
        html.Div([
            html.Label("sweep"), dcc.Dropdown(sweeps, sweeps[0] if sweeps else None,
                                              id="sweep-select"),
            dash_table.DataTable(id="sweep-table", sort_action="native", page_size=20,
                                 style_table={"overflowX": "auto"}),
        ], style={} if sweeps else {"display": "none"}),
    ])
    return dcc.Tab(label="Training", value="training", children=[body])


def make_app(config: DashboardConfig, sources: Sources | None = None) -> Dash:
    """The Dash app over ``config``'s sources (loaded now unless given)."""
    s = sources or Sources.load(config)
    app = Dash(__name__, title="stellar-ray", suppress_callback_exceptions=True)
    first = "emulator" if s.emulators else "catalog" if s.catalog else "training"
    app.layout = html.Div([
        html.H2("stellar-ray"),
        dcc.Tabs(id="tabs", value=first,
                 children=[_emulator_tab(s), _catalog_tab(s), _runs_tab(s)]),
    ], style={"fontFamily": "sans-serif", "margin": "0 1em"})
    if s.emulators:
        _emulator_callbacks(app, s)
    if s.catalog is not None:
        _catalog_callbacks(app, s)
    if s.runs.runs or s.runs.sweeps:
        _runs_callbacks(app, s)
    return app


def _emulator_callbacks(app: Dash, s: Sources) -> None:
    @app.callback(Output("emu-sliders", "children"), Input("emu-select", "value"))
    def sliders(name: str) -> list:
        emu = s.emulators[name]
        out = []
        for k, (lab, centre) in enumerate(zip(emu.labels, emu.centre())):
            step = float(f"{(lab.high - lab.low) / SLIDER_STEPS:.2g}")
            start = lab.low + step * round((np.clip(centre, lab.low, lab.high) - lab.low) / step)
            out += [html.Label(titled(lab.name, {lab.name: lab.unit or ""})),
                    dcc.Slider(lab.low, lab.high, step, value=float(f"{start:.6g}"),
                               id={"type": "label", "index": k},
                        marks=None, updatemode="drag",
                        tooltip={"placement": "bottom", "always_visible": False})]
        return out

    def values_of(name: str, values: list) -> list[float]:
        emu = s.emulators[name]
        if len(values) != len(emu.labels) or any(v is None for v in values):
            raise PreventUpdate  # sliders of the previous emulator, or being typed in
        return [float(v) for v in values]

    @app.callback(Output("emu-spectrum", "figure"), Output("emu-note", "children"),
                  Input("emu-select", "value"), Input({"type": "label", "index": ALL}, "value"),
                  Input("emu-overlay", "value"))
    def spectrum(name: str, values: list, overlay: str) -> tuple:
        emu = s.emulators[name]
        point = values_of(name, values)
        flux = emu.spectrum(point)
        other, note, other_name = None, "", ""
        if overlay == NEAREST:
            neighbours = emu.neighbours(s.config.data)
            if neighbours is None:
                note = "the training set of this emulator is not readable on its grid"
            else:
                sid, labels, other = neighbours.nearest(point)
                other_name = f"training spectrum {sid}"
                note = f"nearest training spectrum: {sid} at " + ", ".join(
                    f"{lab.name} {v:.4g}" for lab, v in zip(emu.labels, labels))
        elif overlay in s.emulators:
            second = s.emulators[overlay]
            at = {lab.name: v for lab, v in zip(emu.labels, point)}
            theirs = [at.get(lab.name, c) for lab, c in zip(second.labels, second.centre())]
            other = np.interp(emu.wavelength, second.wavelength, second.spectrum(theirs))
            other_name = overlay
        fig = spectrum_figure(emu.wavelength, flux, name, other, other_name,
                              title=", ".join(f"{lab.name} {v:.4g}"
                                              for lab, v in zip(emu.labels, point)),
                              revision=name)
        return fig, note

    @app.callback(Output("emu-bounds", "children"), Input("emu-select", "value"),
                  Input({"type": "label", "index": ALL}, "value"), Input("emu-snr", "value"))
    def bounds(name: str, values: list, snr: float | None) -> Any:
        if not snr or snr <= 0:
            raise PreventUpdate
        emu = s.emulators[name]
        crb = emu.bounds(values_of(name, values), float(snr))
        rows = [html.Tr([html.Td(lab.name), html.Td(f"{crb[lab.name]:.3g}"),
                         html.Td(lab.unit or "")]) for lab in emu.labels]
        return html.Table([html.Caption(f"Cramér–Rao bounds at S/N {snr:g} (other "
                                        "labels marginalised)"), *rows], id="emu-crb")

    @app.callback(Output("emu-download", "data"), Input("emu-fits", "n_clicks"),
                  Input("emu-csv", "n_clicks"), State("emu-select", "value"),
                  State({"type": "label", "index": ALL}, "value"), prevent_initial_call=True)
    def download(_fits: int, _csv: int, name: str, values: list) -> dict:
        from dash import ctx

        fmt = "fits" if ctx.triggered_id == "emu-fits" else "csv"
        data = s.emulators[name].export(values_of(name, values), fmt)
        base = name.split(" ")[0]
        return dcc.send_bytes(data, f"{base}-spectrum.{fmt}")


def _catalog_callbacks(app: Dash, s: Sources) -> None:
    view = s.catalog
    assert view is not None

    def selection(min_snr: float | None, max_snr: float | None, flags: list[int]
                  ) -> np.ndarray:
        return view.select(Filter(min_snr=min_snr, max_snr=max_snr,
                                  exclude_flags=int(sum(flags or []))))

    @app.callback(Output("cat-kiel", "figure"), Output("cat-hist", "figure"),
                  Input("cat-x", "value"), Input("cat-y", "value"),
                  Input("cat-colour", "value"), Input("cat-min-snr", "value"),
                  Input("cat-max-snr", "value"), Input("cat-flags", "value"))
    def overview(x: str, y: str, colour: str, min_snr, max_snr, flags) -> tuple:
        keep = selection(min_snr, max_snr, flags)
        return kiel_figure(view, keep, x, y, colour), histograms_figure(view, keep)

    @app.callback(Output("star-index", "data"), Input("cat-kiel", "clickData"),
                  State("cat-x", "value"), State("cat-y", "value"),
                  State("cat-min-snr", "value"), State("cat-max-snr", "value"),
                  State("cat-flags", "value"), prevent_initial_call=True)
    def clicked(click: dict | None, x: str, y: str, min_snr, max_snr, flags) -> int:
        if not click or not click.get("points"):
            raise PreventUpdate
        point = click["points"][0]
        if "customdata" in point and "z" not in point:  # a star of the scatter
            return int(point["customdata"])
        index = view.nearest(selection(min_snr, max_snr, flags), x, float(point["x"]),
                             y, float(point["y"]))
        if index is None:
            raise PreventUpdate
        return index

    @app.callback(Output("star-info", "children"), Output("star-plots", "children"),
                  Input("star-index", "data"), prevent_initial_call=True)
    def star(index: int | None) -> tuple:
        if index is None:
            raise PreventUpdate
        row = view.row(index)
        info = _star_table(row, list(view.labels), view.units)
        if s.inspector is None:
            return info, html.P(s.inspector_problem, id="star-problem")
        try:
            seen = s.inspector.inspect(row)
        except (StellarRayError, OSError) as err:
            return info, html.P(f"spectrum unavailable: {err}", id="star-problem")
        label = "model fit" if seen.model is not None else ""
        plots = [dcc.Graph(id="star-spectrum", figure=spectrum_figure(
            seen.wavelength, seen.flux, f"observed {seen.spectrum_id}", seen.model, label,
            sigma=seen.sigma if seen.model is not None else None,
            title=f"{seen.spectrum_id} ({seen.mode} mode, model frame)", revision="star"))]
        if seen.samples is not None:
            plots.append(dcc.Graph(id="star-corner", figure=corner_figure(
                seen.samples, seen.labels, view.units,
                [row.get(n, np.nan) for n in seen.labels])))
        return info, plots


def _star_table(row: dict[str, Any], labels: list[str], units: dict[str, str]) -> html.Div:
    """A star's estimates with their errors, its S/N and its flags by name."""
    cells = [html.Tr([html.Th("label"), html.Th("estimate"), html.Th("error")])]
    for name in labels:
        value, err = row.get(name), row.get(f"{name}_err")
        cells.append(html.Tr([html.Td(titled(name, units)),
                              html.Td("—" if value is None else f"{value:.4g}"),
                              html.Td("—" if err is None else f"±{err:.3g}")]))
    flags = int(row.get("flags") or 0)
    snr = row.get("snr")
    return html.Div([
        html.H4(str(row["spectrum_id"]), id="star-id"),
        html.Table(cells),
        html.P(f"S/N {snr:.1f}" if snr is not None else ""),
        html.P("flags: " + (", ".join(flag_names(flags)) or "none"), id="star-flags"),
    ])


def _runs_callbacks(app: Dash, s: Sources) -> None:
    @app.callback(Output("run-metric", "options"), Output("run-curves", "figure"),
                  Input("run-select", "value"), Input("run-metric", "value"))
    def curves(runs: list[str] | None, metrics: list[str] | None) -> tuple:
        histories = {r: read_history(s.runs.runs[r], s.config.storage_options)
                     for r in runs or []}
        options = sorted({k for rows in histories.values() for row in rows for k in row}
                         - {"epoch"})
        return options, curves_figure(histories, metrics or [])

    @app.callback(Output("sweep-table", "data"), Output("sweep-table", "columns"),
                  Input("sweep-select", "value"))
    def trials(sweep: str | None) -> tuple:
        if not sweep:
            return [], []
        table = sweep_table(s.runs.sweeps[sweep], s.config.storage_options)
        columns = [{"name": c, "id": c} for c in table.column_names]
        return table.to_pylist(), columns


def serve(config: DashboardConfig) -> None:
    """Load the sources and serve the dashboard until interrupted."""
    use_allotted_threads(os.cpu_count() or 1)
    app = make_app(config)
    log.info("dashboard on http://%s:%d", config.host, config.port)
    app.run(host=config.host, port=config.port, debug=False)
