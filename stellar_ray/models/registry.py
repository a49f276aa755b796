"""The model zoo by name: ``build(name, **config)``, ``names()`` and each model's card.

A card gives the model's task (its family and what training and inference do with it,
:mod:`.tasks`), the paper and section the model follows, the paper's default configuration
(what ``build(name)`` gives), the parameter count the paper states (where it does), the
paper's loss, and a tiny configuration for tests and CPU runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

from ..errors import ModelError
from ..hml.generator import HMLGenerator
from .cinn import build_cinn
from .classical import GBDTBaseline, RidgeBaseline
from .emulators import big_payne, the_payne
from .recurrent_cnn import BiLSTMRegressor, DeepCNN, ResNet1D
from .smnet import SMNet
from .tasks import ClassicalTask, EmulatorTask, Family, HMLTask, PosteriorTask, RegressorTask, Task
from .transformer_payne import TransformerPayne
from .vit import ConvStemLSTM, SpecViT, overlap_vit

EMULATOR = EmulatorTask()
REGRESSOR = RegressorTask()
# paper 002 §3.3: AdamW at a peak 1e-4, batch 16, linear warm-up over the first 10 % of the
# steps, cosine decay to zero
PAPER_002_OPTIM = {"lr": 1e-4, "batch_size": 16, "warmup_fraction": 0.1, "min_lr": 0.0}
# paper 000 §4.3: learning rate 4e-4 and batch 1024, both ×0.8 after 10 epochs without
# improvement, the batch not below 128; training stops after 50 such epochs
SMNET_OPTIM = {"lr": 4e-4, "batch_size": 1024, "schedule": "plateau", "plateau_factor": 0.8,
               "plateau_patience": 10, "min_batch_size": 128, "early_stop_patience": 50}


@dataclass(frozen=True)
class ModelCard:
    name: str
    task: Task
    builder: Callable[..., nn.Module]
    paper: str
    section: str
    paper_params: float | None  # parameters stated by the paper, or None
    params: int  # parameters of build(name) (the default configuration)
    tiny: dict[str, Any] = field(default_factory=dict)
    notes: str = ""
    loss: Literal["mse", "l1"] = "mse"  # the paper's, unless a training config says
    # the paper's optimiser settings (training.config.OptimConfig fields); a training
    # config's own optim settings go over them
    optim: dict[str, Any] = field(default_factory=dict)

    @property
    def family(self) -> Family:
        return self.task.family


_CARDS = [
    ModelCard("payne", EMULATOR, the_payne, "002 TransformerPayne", "Appendix A, listing 1",
              None, 2_907_947, {"n_labels": 5, "n_pix": 64, "hidden": (32, 32)},
              "MLP 128-128, GELU, sigmoid output; default grid of 22,315 pixels",
              optim=PAPER_002_OPTIM),
    ModelCard("bigpayne", EMULATOR, big_payne, "002 TransformerPayne",
              "Appendix A, listing 2", None, 54_320_939,
              {"n_labels": 5, "n_pix": 64, "hidden": (64, 64, 64)}, "MLP 2048×3",
              optim=PAPER_002_OPTIM),
    ModelCard("transformer_payne", EmulatorTask(wavelength_queries=True), TransformerPayne,
              "002 TransformerPayne", "§3.1, listing 4", None, 17_004_033,
              {"n_labels": 5, "d": 32, "n_tokens": 4, "depth": 2, "heads": 4},
              "d = 256, 16 tokens, 16 blocks, 8 heads; queried at any wavelengths",
              optim=PAPER_002_OPTIM),
    ModelCard("smnet", EmulatorTask(target="log1p", median_baseline=True), SMNet, "000 SM-Net",
              "§4.1–4.3", None, 258_597_127,
              {"n_labels": 3, "n_pix": 64, "widths": (64, 128), "embed": 16,
               "channels": 8, "dropout": 0.0},
              "3 → 4096 → 16384 → L = 11,655; the paper does not state its size",
              optim=SMNET_OPTIM),
    # paper 003 Table 1: the transformers train with L1, the other regressors with MSE
    ModelCard("specvit", REGRESSOR, SpecViT, "003 SpecViT", "§3.2–3.4", 4.8e6, 4_809_729,
              {"n_labels": 2, "n_pix": 128, "d": 32, "heads": 4, "layers": 2}, loss="l1"),
    ModelCard("overlap_vit", REGRESSOR, overlap_vit, "003 SpecViT", "§3.6", 4.8e6, 4_813_569,
              {"n_labels": 2, "n_pix": 128, "d": 32, "heads": 4, "layers": 2}, loss="l1"),
    ModelCard("convstem_lstm", REGRESSOR, ConvStemLSTM, "003 SpecViT", "§3.5", 4.61e6,
              4_606_785,
              {"n_labels": 2, "n_pix": 128, "d": 32, "stem": (8, 16, 16), "lstm_hidden": 16,
               "heads": 4, "layers": 2}),
    ModelCard("bilstm", REGRESSOR, BiLSTMRegressor, "003 SpecViT", "§3.6", 4.2e6, 4_211_457,
              {"n_labels": 2, "n_pix": 128, "d": 16, "hidden": 16, "layers": 3}),
    ModelCard("resnet18_1d", REGRESSOR, ResNet1D, "003 SpecViT", "§3.6", 4.9e6, 4_864_105,
              {"n_labels": 2, "n_pix": 128, "widths": (8, 16, 16, 32)}),
    ModelCard("deep_cnn", REGRESSOR, DeepCNN, "003 SpecViT", "§3.6", 4.7e6, 4_674_945,
              {"n_labels": 2, "n_pix": 128, "channels": (8, 8, 16, 16, 16, 16, 32, 32),
               "pool": 2, "pooled": 2, "dense": (64, 32)},
              "eight convolutions (kernel 7) the paper describes only in outline"),
    ModelCard("ridge", ClassicalTask(fitting="normal_equations"), RidgeBaseline, "003 SpecViT",
              "§4 baselines", None, 0, {"n_labels": 2, "n_pix": 128},
              "ridge α = 10⁵ on median-normalised flux, from normal equations"),
    ModelCard("gbdt", ClassicalTask(fitting="lightgbm"), GBDTBaseline, "003 SpecViT",
              "§4 baselines (LightGBM)", None, 0,
              {"n_labels": 2, "n_pix": 128, "n_estimators": 50},
              "LightGBM, 2,500 trees per label; data parallel through Ray Train"),
    ModelCard("cinn", PosteriorTask(), build_cinn, "004 cINN", "method", None, 5_618_044,
              {"n_labels": 3, "n_pix": 128, "condition": "convstem_lstm",
               "condition_config": {"d": 32, "stem": (8, 16, 16), "lstm_hidden": 16,
                                    "heads": 4, "layers": 1},
               "transforms": 2, "hidden": (32, 32)},
              "zuko neural spline flow conditioned on a ConvStem+LSTM summary"),
    ModelCard("hml", HMLTask(), HMLGenerator, "001 blase3D", "§2–4", None, 0,
              {"n_labels": 3, "n_lines": 4, "arm_npix": (64,)},
              "built from a grid with stellar-ray hml clone and hml build, not trained"),
]
CARDS: dict[str, ModelCard] = {c.name: c for c in _CARDS}


def names() -> list[str]:
    """Every model name ``build`` accepts."""
    return list(CARDS)


def card(name: str) -> ModelCard:
    if name not in CARDS:
        raise ModelError(f"unknown model '{name}'; choose from {names()}")
    return CARDS[name]


def build(name: str, **config: Any) -> nn.Module:
    """The model ``name`` at the paper's default size, with ``config`` overriding."""
    c = card(name)
    try:
        return c.builder(**config)
    except TypeError as err:
        raise ModelError(f"model '{name}': {err}") from err
