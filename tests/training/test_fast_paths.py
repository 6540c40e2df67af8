"""The fast paths (channels_last, fused AdamW, torch.compile and its fallback, no host syncs) change speed, not
results, and fail loudly where they cannot apply."""

import warnings

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from ddpm_lab.cli.builders import build_module
from ddpm_lab.lightning.module import DiffusionModule
from tests.conftest import TINY_UNET, compose_config

SHAPE = (3, 8, 8)


def tiny_module(tmp_path, *overrides: str) -> DiffusionModule:
    torch.manual_seed(0)
    return build_module(compose_config("train", tmp_path, [*TINY_UNET, *overrides]), SHAPE)


def cpu_trainer(**kwargs) -> L.Trainer:
    options = dict(
        accelerator="cpu",
        devices=1,
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    return L.Trainer(**{**options, **kwargs})


def images(n: int = 8) -> DataLoader:
    data = torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(1)) * 2 - 1
    return DataLoader(data, batch_size=4)


def test_auto_fuses_adamw_on_cpu_and_false_keeps_foreach(tmp_path):
    auto = tiny_module(tmp_path).configure_optimizers()["optimizer"]
    assert isinstance(auto, torch.optim.AdamW) and auto.defaults["fused"] is True
    off = tiny_module(tmp_path, "module.fused_optimizer=false").configure_optimizers()["optimizer"]
    assert not off.defaults["fused"]


def test_auto_skips_fused_for_an_optimizer_without_it_and_true_refuses(tmp_path):
    rmsprop = ["optimizer._target_=torch.optim.RMSprop", "~optimizer.betas"]
    assert isinstance(tiny_module(tmp_path, *rmsprop).configure_optimizers()["optimizer"], torch.optim.RMSprop)
    module = tiny_module(tmp_path, *rmsprop)
    module.fused_optimizer = True  # past the config check: the module refuses too
    with pytest.raises(ValueError, match="RMSprop has no fused implementation"):
        module.configure_optimizers()


@pytest.mark.parametrize("value", ["yes", 1])
def test_module_rejects_unknown_switch_values(tmp_path, value):
    module = tiny_module(tmp_path)
    with pytest.raises(ValueError, match=r"module.channels_last=.*allowed values: true, false, auto"):
        DiffusionModule(module.network, module.diffusion, module.optimizer_factory, SHAPE, channels_last=value)
    with pytest.raises(ValueError, match=r"module\.compile_mode='fast'"):
        DiffusionModule(module.network, module.diffusion, module.optimizer_factory, SHAPE, compile_mode="fast")


class RecordGradients(L.Callback):
    """The gradients' norm and largest entry before clipping (on_before_optimizer_step runs before the clip)."""

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        grads = [p.grad for p in pl_module.network.parameters() if p.grad is not None]
        self.norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item()
        self.largest = max(g.abs().max().item() for g in grads)


@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_bf16_mixed_fused_adamw_still_clips_gradients(tmp_path, algorithm):
    # Lightning's mixed-precision plugin refuses to clip for a fused optimizer even under bf16 (no grad scaler);
    # DiffusionModule.configure_gradient_clipping clips them itself.
    clip = 1e-4
    module, seen = tiny_module(tmp_path, "module.fused_optimizer=true"), RecordGradients()
    trainer = cpu_trainer(
        precision="bf16-mixed", gradient_clip_val=clip, gradient_clip_algorithm=algorithm, callbacks=[seen]
    )
    trainer.fit(module, images())
    assert trainer.optimizers[0].defaults["fused"] is True
    grads = [p.grad for p in module.network.parameters() if p.grad is not None]
    if algorithm == "norm":
        assert seen.norm > 10 * clip
        assert torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item() <= clip * (1 + 1e-5)
    else:
        assert seen.largest > 10 * clip
        assert max(g.abs().max().item() for g in grads) <= clip


def test_channels_last_changes_the_layout_not_the_loss(tmp_path):
    fast = tiny_module(tmp_path, "module.channels_last=true")
    plain = tiny_module(tmp_path, "module.channels_last=false")
    plain.load_state_dict(fast.state_dict())
    fast.setup("fit"), plain.setup("fit")
    conv = next(m for m in fast.network.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert next(m for m in fast.ema.module.modules() if isinstance(m, nn.Conv2d)).weight.is_contiguous(
        memory_format=torch.channels_last
    )
    x0 = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(2))
    noise = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([0, 10, 500, 999])
    fast_loss = fast.diffusion.training_losses(fast._train_network, x0.to(memory_format=torch.channels_last), t, noise)
    plain_loss = plain.diffusion.training_losses(plain._train_network, x0, t, noise)
    torch.testing.assert_close(fast_loss["loss"], plain_loss["loss"], rtol=1e-4, atol=1e-6)


def test_a_failing_compile_warns_once_and_trains_eagerly(tmp_path, monkeypatch):
    def compile_that_fails_at_first_call(network, mode):
        def call(*args):
            raise RuntimeError(f"inductor ({mode}): no working C++ compiler")

        return call

    monkeypatch.setattr(torch, "compile", compile_that_fails_at_first_call)
    module = tiny_module(tmp_path, "module.compile_network=true", "module.compile_mode=max-autotune")
    module.setup("fit")
    x, t = torch.randn(2, *SHAPE), torch.tensor([3, 7])
    with pytest.warns(UserWarning, match=r"RuntimeError: inductor \(max-autotune\).*training continues without"):
        out = module._train_network(x, t)
    torch.testing.assert_close(out, module.network(x, t))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once
        module._train_network(x, t)
    with pytest.raises(RuntimeError, match="channels"):  # the network's own errors are not hidden
        module._train_network(torch.randn(2, 5, 8, 8), t)
    # the wrapper is not a registered submodule: the weights are saved once, under network.
    assert not [k for k in module.state_dict() if k.startswith("_train_network")]


