"""Ray Train for every family: two workers, validation loss, resumption, a killed worker,
the artifact, fine-tuning and bad configurations."""

from pathlib import Path

import numpy as np
import pytest
import torch

from stellar_ray.artifact import load_artifact
from stellar_ray.errors import SpectraError
from stellar_ray.simulation.survey import SimulationConfig, simulate
from stellar_ray.training.config import TrainConfig
from stellar_ray.training.history import read_history
from stellar_ray.training.run import train
from stellar_ray.training.schedule import Plateau

from .helpers import SURVEY, TINY, fitted_payne

pytestmark = pytest.mark.timeout(600)

@pytest.fixture(scope="module")
def survey(ray_session, tmp_path_factory):
    url = str(tmp_path_factory.mktemp("train") / "survey")
    simulate(SimulationConfig.model_validate(SURVEY), url, progress=False)
    return url


def config(survey, tmp_path, model, **kw):
    data = {"train": survey, "labels": ["teff", "logg", "fe_h"], "validation_fraction": 0.2}
    base = {"model": model, "model_args": TINY[model], "data": data,
            "optim": {"epochs": 2, "batch_size": 16, "lr": 2e-3, "warmup_fraction": 0.05,
                      "validate_every": 1},
            "scaling": {"num_workers": 2, "cpus_per_worker": 0.5},
            "output": str(tmp_path / "runs"), "name": model}
    for key, value in kw.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return TrainConfig.model_validate(base)


def test_a_stopped_run_resumes_at_the_right_epoch(survey, tmp_path):
    first = train(config(survey, tmp_path, "payne", optim={"epochs": 1}))
    assert first.epochs == 1
    second = train(config(survey, tmp_path, "payne", optim={"epochs": 3}))
    assert second.epochs == 3
    assert [m["epoch"] for m in second.history] == [0, 1, 2]


def test_a_killed_worker_is_replaced_and_training_completes(survey, tmp_path):
    marker = tmp_path / "killed"
    cfg = config(survey, tmp_path, "payne", optim={"epochs": 3},
                 data={"cache_bytes": 0},  # streamed through Ray Data's shuffle buffer
                 scaling={"max_failures": 2},
                 worker_env={"STELLAR_RAY_FAIL_AT": f"1:1:{marker}"})
    result = train(cfg)
    assert marker.exists()  # the rank-1 worker process really exited at epoch 1
    assert result.epochs == 3
    assert [m["epoch"] for m in result.history] == [0, 1, 2]
    # every epoch once in the run's history, the repeated epoch of the failed attempt
    # replaced; each with its training and validation loss
    history = read_history(result.run_path)
    assert [m["epoch"] for m in history] == [0, 1, 2]
    assert all(np.isfinite(m["train_loss"]) and np.isfinite(m["val_loss"]) for m in history)


def test_fine_tuning_widens_the_input_layer(survey, tmp_path):
    # the base: a two-label Payne of the same size, fitted in this process
    base = fitted_payne(survey, tmp_path / "base", steps=100, labels=["teff", "logg"])
    tuned = train(config(survey, tmp_path, "payne", optim={"epochs": 1, "lr": 5e-4},
                         init_from=base, name="tuned"))
    b = load_artifact(base).model.state_dict()
    t = load_artifact(tuned.artifact).model.state_dict()
    first = "net.0.weight"
    assert b[first].shape[1] == 2 and t[first].shape[1] == 3
    # the tuned model started from the base: its first two input columns stay close
    assert torch.nn.functional.cosine_similarity(t[first][:, :2].flatten(),
                                                 b[first].flatten(), dim=0) > 0.5


