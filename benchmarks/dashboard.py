"""How fast the dashboard opens a large catalog and answers a filter.

    python -m benchmarks.dashboard [--rows 1000000]

Writes a catalog of ``--rows`` random stars (three labels with errors and five quantiles
each, S/N, flags: 24 columns, as `infer` writes them) in parts of 100,000 rows, then times
(a) opening it as the dashboard does (every part read and checksummed, the plotted columns
kept), and (b) a filter answered through the app's own HTTP callback endpoint (Flask's test
client: the server's whole work — selection, density image, histograms, the figures'
JSON — without a browser's drawing). The target for both is 2 s.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import pyarrow as pa

from benchmarks.figures import report
from stellar_ray.dashboard.app import DashboardConfig, Sources, make_app
from stellar_ray.inference.quality import CatalogFlag
from stellar_ray.spectra.catalog import CatalogWriter
from stellar_ray.spectra.schema import quantile_column

TARGET_S = 2.0
PART_ROWS = 100_000
QUANTILES = (0.025, 0.16, 0.5, 0.84, 0.975)


def make_catalog(url: str, rows: int) -> None:
    rng = np.random.default_rng(0)
    writer = CatalogWriter(url)
    for start in range(0, rows, PART_ROWS):
        n = min(PART_ROWS, rows - start)
        giant = rng.random(n) < 0.3
        teff = np.where(giant, rng.normal(4700, 300, n), rng.normal(5800, 700, n))
        logg = np.where(giant, 2.5 + (teff - 4700) / 800, 4.4 - (teff - 5800) / 4000)
        logg += rng.normal(0, 0.15, n)
        columns = {"spectrum_id": [f"star-{start + i:09d}" for i in range(n)]}
        for name, values, err in (("teff", teff, 80.0), ("logg", logg, 0.15),
                                  ("fe_h", rng.normal(-0.2, 0.3, n), 0.08)):
            columns[name] = values
            columns[f"{name}_err"] = np.full(n, err, dtype=np.float32)
            for q in QUANTILES:
                columns[quantile_column(name, q)] = (values + err * rng.normal(0, 1, n)
                                                     ).astype(np.float32)
        snr = rng.lognormal(3.0, 0.8, n).astype(np.float32)
        columns["snr"] = snr
        columns["flags"] = np.where(snr < 10, int(CatalogFlag.LOW_SNR), 0).astype(np.int32)
        writer.commit(f"{start:09d}", pa.table(columns))
    writer.finalize()


def filter_request(app, values: dict[str, object]) -> dict:
    """The JSON Dash's browser side posts when an input of the catalog overview changes."""
    client = app.server.test_client()
    deps = client.get("/_dash-dependencies").get_json()
    dep = next(d for d in deps if "cat-kiel.figure" in d["output"])
    outputs = [{"id": o.split(".")[0], "property": o.split(".")[1]}
               for o in dep["output"].strip(".").split("...")]
    inputs = [{**i, "value": values.get(i["id"])} for i in dep["inputs"]]
    return {"output": dep["output"], "outputs": outputs, "inputs": inputs,
            "changedPropIds": ["cat-min-snr.value"], "state": []}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"{tmp}/catalog"
        started = time.perf_counter()
        make_catalog(url, args.rows)
        print(f"catalog of {args.rows:,} rows written in {time.perf_counter() - started:.1f} s",
              flush=True)
        config = DashboardConfig(catalog=url)
        started = time.perf_counter()
        sources = Sources.load(config)
        app = make_app(config, sources)
        opened = time.perf_counter() - started
        print(f"open: {opened:.2f} s", flush=True)
        client = app.server.test_client()
        times = []
        for k in range(args.repeats):
            body = filter_request(app, {
                "cat-x": "teff", "cat-y": "logg", "cat-colour": "fe_h",
                "cat-min-snr": 10 + 5 * k, "cat-max-snr": None,
                "cat-flags": [int(CatalogFlag.POOR_FIT)]})
            started = time.perf_counter()
            response = client.post("/_dash-update-component", json=body)
            times.append(time.perf_counter() - started)
            assert response.status_code == 200, response.get_data(as_text=True)[:500]
            print(f"filter {k + 1}: {times[-1]:.3f} s ({len(response.data) / 1e3:.0f} kB)",
                  flush=True)
    for name, value in ((f"open a {args.rows:,}-row catalog", opened),
                        ("a filter's answer (median)", statistics.median(times))):
        report("dashboard", name, value, "s", "target", TARGET_S, lower_is_better=True)


if __name__ == "__main__":
    main()
