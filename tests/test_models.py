"""The model zoo: registry, paper sizes, shapes, gradients, overfitting a small batch, and
the model-specific properties (TransformerPayne queries, SM-Net masking, the cINN)."""

import numpy as np
import pytest
import torch

from stellar_ray.models import build, card, names
from stellar_ray.models.preprocess import LabelScaler, inject_noise, median_normalise
from stellar_ray.models.smnet import Log1pFluxScaler, masked_weighted_mse

pytestmark = pytest.mark.timeout(300)

NEURAL = [n for n in names() if card(n).family in ("emulator", "regressor")]


def test_registry_lists_every_model():
    assert names() == ["payne", "bigpayne", "transformer_payne", "smnet", "specvit",
                       "overlap_vit", "convstem_lstm", "bilstm", "resnet18_1d", "deep_cnn",
                       "ridge", "gbdt", "cinn", "hml"]
    with pytest.raises(ValueError, match="unknown model 'gpt'"):
        build("gpt")
    with pytest.raises(ValueError, match="model 'specvit'.*colour"):
        build("specvit", colour=3)
    for n in names():
        assert card(n).paper and card(n).section


@pytest.mark.parametrize("name", ["specvit", "overlap_vit", "convstem_lstm", "bilstm",
                                  "resnet18_1d", "deep_cnn"])
def test_default_sizes_match_the_paper(name):
    model = build(name)
    count = sum(p.numel() for p in model.parameters())
    assert count == pytest.approx(card(name).paper_params, rel=0.05), count


def _batch(name, n=8, seed=0):
    """Inputs and learnable targets for a tiny model. Emulators map labels to a fixed random
    smooth function of them. Regressors map spectra to the labels that made them: six
    absorption lines whose depths are a fixed random function of the labels, plus 1 % noise.
    (Random targets unrelated to the spectra, as this test once used, have to be memorised
    from noise: the ViTs then sit on a plateau for a few hundred steps before the loss drops,
    how long depends on the initialisation and on the CPU's arithmetic, and a test that
    waits for it passes on one machine and fails on another.)"""
    g = torch.Generator().manual_seed(seed)
    cfg = card(name).tiny
    if card(name).family == "emulator":
        labels = torch.rand(n, cfg["n_labels"], generator=g) - 0.5
        npix = cfg.get("n_pix", 64)
        basis = torch.randn(cfg["n_labels"], npix, generator=g)
        return (labels,), torch.sigmoid(labels @ basis)
    labels = torch.randn(n, cfg["n_labels"], generator=g)
    x = torch.linspace(0, 1, cfg["n_pix"])
    centres = torch.linspace(0.1, 0.9, 6)
    depth = 0.5 * torch.sigmoid(labels @ torch.randn(cfg["n_labels"], 6, generator=g))
    lines = torch.exp(-0.5 * ((x - centres[:, None]) / 0.02) ** 2)  # (6, L)
    flux = 1.0 - depth @ lines + 0.01 * torch.randn(n, cfg["n_pix"], generator=g)
    return (flux,), labels


def _model(name):
    torch.manual_seed(0)
    cfg = dict(card(name).tiny)
    if name == "transformer_payne":
        cfg["wavelength"] = torch.linspace(5000.0, 5100.0, 64)
    return build(name, **cfg)


@pytest.mark.parametrize("name", NEURAL)
def test_shapes_and_gradients_reach_every_parameter(name):
    model = _model(name)
    inputs, target = _batch(name)
    out = model(*inputs)
    assert out.shape == target.shape
    ((out - target) ** 2).mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.any(p.grad != 0), pname


@pytest.mark.parametrize("name", NEURAL)
def test_overfits_one_small_batch(name):
    model = _model(name)
    inputs, target = _batch(name)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    # the slowest regressor needed 214-562 steps over five initialisations: 2,000 is ample
    for _ in range(2000):
        opt.zero_grad()
        loss = ((model(*inputs) - target) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if losses[-1] < losses[0] / 20:
            break
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])


