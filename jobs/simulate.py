"""Ray job entry point for simulation:
``python -m jobs.simulate --config jobs/configs/simulate-lrs-small.yaml [--to URL]``
(``--to`` wins over the file's ``to:``)."""

from __future__ import annotations

import argparse

from stellar_ray.simulation.survey import load_simulation_job, simulate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--to")
    args = parser.parse_args()
    config, to = load_simulation_job(args.config)
    to = args.to or to
    if not to:
        parser.error("no output: give --to or a to: line in the configuration")
    manifest = simulate(config, to, address="auto", progress=False)
    print(f"simulated {manifest.num_rows} spectra at {to}")


if __name__ == "__main__":
    main()
