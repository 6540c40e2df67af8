import itertools
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from ddpm_lab.diffusion import (
    LOSS_TYPES,
    MEAN_TYPES,
    VAR_TYPES,
    GaussianDiffusion,
    LossAwareTimestepSampler,
    UniformTimestepSampler,
    build_gaussian_diffusion,
    loss_term_names,
    make_beta_schedule,
    make_timestep_sampler,
)


class TwoHeadNet(nn.Module):
    """A tiny conditional network with separate mean and variance heads, so gradients can be told apart."""

    def __init__(self, channels: int, learned_variance: bool) -> None:
        super().__init__()
        self.mean_head = nn.Conv2d(channels + 1, channels, 3, padding=1)
        self.var_head = nn.Conv2d(channels + 1, channels, 3, padding=1) if learned_variance else None

    def forward(self, x, t):
        h = torch.cat([x, (t.float() / 1000).reshape(-1, 1, 1, 1).expand(-1, 1, *x.shape[2:])], 1)
        out = self.mean_head(h)
        return out if self.var_head is None else torch.cat([out, torch.tanh(self.var_head(h))], 1)


VALID = [
    combo
    for combo in itertools.product(MEAN_TYPES, VAR_TYPES, LOSS_TYPES)
    if not (combo[1] in ("learned", "learned_range") and combo[2] in ("mse", "l1"))
    and not (combo[1] in ("fixed_small", "fixed_large") and combo[2] == "hybrid")
]


@pytest.mark.parametrize(("mean_type", "var_type", "loss_type"), VALID)
def test_every_combination_trains(mean_type, var_type, loss_type):
    torch.manual_seed(0)
    diffusion = GaussianDiffusion(make_beta_schedule("cosine", 100), mean_type, var_type, loss_type)
    net = TwoHeadNet(3, diffusion.learned_variance)
    x0 = torch.rand(4, 3, 8, 8) * 2 - 1
    t = torch.tensor([0, 1, 50, 99])
    terms = diffusion.training_losses(net, x0, t)
    assert terms["loss"].shape == (4,)
    assert all(torch.isfinite(v).all() for v in terms.values())
    expected_terms = {"kl": {"vlb"}, "hybrid": {"mse", "vlb"}, "l1": {"l1"}, "mse": {"mse"}}[loss_type]
    assert set(terms) == expected_terms | {"loss"} == set(loss_term_names(loss_type))
    terms["loss"].mean().backward()
    for p in net.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_hybrid_with_a_fixed_variance_would_be_mse_so_it_is_refused():
    """Why hybrid + fixed variance is an error: its vlb term, with the mean detached and no variance head,
    gives exactly zero gradient, so the total gradient equals L_simple's."""
    torch.manual_seed(0)
    betas = make_beta_schedule("linear", 100)
    mse = GaussianDiffusion(betas, "eps", "fixed_small", "mse")
    net = TwoHeadNet(3, learned_variance=False)
    x0, t, noise = torch.rand(4, 3, 8, 8) * 2 - 1, torch.tensor([0, 3, 50, 99]), torch.randn(4, 3, 8, 8)
    x_t = mse.q_sample(x0, t, noise)
    detached_output = net(x_t, mse.model_timesteps(t)).detach()  # what hybrid's vlb term sees
    vlb = mse.vlb_term_bits(detached_output, x0, x_t, t, clip_denoised=False)
    assert not vlb.requires_grad  # no path to any parameter: hybrid = mse + a constant
    with pytest.raises(ValueError, match="trains exactly like loss=mse"):
        GaussianDiffusion(betas, "eps", "fixed_small", "hybrid")