def test_transformer_payne_on_a_subset_equals_the_full_grid():
    model = _model("transformer_payne").eval()
    labels = torch.rand(3, 5) - 0.5
    full = model(labels)
    idx = torch.tensor([[0, 7, 63], [5, 5, 40], [10, 20, 30]])
    sub = model(labels, model.wavelength[idx])
    assert torch.allclose(sub, full.gather(1, idx), atol=1e-5)


def test_smnet_loss_ignores_masked_pixels():
    target = torch.rand(4, 64)
    target[:, 10:20] = 0.0  # unknown flux
    pred = torch.rand(4, 64, requires_grad=True)
    loss = masked_weighted_mse(pred, target)
    changed = pred.detach().clone()
    changed[:, 10:20] += 5.0
    assert torch.equal(masked_weighted_mse(changed, target), loss.detach())
    loss.backward()
    assert torch.all(pred.grad[:, 10:20] == 0) and torch.all(pred.grad[:, :10] != 0)


def test_smnet_baseline_starts_at_the_training_median():
    model = _model("smnet").eval()
    scaled = torch.rand(16, 64)
    model.init_baseline(scaled)
    sp = torch.nn.functional.softplus(model.baseline, beta=model.beta)
    assert torch.allclose(sp, torch.median(scaled, 0).values.clamp(min=1e-4), atol=1e-5)


def test_log1p_scaler_keeps_zeros_and_inverts():
    flux = torch.tensor([[0.0, 1e-3, 1.0, 1e4]])
    scaler = Log1pFluxScaler.fit(torch.cat([torch.rand(100, 4) * 1e4, flux], dim=0))
    y = scaler(flux)
    assert y[0, 0] == 0 and torch.all(y[0, 1:] > 0) and torch.all(y <= 1.0 + 1e-6)
    assert torch.allclose(scaler.inverse(y), flux, rtol=1e-4)


def test_preprocessing_and_noise_injection():
    flux = torch.tensor([[2.0, 4.0, -1.0, 6.0]])
    x, s = median_normalise(flux, torch.full_like(flux, 0.4))
    assert torch.allclose(x, torch.tensor([[0.5, 1.0, 0.0, 1.5]]))
    assert torch.allclose(s, torch.full_like(s, 0.1))
    base = torch.ones(2000, 50)
    sigma = torch.full_like(base, 0.2)
    sigma[:, 0] = float("inf")
    noisy = inject_noise(base, sigma, alpha=0.5, generator=torch.Generator().manual_seed(0))
    assert torch.all(noisy[:, 0] == 1.0)
    assert noisy[:, 1:].std().item() == pytest.approx(0.1, rel=0.03)


def test_classical_baselines_learn():
    rng = np.random.default_rng(0)
    flux = 1.0 + 0.1 * rng.random((300, 40))
    x = median_normalise(torch.as_tensor(flux))[0].numpy()  # what the baselines see
    labels = np.stack([x[:, 3] - x[:, 7], x[:, 10]], axis=1) * 10
    labels = (labels - labels.mean(0)) / labels.std(0)
    ridge = build("ridge", alpha=1e-6).fit(flux, labels)
    pred = ridge(torch.as_tensor(flux)).numpy()
    assert np.abs(pred - labels).max() < 0.05
    gbdt = build("gbdt", n_estimators=200).fit(flux, labels)
    err = np.abs(gbdt(torch.as_tensor(flux)).numpy() - labels).mean()
    assert err < 0.3 * np.abs(labels).mean()


def test_cinn_recovers_a_linear_gaussian_posterior():
    torch.manual_seed(0)
    p, m, noise = 2, 8, 0.5
    a = torch.randn(m, p) * 0.5
    model = build("cinn", n_labels=p, n_pix=m, condition="mlp",
                  condition_config={"d": 32, "hidden": 64}, transforms=3, hidden=(64, 64))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)

    def draw(n):
        x = torch.randn(n, p)
        return x, x @ a.T + noise * torch.randn(n, m)

    x_val, y_val = draw(512)
    start = model(y_val, x_val).mean().item()
    for _ in range(2500):
        x, y = draw(256)
        opt.zero_grad()
        loss = -model(y, x).mean()
        loss.backward()
        opt.step()
    end = model(y_val, x_val).mean().item()
    assert end > start + 1.0  # the log-likelihood rises
    cov = torch.linalg.inv(torch.eye(p) + a.T @ a / noise**2)
    y_test = draw(64)[1]
    mean_true = y_test @ a @ cov.T / noise**2
    post = model.posterior(y_test, n=2000)
    std_true = torch.sqrt(torch.diagonal(cov))
    assert torch.all((post["std"].mean(0) / std_true - 1).abs() < 0.10), post["std"].mean(0)
    err = (post["mean"] - mean_true).abs().mean(0)
    assert torch.all(err < 0.10 * std_true.max() + 0.1 * mean_true.abs().mean(0)), err
    assert post["quantiles"].shape == (3, 64, p)


