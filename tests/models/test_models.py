import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ddpm_lab.cli import CONFIG_DIR
from ddpm_lab.models import EMA, MLPDenoiser, UNet, sinusoidal_embedding


def count(module):
    return sum(p.numel() for p in module.parameters())


def test_cifar10_preset_is_the_papers_35_7m_network():
    cfg = OmegaConf.load(CONFIG_DIR / "model" / "unet_cifar10.yaml")
    net = instantiate(cfg, sample_shape=[3, 32, 32], learned_variance=False)
    assert count(net) == pytest.approx(35.7e6, abs=0.1e6)


@pytest.mark.parametrize(
    ("preset", "shape"),
    [
        pytest.param("unet_celeba64", [3, 64, 64], marks=pytest.mark.slow),  # 79M parameters: ~8 s on 2 cores
        ("unet_mnist", [1, 28, 28]),
        ("unet_tiny", [1, 16, 16]),
        ("mlp", [2]),
    ],
)
def test_every_preset_maps_each_sample_on_its_own(preset, shape):
    """Each preset denoises sample i from sample i alone (no mixing across the batch, e.g. by a batch norm) and
    its output depends on that sample (zero-initialised output layers perturbed, as after training)."""
    torch.manual_seed(0)
    net = instantiate(
        OmegaConf.load(CONFIG_DIR / "model" / f"{preset}.yaml"), sample_shape=shape, learned_variance=False
    ).eval()
    with torch.no_grad():
        for weight in [p for p in net.parameters() if p.dim() > 1]:  # leave the zero init (DDPM) behind
            weight.normal_(std=0.05)
        x, t = torch.randn(2, *shape), torch.tensor([0, 999])
        out = net(x, t)
        alone = net(x[1:], t[1:])
        changed = net(torch.cat([-x[:1], x[1:]]), t)
    assert out.shape == x.shape
    torch.testing.assert_close(alone, out[1:], rtol=1e-4, atol=1e-4)  # sample 1 alone = sample 1 in the batch
    torch.testing.assert_close(changed[1:], out[1:], rtol=1e-4, atol=1e-4)  # changing sample 0 leaves it be
    assert not torch.allclose(changed[:1], out[:1])  # and changes sample 0's own output


@pytest.mark.parametrize(
    "net_cls,shape,kwargs",
    [
        (UNet, (3, 16, 16), {"base_channels": 32, "channel_mults": (1, 2), "attention_resolutions": (8,)}),
        (MLPDenoiser, (2,), {}),
    ],
)
def test_learned_variance_doubles_output_channels(net_cls, shape, kwargs):
    fixed = net_cls(shape, **kwargs)
    learned = net_cls(shape, learned_variance=True, **kwargs)
    x = torch.randn(3, *shape)
    assert learned(x, torch.tensor([1, 2, 3])).shape[1] == 2 * shape[0] == learned.out_channels
    assert fixed(x, torch.tensor([1, 2, 3])).shape[1] == shape[0] == fixed.out_channels


def test_unet_depends_on_timestep_and_starts_as_zero_map():
    torch.manual_seed(0)
    net = UNet((1, 8, 8), 32, (1, 2), 1, (4,), 0.0)
    x = torch.randn(2, 1, 8, 8)
    # The output conv is zero-initialised (as in DDPM), so an untrained net predicts 0 ...
    assert net(x, torch.tensor([0, 1])).abs().max() == 0
    torch.nn.init.normal_(net.conv_out.weight, std=0.1)
    for block in net.modules():
        if hasattr(block, "conv2"):
            torch.nn.init.normal_(block.conv2.weight, std=0.1)
    # ... and once trained its output changes with t for the same x.
    assert not torch.allclose(net(x, torch.tensor([0, 0])), net(x, torch.tensor([500, 500])))


@pytest.mark.parametrize(
    ("shape", "kwargs", "message"),
    [
        ((3, 30, 30), {"channel_mults": (1, 2, 2)}, "image size 30 is not divisible by 4"),
        (
            (3, 32, 32),
            {"attention_resolutions": (12,)},
            r"attention_resolutions \[12\] are not feature-map sizes.*\[32, 16, 8, 4\]",
        ),
        ((3, 32, 24), {}, "square images"),
        ((3, 32, 32), {"base_channels": 48}, "not divisible by GroupNorm"),
    ],
)
def test_unet_shape_errors_name_the_option(shape, kwargs, message):
    with pytest.raises(ValueError, match=message):
        UNet(shape, **kwargs)