def test_bad_configurations_are_named(survey, tmp_path):
    with pytest.raises(ValueError, match="unknown model 'gpt'"):
        TrainConfig.model_validate({"model": "gpt", "data": {"train": survey,
                                    "labels": ["teff"]}, "output": "x"})
    with pytest.raises(ValueError, match="extra"):
        TrainConfig.model_validate({"model": "payne", "data": {"train": survey,
                                    "labels": ["teff"]}, "output": "x", "colour": 1})
    with pytest.raises(SpectraError, match="label 'vturb' is not in the dataset"):
        train(config(survey, tmp_path, "specvit", data={"labels": ["teff", "vturb"]}))
    with pytest.raises(SpectraError, match="model expects 512 pixels, the dataset grid has 256"):
        train(config(survey, tmp_path, "specvit", model_args={"n_pix": 512}))


def test_non_finite_loss_names_the_step(survey, tmp_path):
    cfg = config(survey, tmp_path, "payne", optim={"epochs": 1, "lr": 1e30,
                                                   "grad_clip": 1e30},
                 scaling={"num_workers": 1, "cpus_per_worker": 1.0})
    with pytest.raises(Exception, match=r"non-finite loss \(nan\) at epoch 0, step \d+; "
                                         r"the last good checkpoint"):
        train(cfg)


def test_asha_sweep_of_three_trials_names_the_best(survey, tmp_path):
    import pyarrow.parquet as pq
    import yaml

    from stellar_ray.training.sweep import SweepConfig, sweep

    base = config(survey, tmp_path, "payne", optim={"epochs": 2},
                  scaling={"num_workers": 1, "cpus_per_worker": 0.5}).model_dump(mode="json")
    summary = sweep(SweepConfig(base=base, search={"optim.lr": {"choice": [1e-4, 1e-3,
                                                                            3e-3]}},
                                num_samples=3, max_concurrent=3))
    table = pq.read_table(summary["results"]).to_pandas()
    assert len(table) == 3 == summary["trials"]
    assert summary["params"]["optim.lr"] in (1e-4, 1e-3, 3e-3)
    assert summary["metrics"]["val_loss"] == pytest.approx(table["val_loss"].min())
    best = yaml.safe_load(Path(summary["best_config"]).read_text())
    assert best["optim"]["lr"] == summary["params"]["optim.lr"]
    # each trial's run keeps its own epoch history (ASHA may stop trials after epoch 1)
    histories = [read_history(str(run)) for run in (tmp_path / "runs").glob("payne-*")]
    assert len(histories) == 3 and all(h and h[0]["epoch"] == 0 for h in histories)


def test_pbt_exploit_continues_from_the_donors_weights(survey, tmp_path):
    from stellar_ray.training.sweep import SweepConfig, sweep

    base = config(survey, tmp_path, "payne", optim={"epochs": 2},
                  scaling={"num_workers": 1, "cpus_per_worker": 0.5}).model_dump(mode="json")
    summary = sweep(SweepConfig(
        base=base, search={"optim.lr": {"choice": [1e-6, 3e-3]}}, num_samples=2,
        max_concurrent=2, name="pbt",
        scheduler={"kind": "pbt", "perturbation_interval": 1, "quantile_fraction": 0.5,
                   "synch": True}))
    assert summary["trials"] == 2
    # a trial that copied another starts a new run from the donor's checkpoint: its first
    # epoch is after the donor's, and the donor's weights came with it
    copies = sorted((tmp_path / "runs").glob("payne-*-from-*"))
    assert copies, sorted(p.name for p in (tmp_path / "runs").iterdir())
    epochs = [torch.load(p, weights_only=True)["epoch"]
              for copy in copies for p in copy.glob("checkpoint_*/state.pt")]
    assert epochs and min(epochs) >= 1, epochs


def test_training_on_a_survey_simulated_on_the_fly(ray_session, tmp_path):
    data = {"simulate": {**SURVEY, "n_spectra": 256}, "labels": ["teff", "logg", "fe_h"],
            "validation_fraction": 0.25}
    cfg = TrainConfig.model_validate({
        "model": "specvit", "model_args": TINY["specvit"], "data": data,
        "optim": {"epochs": 2, "batch_size": 16, "lr": 2e-3, "warmup_fraction": 0.05,
                  "validate_every": 1},
        "scaling": {"num_workers": 2, "cpus_per_worker": 0.5},
        "output": str(tmp_path / "runs"), "name": "on-the-fly"})
    result = train(cfg)
    losses = [m["val_loss"] for m in result.history]
    assert result.epochs == 2 and losses[1] < losses[0], losses
    artifact = load_artifact(result.artifact)
    assert artifact.grid.npix == 256
    assert artifact.metadata.normalisation.labels == ["teff", "logg", "fe_h"]
    with pytest.raises(ValueError, match="exactly one of"):
        TrainConfig.model_validate({"model": "specvit", "output": "x",
                                    "data": {**data, "train": "somewhere"}})