def test_hybrid_loss_trains_variance_only_through_vlb():
    torch.manual_seed(0)
    diffusion = GaussianDiffusion(make_beta_schedule("linear", 100), "eps", "learned_range", "hybrid", vlb_weight=0.5)
    net = TwoHeadNet(1, True)
    x0, t, noise = torch.rand(6, 1, 4, 4) * 2 - 1, torch.randint(0, 100, (6,)), torch.randn(6, 1, 4, 4)
    terms = diffusion.training_losses(net, x0, t, noise)
    var_params, mean_params = list(net.var_head.parameters()), list(net.mean_head.parameters())
    mse_grad = torch.autograd.grad(terms["mse"].sum(), var_params, retain_graph=True, allow_unused=True)
    assert all(g is None or g.abs().max() == 0 for g in mse_grad), "L_simple must not reach the variance head"
    vlb_mean_grad = torch.autograd.grad(terms["vlb"].sum(), mean_params, retain_graph=True, allow_unused=True)
    assert all(g is None or g.abs().max() == 0 for g in vlb_mean_grad), "the mean is stop-gradiented in L_vlb"
    vlb_var_grad = torch.autograd.grad(terms["vlb"].sum(), var_params, retain_graph=True)
    assert all(g.abs().max() > 0 for g in vlb_var_grad)
    expected = terms["mse"] + 0.5 * 100 * terms["vlb"]
    assert torch.allclose(terms["loss"], expected)


