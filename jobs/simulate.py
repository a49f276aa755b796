"""Ray job entry point for simulation:
``python -m jobs.simulate --config jobs/configs/simulate-lrs-small.yaml --to URL``."""

from __future__ import annotations

import argparse

from stellar_ray.simulate.survey import SimulationConfig, simulate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--to", required=True)
    args = parser.parse_args()
    manifest = simulate(SimulationConfig.from_yaml(args.config), args.to, address="auto")
    print(f"simulated {manifest.num_rows} spectra at {args.to}")


if __name__ == "__main__":
    main()
