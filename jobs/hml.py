"""Ray job entry point for the hybrid method of paper 001 (clone a grid, build its
generator): ``python -m jobs.hml --config jobs/configs/hml-small.yaml``."""

from __future__ import annotations

import argparse

from stellar_ray.hml.job import HMLJobConfig, run_hml_job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True)
    args = parser.parse_args()
    cfg = HMLJobConfig.from_yaml(args.config)
    figures = run_hml_job(cfg, address="auto")
    print(f"built an HML generator of {figures['lines']:.0f} lines over "
          f"{figures['nodes']:.0f} grid spectra at {cfg.generator}")


if __name__ == "__main__":
    main()