def test_the_vit_layer_is_torchs_pre_norm_layer_written_out():
    """SpecViT's encoder layer has the parameters of nn.TransformerEncoderLayer (pre-norm,
    GELU) under the same names and gives the same outputs and gradients, in inference
    (where torch's own layer takes its fused fast path) and in training."""
    from stellar_ray.models.vit import PreNormLayer

    torch.manual_seed(0)
    ref = torch.nn.TransformerEncoderLayer(64, 4, 256, 0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
    layer = PreNormLayer(64, 4, 0.0)
    layer.load_state_dict(ref.state_dict())  # strict: the same names and shapes
    x = torch.randn(3, 17, 64)
    for mode in ("eval", "train"):
        getattr(ref, mode)(), getattr(layer, mode)()
        with torch.no_grad():
            torch.testing.assert_close(layer(x), ref(x), rtol=1e-5, atol=1e-5)
    layer(x).square().sum().backward()
    ref(x).square().sum().backward()
    for a, b in zip(layer.parameters(), ref.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("features", [1, 3, 6])
def test_the_cinn_flow_computes_what_zukos_nsf_does(features):
    """The cINN's flow (context taken once per spectrum, softmax written out) is zuko's NSF:
    same parameter names, and from the same weights the same log-density, the same draws
    from the same seed and the same gradients, to float32 rounding."""
    zuko = pytest.importorskip("zuko")
    from stellar_ray.models.spline_flow import SplineFlow

    torch.manual_seed(0)
    ref = zuko.flows.NSF(features=features, context=16, transforms=3, bins=8,
                         hidden_features=(32, 32))
    flow = SplineFlow(features, 16, transforms=3, bins=8, hidden=(32, 32))
    flow.load_state_dict(ref.state_dict())  # strict: the same names and shapes
    c, x = torch.randn(20, 16), torch.randn(20, features)
    lp_ref, lp = ref(c).log_prob(x), flow(c).log_prob(x)
    torch.testing.assert_close(lp, lp_ref, rtol=1e-5, atol=1e-5)
    lp_ref.sum().backward()
    lp.sum().backward()
    for a, b in zip(flow.parameters(), ref.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-4)  # sums of 20 terms ~10
    with torch.no_grad():
        torch.manual_seed(1)
        draws = flow(c).sample((64,))
        torch.manual_seed(1)
        torch.testing.assert_close(draws, ref(c).sample((64,)), rtol=1e-5, atol=1e-5)
    assert draws.shape == (64, 20, features) and draws.std() > 0.1


@pytest.mark.parametrize("name", [n for n in names() if card(n).family != "classical"])
def test_cards_state_the_default_parameter_count(name):
    model = build(name)
    assert sum(p.numel() for p in model.parameters()) == card(name).params


def test_label_scaler_round_trip_ignores_unknown_labels():
    labels = torch.tensor([[5000.0, 4.0], [6000.0, float("nan")], [7000.0, 2.0]])
    scaler = LabelScaler.fit(labels)
    z = scaler(labels)
    assert torch.allclose(z[:, 0], torch.tensor([-1.2247, 0.0, 1.2247]), atol=1e-4)
    assert torch.isnan(z[1, 1]) and torch.allclose(z[[0, 2], 1], torch.tensor([1.0, -1.0]))
    assert torch.allclose(scaler.inverse(z)[[0, 2]], labels[[0, 2]])