def test_compile_unavailable_says_so_and_keeps_the_network(tmp_path, monkeypatch):
    def no_compile(network, mode):
        raise RuntimeError("torch.compile is not supported on Python 3.99+")

    monkeypatch.setattr(torch, "compile", no_compile)
    module = tiny_module(tmp_path, "module.compile_network=true")
    with pytest.warns(UserWarning, match="torch.compile is not available here.*Python 3.99.*training runs eagerly"):
        module.setup("fit")
    assert module._train_network is module.network


def test_sampling_compiles_the_ema_network_once(tmp_path, monkeypatch):
    compiled, calls = [], []

    def recording_compile(network, mode):
        compiled.append((network, mode))
        return lambda *args: (calls.append(network), network(*args))[1]

    monkeypatch.setattr(torch, "compile", recording_compile)
    module = tiny_module(tmp_path, "module.compile_network=true", "module.compile_mode=reduce-overhead")
    module.setup("fit")
    first = module.generate(2, generator=torch.Generator().manual_seed(0), sampler="ddim", steps=3)
    second = module.generate(2, generator=torch.Generator().manual_seed(0), sampler="ddim", steps=3)
    torch.testing.assert_close(first, second)
    assert [(net, mode) for net, mode in compiled] == [
        (module.network, "reduce-overhead"),
        (module.ema.module, "reduce-overhead"),
    ]
    assert calls == [module.ema.module] * 6  # 3 steps per call, through the compiled EMA network


@pytest.mark.slow
def test_real_torch_compile_trains_like_eager(tmp_path):
    def losses(*overrides):
        module = tiny_module(tmp_path, *overrides)
        seen = []

        class Loss(L.Callback):
            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                seen.append(outputs["loss"].item())

        torch.manual_seed(5)
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=".*torch.compile.*")  # no fallback: compiled for real
            cpu_trainer(max_steps=2, callbacks=[Loss()]).fit(module, images())
        return seen, module

    eager, _ = losses()
    compiled, module = losses("module.compile_network=true")
    assert type(module._train_network).__name__ == "_EagerFallback" and module._train_network.compiled is not None
    assert compiled == pytest.approx(eager, rel=1e-4)


class NoHostSync:
    """Make the tensor operations that copy a value to the host raise, as CUDA's sync debug mode would."""

    NAMES = ("item", "tolist", "__bool__", "__float__", "__int__")

    def __init__(self, monkeypatch) -> None:
        self.monkeypatch, self.originals = monkeypatch, {n: getattr(torch.Tensor, n) for n in self.NAMES}

    def __enter__(self):
        for name in self.NAMES:

            def refuse(tensor, *args, _name=name):
                raise AssertionError(f"host sync: Tensor.{_name} in the training step")

            self.monkeypatch.setattr(torch.Tensor, name, refuse)

    def __exit__(self, *exc) -> None:
        for name, original in self.originals.items():
            self.monkeypatch.setattr(torch.Tensor, name, original)


def test_training_step_optimizer_and_ema_do_not_sync_with_the_host(tmp_path, monkeypatch):
    module = tiny_module(tmp_path, "loss=hybrid", "variance=learned_range", "module.timestep_sampler=loss_aware")
    guard = NoHostSync(monkeypatch)
    for hook in ("training_step", "optimizer_step"):
        original = getattr(module, hook)

        def guarded(*args, _original=original, **kwargs):
            with guard:
                return _original(*args, **kwargs)

        monkeypatch.setattr(module, hook, guarded)
    # log_every_n_steps: the stop policy's one host read (check_finite) falls outside these 3 steps
    cpu_trainer(max_steps=3, log_every_n_steps=50, gradient_clip_val=1.0).fit(module, images(12))
    assert module.global_step == 3 and int(module.ema.num_updates) == 3


def test_progress_bar_reads_the_loss_every_10_steps_and_is_left_out_when_disabled(tmp_path):
    from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar

    from ddpm_lab.cli.builders import build_callbacks

    bars = [
        c for c in build_callbacks(compose_config("train", tmp_path, ["metrics=none"])) if isinstance(c, ProgressBar)
    ]
    assert len(bars) == 1 and isinstance(bars[0], TQDMProgressBar) and bars[0].refresh_rate == 10
    off = compose_config("train", tmp_path, ["metrics=none", "trainer.enable_progress_bar=false"])
    assert not [c for c in build_callbacks(off) if isinstance(c, ProgressBar)]


def test_bf16_runs_sample_in_bf16_within_noise_of_fp32(tmp_path):
    """FID and picture sampling ran the network in fp32 even for bf16-mixed runs (callbacks are outside
    Lightning's autocast). Now the network samples at the run's precision; the update arithmetic stays fp32."""
    module = tiny_module(tmp_path, "sampling.sampler=ddim", "sampling.steps=10")
    with torch.no_grad():  # the residual branches start at zero: give the network an output to compare
        for param in module.ema.module.parameters():
            if not param.any():
                param.normal_(0.0, 0.05)
    seen = []
    module.ema.module.register_forward_hook(lambda mod, args, out: seen.append(out.dtype))

    def draw(precision: str) -> torch.Tensor:
        cpu_trainer(precision=precision, max_steps=0).fit(module, images(4))  # attaches a trainer of that precision
        seen.clear()
        return module.generate(16, generator=torch.Generator().manual_seed(0))

    fp32, bf16 = draw("32-true"), draw("bf16-mixed")
    assert seen and set(seen) == {torch.bfloat16} and bf16.dtype == torch.float32
    difference = (bf16 - fp32).abs()
    assert 0 < difference.mean() < 0.02 * fp32.abs().mean() + 1e-3, difference.mean()