def test_mse_loss_value_for_eps_prediction():
    diffusion = GaussianDiffusion(make_beta_schedule("linear", 10))
    x0, noise = torch.randn(2, 1, 2, 2), torch.randn(2, 1, 2, 2)
    terms = diffusion.training_losses(lambda x, t: torch.zeros_like(x), x0, torch.tensor([3, 7]), noise)
    assert torch.allclose(terms["mse"], (noise**2).mean(dim=(1, 2, 3)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mean_type": "score"}, "Unknown mean_type 'score'; choose one of: eps, x0, v"),
        ({"var_type": "big"}, "Unknown var_type 'big'; choose one of: fixed_small, fixed_large"),
        ({"loss_type": "huber"}, "Unknown loss_type 'huber'; choose one of: mse, l1, kl, hybrid"),
        ({"var_type": "learned_range", "loss_type": "mse"}, "gives the variance output no gradient.*loss=hybrid"),
        ({"var_type": "fixed_small", "loss_type": "hybrid"}, "trains exactly like loss=mse"),
        ({"var_type": "fixed_large", "loss_type": "hybrid"}, "trains exactly like loss=mse"),
        ({"vlb_weight": -1.0}, "vlb_weight must be >= 0"),
    ],
)
def test_bad_choices_fail_when_built(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GaussianDiffusion(make_beta_schedule("linear", 10), **kwargs)


def test_bad_betas_and_timesteps():
    with pytest.raises(ValueError, match="integer >= 2"):
        build_gaussian_diffusion(num_timesteps=0)
    with pytest.raises(ValueError, match=r"in \(0, 1\]"):
        GaussianDiffusion(torch.tensor([0.1, 1.5]))
    with pytest.raises(ValueError, match="1-D tensor"):
        GaussianDiffusion(torch.zeros(0))


def test_mismatched_output_channels_for_learned_variance():
    diffusion = GaussianDiffusion(make_beta_schedule("linear", 10), var_type="learned", loss_type="hybrid")
    assert diffusion.model_output_channels(3) == 6
    with pytest.raises(ValueError, match=r"needs a network with 6 output channels.*outputs 3"):
        diffusion.check_model_channels(3, data_channels=3)
    with pytest.raises(ValueError, match="needs a network with 6 output channels"):
        diffusion.training_losses(TwoHeadNet(3, False), torch.zeros(1, 3, 4, 4), torch.tensor([1]))


def test_loss_aware_sampler_focuses_on_large_losses_and_stays_unbiased():
    T = 20
    sampler = LossAwareTimestepSampler(T, history_per_term=4)
    losses_by_t = torch.linspace(0.1, 4.0, T)
    assert torch.allclose(sampler.probabilities(), torch.full((T,), 1 / T, dtype=torch.float64))
    for _ in range(4):
        sampler.update(torch.arange(T), losses_by_t)
    p = sampler.probabilities()
    assert p.sum().item() == pytest.approx(1.0) and p[-1] > 10 * p[0]
    gen = torch.Generator().manual_seed(0)
    t, w = sampler.sample(200_000, generator=gen)
    # Importance weighting keeps E[w L_t] equal to the uniform average of L_t.
    assert (w * losses_by_t[t]).mean().item() == pytest.approx(losses_by_t.mean().item(), rel=0.02)
    restored = LossAwareTimestepSampler(T, history_per_term=4)
    restored.load_state_dict(sampler.state_dict())
    assert torch.equal(restored.probabilities(), p)


def test_uniform_sampler_and_factory():
    t, w = UniformTimestepSampler(10).sample(1000, generator=torch.Generator().manual_seed(0))
    assert t.min() == 0 and t.max() == 9 and torch.all(w == 1)
    assert isinstance(make_timestep_sampler("loss_aware", 5), LossAwareTimestepSampler)
    with pytest.raises(ValueError, match="Unknown timestep sampler 'importance'"):
        make_timestep_sampler("importance", 5)


def test_core_imports_neither_lightning_nor_hydra():
    code = (
        "import sys, ddpm_lab.diffusion, ddpm_lab.models\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning', 'hydra', "
        "'omegaconf'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_core_modules_import_each_other_at_the_top_only():
    """No import cycle hidden behind a function-level import: every relative import in ddpm_lab.diffusion is at
    module level (or under TYPE_CHECKING)."""
    import ast

    package = Path(__file__).parents[2] / "src" / "ddpm_lab" / "diffusion"
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lazy = [n for n in ast.walk(node) if isinstance(n, ast.ImportFrom) and n.level > 0]
                assert not lazy, f"{path.name}: {node.name} imports .{lazy[0].module} lazily"


def test_loss_aware_ring_buffer_matches_a_sequential_update():
    # Repeated timesteps in one batch, and one timestep (3) seen more often than the history holds.
    T, H = 6, 3
    sampler = LossAwareTimestepSampler(T, history_per_term=H)
    history, counts = torch.zeros(T, H, dtype=torch.float64), torch.zeros(T, dtype=torch.long)
    gen = torch.Generator().manual_seed(4)
    for batch in range(4):
        t = torch.cat([torch.randint(0, T, (7,), generator=gen), torch.full((5,), 3)])[
            torch.randperm(12, generator=gen)
        ]
        losses = torch.rand(12, generator=gen, dtype=torch.float64) + batch
        sampler.update(t, losses)
        for step, loss in zip(t.tolist(), losses.tolist(), strict=True):  # the plain ring buffer, one at a time
            history[step, counts[step] % H] = loss
            counts[step] += 1
        assert torch.equal(sampler.counts, counts) and torch.equal(sampler.history, history)


def test_timestep_draws_follow_p_and_come_back_on_the_requested_device():
    T = 8
    sampler = LossAwareTimestepSampler(T, history_per_term=2, uniform_prob=0.0)
    for _ in range(2):
        sampler.update(torch.arange(T), torch.arange(1.0, T + 1))
    p = sampler.probabilities()
    torch.testing.assert_close(p, torch.arange(1.0, T + 1, dtype=torch.float64) / 36)
    t, w = sampler.sample(400_000, device="cpu", generator=torch.Generator().manual_seed(1))
    frequencies = torch.bincount(t, minlength=T).double() / t.numel()
    torch.testing.assert_close(frequencies, p, atol=2e-3, rtol=0)  # 4 sigma of a binomial at n = 400k
    torch.testing.assert_close(w, (1 / (T * p[t])).float())
    assert sampler.warmed_up().dtype == torch.bool and sampler.warmed_up().item()
    t, w = UniformTimestepSampler(T).sample(5, device="meta")
    assert t.device.type == "meta" and w.device.type == "meta"