def test_sinusoidal_embedding_values():
    emb = sinusoidal_embedding(torch.tensor([0, 3]), 6)
    assert torch.allclose(emb[0], torch.tensor([0, 0, 0, 1, 1, 1.0]))
    freqs = torch.exp(-torch.log(torch.tensor(10_000.0)) * torch.arange(3) / 3)
    assert torch.allclose(emb[1], torch.cat([torch.sin(3 * freqs), torch.cos(3 * freqs)]))


def test_ema_update_follows_the_formula_with_warmup():
    net = torch.nn.Linear(2, 1)
    ema = EMA(net, decay=0.9, warmup=True)
    start = ema.module.weight.clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update(net)  # n = 0: decay = min(0.9, 1/10) = 0.1
    assert torch.allclose(ema.module.weight, 0.1 * start + 0.9 * net.weight)
    for _ in range(100):
        ema.update(net)
    assert ema.current_decay() == 0.9
    assert torch.allclose(ema.module.weight, net.weight, atol=1e-4)
    assert not ema.module.weight.requires_grad
    plain = EMA(net, decay=0.5, warmup=False)
    with torch.no_grad():
        net.weight.add_(2.0)
    before = plain.module.weight.clone()
    plain.update(net)
    assert torch.allclose(plain.module.weight, 0.5 * before + 0.5 * net.weight)


def test_ema_with_warmup_equals_diffusers_ema_model():
    """The weight EMA (warm-up on, the default) against diffusers' EMAModel, whose decay at its n-th step is
    min(decay, (1 + n) / (10 + n)), over 60 updates of a drifting network: equal within 1e-6."""
    training_utils = pytest.importorskip("diffusers.training_utils")
    net = torch.nn.Linear(4, 3)
    ours = EMA(net, decay=0.95, warmup=True)
    theirs = training_utils.EMAModel(net.parameters(), decay=0.95, min_decay=0.0, use_ema_warmup=False)
    g = torch.Generator().manual_seed(0)
    for _ in range(60):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.1 * torch.randn(p.shape, generator=g))
        ours.update(net)
        theirs.step(net.parameters())
    for mine, shadow in zip(ours.module.parameters(), theirs.shadow_params, strict=True):
        assert torch.allclose(mine, shadow, atol=1e-6, rtol=0)


def test_ema_is_in_the_owners_state_dict_and_always_eval():
    owner = torch.nn.Module()
    owner.net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5))
    owner.ema = EMA(owner.net, 0.99)
    assert any(k.startswith("ema.module.") for k in owner.state_dict())
    owner.train()
    assert not owner.ema.module.training
    with pytest.raises(ValueError, match="EMA decay must be in"):
        EMA(owner.net, decay=1.5)


