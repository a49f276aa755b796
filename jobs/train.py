"""Ray job entry point for training: ``python -m jobs.train --config jobs/configs/X.yaml``."""

from __future__ import annotations

import argparse

from stellar_ray.training.config import TrainConfig
from stellar_ray.training.run import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True)
    args = parser.parse_args()
    result = train(TrainConfig.from_yaml(args.config), address="auto")
    print(f"artifact: {result.artifact}")


if __name__ == "__main__":
    main()
