"""Ray job entry point for sweeps:
``python -m jobs.tune --config jobs/configs/tune-payne-small.yaml``."""

from __future__ import annotations

import argparse

from stellar_ray.training.sweep import SweepConfig, sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True)
    args = parser.parse_args()
    summary = sweep(SweepConfig.from_yaml(args.config), address="auto")
    print(f"{summary['trials']} trials; best {summary['params']}; results "
          f"{summary['results']}; best configuration {summary['best_config']}")


if __name__ == "__main__":
    main()
