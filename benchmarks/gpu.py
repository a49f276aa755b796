"""Spectra per second per GPU, for a machine with NVIDIA GPUs (``benchmarks/gpu.sh``).

    python -m benchmarks.gpu [--spectra 20000] [--batch 256] [--actors-per-gpu 2]

Training (bare loops on one GPU, bf16 autocast and TF32, batches from pinned memory copied
without blocking): SpecViT at its paper's size on the LRS grid (23,201 pixels), and
TransformerPayne at its paper's size with 1,024 random wavelengths per spectrum, as
training queries them. Inference: SpecViT and the cINN with 256 posterior draws, bare (TF32)
and through ``stellar-ray infer`` over ``--spectra`` spectra on local disk, with
``--actors-per-gpu`` actors sharing each GPU so that one actor's reads and commits overlap
another's model calls. Refuses, with exit code 2, where torch sees no CUDA GPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch

from benchmarks.figures import MEASURED, report, table
from stellar_ray.models import build
from stellar_ray.spectra.presets import lrs_grid

TRAIN_SECONDS = 20.0
WAVELENGTH_QUERIES = 1024


def require_gpu() -> int:
    """The number of CUDA GPUs; exits with 2 and the reason when there are none."""
    if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
        print("benchmarks.gpu: no CUDA GPU visible to torch (torch "
              f"{torch.__version__}, CUDA build: {torch.version.cuda}); run it on a machine "
              "with NVIDIA GPUs and a CUDA build of torch", file=sys.stderr)
        raise SystemExit(2)
    return torch.cuda.device_count()


def _timed_steps(step, seconds: float) -> tuple[int, float]:
    """Run ``step()`` (returning its batch size) for about ``seconds`` after three warm-up
    calls; (spectra, elapsed)."""
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        n += step()
    torch.cuda.synchronize()
    return n, time.perf_counter() - start


def _training_rate(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...],
                   target: torch.Tensor) -> float:
    """Spectra/s of AdamW steps on an MSE loss under bf16 autocast, the batch (pinned in
    host memory) copied to the GPU without blocking at every step."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    inputs = tuple(t.pin_memory() for t in inputs)
    target = target.pin_memory()

    def step() -> int:
        args = [t.cuda(non_blocking=True) for t in inputs]
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.mse_loss(model(*args).float(),
                                                target.cuda(non_blocking=True))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return len(target)

    n, seconds = _timed_steps(step, TRAIN_SECONDS)
    return n / seconds


def train_specvit(batch: int, npix: int) -> float:
    model = build("specvit", n_labels=3, n_pix=npix).cuda().train()
    return _training_rate(model, (torch.randn(batch, npix).add_(1.0),), torch.randn(batch, 3))


def train_transformer_payne(batch: int, npix: int) -> float:
    model = build("transformer_payne", n_labels=3).cuda().train()
    wave = torch.linspace(3700.0, 9500.0, npix)
    idx = torch.argsort(torch.rand(batch, npix), dim=1)[:, :WAVELENGTH_QUERIES]
    return _training_rate(model, (torch.randn(batch, 3), wave[idx]),
                          torch.rand(batch, WAVELENGTH_QUERIES))


def infer_bare(name: str, batch: int, npix: int, samples: int) -> float:
    model = build(name, n_labels=3, n_pix=npix).cuda().eval()
    x = torch.randn(batch, npix).add_(1.0).pin_memory()

    def step() -> int:
        with torch.no_grad():
            xb = x.cuda(non_blocking=True)
            if hasattr(model, "posterior"):
                model.posterior(xb, samples, (0.16, 0.5, 0.84))
            else:
                model(xb)
        return batch

    n, seconds = _timed_steps(step, TRAIN_SECONDS / 2)
    return n / seconds


def infer_pipeline(name: str, spectra: int, batch: int, samples: int, gpus: int,
                   actors_per_gpu: int, tmp: str) -> float:
    """``stellar-ray infer`` of the model at its paper's size over ``spectra`` LRS spectra:
    spectra/s per GPU (end to end)."""
    from benchmarks.infer_rate import make_artifact, make_data
    from stellar_ray.inference.config import InferConfig
    from stellar_ray.inference.pipeline import infer

    data = os.path.join(tmp, "data")
    model_url = os.path.join(tmp, f"model-{name}")
    make_artifact(model_url, name, make_data(data, spectra), paper=True)
    actors = gpus * actors_per_gpu
    summary = infer(InferConfig(
        model=model_url, data=data, to=os.path.join(tmp, f"catalog-{name}"), samples=samples,
        noise_redraws=0, gpu_precision="tf32",
        actors={"min_actors": actors, "max_actors": actors, "cpus_per_actor": 1,
                "gpus_per_actor": 1 / actors_per_gpu, "batch_size": batch}), progress=False)
    return summary.spectra_per_s / gpus


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spectra", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--actors-per-gpu", type=int, default=2)
    args = parser.parse_args(argv)
    gpus = require_gpu()
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    npix = lrs_grid().npix
    name = torch.cuda.get_device_name(0)
    print(f"{gpus} × {name}; torch {torch.__version__}", flush=True)
    report("gpu", "train SpecViT (bf16), 1 GPU", train_specvit(args.batch, npix), "spectra/s")
    report("gpu", "train TransformerPayne (bf16), 1 GPU",
           train_transformer_payne(max(8, args.batch // 8), npix), "spectra/s")
    for model in ("specvit", "cinn"):
        bare = report("gpu", f"infer {model}, bare (TF32), 1 GPU",
                      infer_bare(model, args.batch, npix, args.samples), "spectra/s")
        import ray

        from stellar_ray.runtime import init_ray

        init_ray()
        with tempfile.TemporaryDirectory() as tmp:
            report("gpu", f"infer {model}, stellar-ray infer, per GPU",
                   infer_pipeline(model, args.spectra, args.batch, args.samples, gpus,
                                  args.actors_per_gpu, tmp),
                   "spectra/s", "bare loop, 1 GPU", bare.value)
        ray.shutdown()
    print()
    print(table(MEASURED))


if __name__ == "__main__":
    main()