def test_ema_decay_warmup_continues_from_a_loaded_count():
    net = torch.nn.Linear(2, 1)
    trained = EMA(net, decay=0.9999)
    for _ in range(5):
        trained.update(net)
    restored = EMA(net, decay=0.9999)
    assert restored.current_decay() == pytest.approx(1 / 10)  # n = 0
    restored.load_state_dict(trained.state_dict())  # the host copy of the count is refreshed
    assert restored.current_decay() == pytest.approx(6 / 15) == trained.current_decay()
    restored.update(net)
    assert int(restored.num_updates) == 6 and restored.current_decay() == pytest.approx(7 / 16)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_attention_block_is_single_head_softmax_attention(memory_format):
    from ddpm_lab.models.unet_blocks import AttentionBlock

    torch.manual_seed(0)
    block = AttentionBlock(64).to(memory_format=memory_format)
    torch.nn.init.normal_(block.proj.weight, std=0.1)  # zero-initialised: give the branch something to show
    x = torch.randn(2, 64, 4, 4).contiguous(memory_format=memory_format)
    h = block.qkv(block.norm(x)).flatten(2)  # (B, 3C, HW)
    q, k, v = h.chunk(3, dim=1)  # (B, C, HW) each
    attention = torch.softmax(q.transpose(1, 2) @ k / 64**0.5, dim=-1)  # (B, HW, HW): softmax(q k^T / sqrt(C))
    expected = x + block.proj((v @ attention.transpose(1, 2)).reshape(2, 64, 4, 4))
    torch.testing.assert_close(block(x), expected, rtol=1e-4, atol=1e-5)
    assert block(x).is_contiguous(memory_format=memory_format)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_multi_head_attention_is_softmax_attention_per_head(memory_format):
    """4 heads (IDDPM): head j attends with q, k, v from channels [j*d, (j+1)*d) of each of the q, k, v thirds."""
    from ddpm_lab.models.unet_blocks import AttentionBlock

    torch.manual_seed(0)
    heads, c = 4, 64
    d = c // heads
    block = AttentionBlock(c, num_heads=heads).to(memory_format=memory_format)
    torch.nn.init.normal_(block.proj.weight, std=0.1)
    x = torch.randn(2, c, 4, 4).contiguous(memory_format=memory_format)
    q, k, v = block.qkv(block.norm(x)).flatten(2).chunk(3, dim=1)  # (B, C, HW) each
    outs = []
    for j in range(heads):
        qj, kj, vj = (part[:, j * d : (j + 1) * d] for part in (q, k, v))
        attention = torch.softmax(qj.transpose(1, 2) @ kj / d**0.5, dim=-1)
        outs.append(vj @ attention.transpose(1, 2))  # (B, d, HW)
    expected = x + block.proj(torch.cat(outs, 1).reshape(2, c, 4, 4))
    torch.testing.assert_close(block(x), expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="num_heads=3"):
        AttentionBlock(64, num_heads=3)


def test_scale_shift_norm_conditions_the_second_norm():
    """IDDPM: h = GroupNorm(h) * (1 + scale) + shift with (scale, shift) from the timestep embedding."""
    from ddpm_lab.models.unet_blocks import ResBlock

    torch.manual_seed(0)
    block = ResBlock(32, 32, temb_dim=16, dropout=0.0, scale_shift_norm=True).eval()
    torch.nn.init.normal_(block.conv2.weight, std=0.1)
    x, temb = torch.randn(2, 32, 4, 4), torch.randn(2, 16)
    h = block.conv1(torch.nn.functional.silu(block.norm1(x)))
    scale, shift = block.temb_proj(torch.nn.functional.silu(temb))[:, :, None, None].chunk(2, dim=1)
    h = block.conv2(torch.nn.functional.silu(block.norm2(h) * (1 + scale) + shift))
    torch.testing.assert_close(block(x, temb), x + h)
    assert block.temb_proj.out_features == 64


def test_cifar10_iddpm_is_improved_diffusions_cifar10_setup(tmp_path):
    """improved-diffusion's CIFAR-10 flags: 4000 steps, 3 res blocks, attention 16,8 with 4 heads, scale-shift."""
    from hydra.utils import instantiate

    from tests.conftest import compose_config

    cfg = compose_config("train", tmp_path, ["experiment=cifar10_iddpm"])
    d, m = cfg.diffusion, cfg.model
    assert (d.num_timesteps, d.schedule, d.var_type, d.loss_type) == (4000, "cosine", "learned_range", "hybrid")
    assert (m.base_channels, list(m.channel_mults), m.num_res_blocks) == (128, [1, 2, 2, 2], 3)
    assert (list(m.attention_resolutions), m.num_heads, m.scale_shift_norm, m.dropout) == ([16, 8], 4, True, 0.3)
    net = instantiate(m, sample_shape=[3, 32, 32], learned_variance=True)
    heads = {block.num_heads for block in net.modules() if hasattr(block, "num_heads")}
    assert heads == {4} and all(b.scale_shift_norm for b in net.modules() if hasattr(b, "scale_shift_norm"))
    out = net(torch.randn(1, 3, 32, 32), torch.tensor([3999]))
    assert out.shape == (1, 6, 32, 32)
