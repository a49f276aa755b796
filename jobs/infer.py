"""Ray job entry point for inference:
``python -m jobs.infer --config jobs/configs/infer-cinn-small.yaml``."""

from __future__ import annotations

import argparse
import sys

from stellar_ray.inference.config import InferConfig
from stellar_ray.inference.pipeline import infer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True)
    args = parser.parse_args()
    summary = infer(InferConfig.from_yaml(args.config), address="auto", progress=False)
    print(summary.text())
    sys.exit(1 if summary.failed_shards else 0)


if __name__ == "__main__":
    main()