def test_plateau_schedule_decays_lr_and_batch_and_stops_early():
    cfg = TrainConfig.model_validate({
        "model": "smnet", "data": {"train": "x", "labels": ["teff"]}, "output": "x",
        "optim": {"schedule": "plateau", "batch_size": 100, "plateau_patience": 2,
                  "min_batch_size": 1, "early_stop_patience": 5}})
    state = Plateau(scale=1.0, batch=100)
    history = []
    for improved in (True, False, False, False, False, False):
        state.update(improved, cfg.optim)
        history.append((round(state.scale, 3), state.batch, state.stop))
    assert history == [(1.0, 100, False), (1.0, 100, False), (0.8, 80, False),
                       (0.8, 80, False), (0.64, 64, False), (0.64, 64, True)]


def test_plateau_counts_the_epochs_between_validations_and_keeps_a_small_batch():
    """Validating every 3 epochs, one stale validation is 3 stale epochs: with patience 2 the
    schedule decays once, and after a second the 6 stale epochs reach early stopping. A batch
    configured below min_batch_size is not raised to it."""
    cfg = TrainConfig.model_validate({
        "model": "smnet", "data": {"train": "x", "labels": ["teff"]}, "output": "x",
        "optim": {"batch_size": 16, "plateau_patience": 2, "early_stop_patience": 6}})
    assert cfg.optim.min_batch_size == 128 and cfg.optim.schedule == "plateau"
    state = Plateau(scale=1.0, batch=16)
    state.update(False, cfg.optim, epochs=3)
    assert (round(state.scale, 3), state.batch, state.stale, state.stop) == (0.8, 16, 3, False)
    state.update(False, cfg.optim, epochs=3)  # stale 6: two more multiples of 2 passed
    assert (round(state.scale, 3), state.batch, state.stop) == (0.512, 16, True)


def test_validation_interval_follows_the_training_set_size():
    optim = TrainConfig.model_validate({
        "model": "specvit", "data": {"train": "x", "labels": ["teff"]}, "output": "x",
        "optim": {"epochs": 50}}).optim
    assert optim.validate_every == "auto"
    assert optim.validation_interval(100_000) == 1
    assert optim.validation_interval(1_000) == 20
    assert [e for e in range(50) if optim.validates(e, 1_000)] == [19, 39, 49]
    with pytest.raises(ValueError, match="at least 1"):
        optim.model_validate({"validate_every": 0})


def test_cards_give_their_papers_optimiser_settings_under_the_config():
    def optim(model, **given):
        return TrainConfig.model_validate({
            "model": model, "data": {"train": "x", "labels": ["teff"]}, "output": "x",
            "optim": given}).optim

    paper_002 = optim("transformer_payne")
    assert (paper_002.lr, paper_002.batch_size, paper_002.warmup_fraction,
            paper_002.min_lr, paper_002.schedule) == (1e-4, 16, 0.1, 0.0, "cosine")
    assert optim("payne", lr=5e-5).lr == 5e-5 and optim("payne", lr=5e-5).batch_size == 16
    smnet = optim("smnet")
    assert (smnet.lr, smnet.batch_size, smnet.schedule, smnet.plateau_factor,
            smnet.plateau_patience, smnet.min_batch_size, smnet.early_stop_patience) == \
        (4e-4, 1024, "plateau", 0.8, 10, 128, 50)
    assert optim("specvit").lr == 3e-4  # no paper settings on its card: the defaults
