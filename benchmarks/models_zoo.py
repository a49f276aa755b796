"""Every model of the zoo at its paper's default size on this CPU.

    python -m benchmarks.models_zoo [--batch 256] [--only specvit,cinn] [--compile]

For each model: parameters, forward FLOPs per spectrum (torch's FLOP counter), spectra/s of
the forward pass in eval mode at the given batch, and the achieved GFLOP/s against an fp32
matrix-multiply peak measured in the same run. TransformerPayne evaluates the paper's
22,315-wavelength grid and is timed at a small batch (it costs ~0.4 TFLOP per spectrum);
the batch used is printed. Classical baselines are fitted on random data first (no FLOPs).
The cINN is timed whole (encoder and flow's log-density) and its encoder alone;
``--compile`` adds the transformers and that encoder through ``torch.compile``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.figures import best_bare_rate, report
from stellar_ray.models import build, card, names

#: Input sizes at the papers' defaults.
N_PIX_REGRESSOR = 4096  # PFS-like grid of paper 003
BATCH_OVERRIDE = {"transformer_payne": 2}
#: The models ``--compile`` also times through torch.compile: the transformer encoders.
COMPILED = ("specvit", "overlap_vit")


def matmul_peak(n: int = 2048, repeats: int = 10) -> float:
    """fp32 GFLOP/s of torch.mm on n × n matrices (best of ``repeats``)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - start) / 1e9)
    return best


def lstm_flops(model: torch.nn.Module, inputs: tuple) -> int:
    """Multiply-add FLOPs of every nn.LSTM in ``model`` for ``inputs`` (torch's counter does
    not see inside the fused LSTM op): 2 · 4h · (input + h) per step, layer and direction."""
    total = 0

    def hook(module: torch.nn.LSTM, args, _output) -> None:
        nonlocal total
        x = args[0]
        batch, steps = (x.shape[0], x.shape[1]) if module.batch_first else x.shape[:2]
        dirs = 2 if module.bidirectional else 1
        width = module.input_size
        for _ in range(module.num_layers):
            total += dirs * batch * steps * 2 * 4 * module.hidden_size * (
                width + module.hidden_size)
            width = dirs * module.hidden_size

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, torch.nn.LSTM)]
    with torch.no_grad():
        model(*inputs)
    for h in handles:
        h.remove()
    return total


def inputs_for(name: str, model: torch.nn.Module, batch: int) -> tuple:
    family = card(name).family
    g = torch.Generator().manual_seed(0)
    if family == "emulator":
        n_labels = model.embed[0].in_features if name in ("transformer_payne", "smnet") \
            else model.n_labels
        return (torch.rand(batch, n_labels, generator=g) - 0.5,)
    flux = 1.0 + 0.1 * torch.rand(batch, N_PIX_REGRESSOR, generator=g)
    if family == "posterior":
        return flux, torch.randn(batch, model.n_labels, generator=g)
    return (flux,)


def make(name: str) -> torch.nn.Module:
    if name == "transformer_payne":
        return build(name, wavelength=torch.linspace(4000.0, 5000.0, 22315))
    model = build(name)
    if card(name).family == "classical":
        rng = np.random.default_rng(0)
        model.fit(1.0 + 0.1 * rng.random((512, N_PIX_REGRESSOR)), rng.normal(size=(512, 1)))
    return model


def measure(name: str, batch: int, compiled: bool = False, part: str | None = None) -> dict:
    """Parameters, forward FLOPs per spectrum and spectra/s of model ``name`` (or of its
    sub-module ``part``, e.g. the cINN's ``summary``), optionally through torch.compile."""
    model = make(name).eval()
    batch = BATCH_OVERRIDE.get(name, batch)
    inputs = inputs_for(name, model, batch)
    if part is not None:
        model, inputs = getattr(model, part), inputs[:1]
    params = sum(p.numel() for p in model.parameters())
    flops = None
    if card(name).family != "classical":
        # Counted with autograd on, outside torch.compile: the counter sees every op then.
        counter = FlopCounterMode(display=False)
        small = tuple(t[:2] for t in inputs)
        with counter:
            model(*small)
        flops = (counter.get_total_flops() + lstm_flops(model, small)) / 2
    run = torch.compile(model) if compiled else model
    with torch.no_grad():
        run(*inputs)  # warm-up (and compilation)
        start, runs = time.perf_counter(), 0
        while runs < 2 or time.perf_counter() - start < 3.0:
            run(*inputs)
            runs += 1
        rate = batch * runs / (time.perf_counter() - start)
    return {"params": params, "flops": flops, "rate": rate, "batch": batch}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--only", default=",".join(
        n for n in names() if card(n).family != "hml"))  # HML: benchmarks.hml
    parser.add_argument("--compile", action="store_true",
                        help="also time the transformers and the cINN's encoder through "
                             "torch.compile (tens of seconds of compilation each)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    # the peak at the fastest thread count; the models run at that count
    peak, threads = best_bare_rate(matmul_peak)
    torch.set_num_threads(threads)
    print(f"fp32 matmul peak on this machine: {peak:.1f} GFLOP/s ({threads} threads)")
    print(f"{'model':18s} {'params':>12s} {'GFLOP/spec':>11s} {'batch':>6s} {'spectra/s':>10s}"
          f" {'GFLOP/s':>8s} {'of peak':>8s}")
    rows = [(name, None, False) for name in args.only.split(",")]
    if "cinn" in args.only.split(","):
        rows.append(("cinn", "summary", False))  # its encoder alone
    if args.compile:
        rows += [(name, part, True) for name, part, _ in rows
                 if name in COMPILED or part is not None]
    for name, part, compiled in rows:
        r = measure(name, args.batch, compiled, part)
        label = name + (" encoder" if part else "") + (" compiled" if compiled else "")
        gflop = None if r["flops"] is None else r["flops"] / 1e9
        achieved = None if gflop is None else gflop * r["rate"]
        print(f"{label:18s} {r['params']:12,d} "
              f"{'n/a' if gflop is None else f'{gflop:.3f}':>11s} {r['batch']:6d} "
              f"{r['rate']:10.1f} {'n/a' if achieved is None else f'{achieved:.1f}':>8s} "
              f"{'n/a' if achieved is None else f'{achieved / peak:.0%}':>8s}", flush=True)
        if achieved is not None:
            report("models_zoo", f"{label} forward, batch {r['batch']}", achieved, "GFLOP/s",
                   f"fp32 matmul peak, {threads} threads", peak)
        else:
            report("models_zoo", f"{label} forward, batch {r['batch']}", r["rate"],
                   "spectra/s")

if __name__ == "__main__":
    main()
