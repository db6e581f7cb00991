import pytest
import torch

from fewshot_sparse.encoders import ENCODERS, Conv4, ResNet12MetaOptNet, build_encoder
from fewshot_sparse.encoders.dropblock import DropBlock
from fewshot_sparse.errors import ConfigError


def n_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("avg_pool,dim", [(False, 640 * 5 * 5), (True, 640)])
def test_resnet12_output_shape_on_84x84(avg_pool, dim):
    net = ResNet12MetaOptNet(avg_pool=avg_pool)
    assert net(torch.rand(2, 3, 84, 84)).shape == (2, dim)


def test_resnet12_parameter_count_matches_metaoptnet():
    # MetaOptNet reports ~12.4M parameters for its ResNet-12.
    assert abs(n_params(ResNet12MetaOptNet()) - 12.4e6) < 0.1e6


def test_resnet12_is_deterministic_in_eval_mode_and_random_in_training():
    torch.manual_seed(0)
    net = ResNet12MetaOptNet(in_channels=1, dropblock_ramp=1)  # full drop rate at once
    x = torch.rand(4, 1, 84, 84)
    net.eval()
    assert torch.equal(net(x), net(x))
    net.train()
    a, b = net(x), net(x)
    assert not torch.equal(a, b)  # dropout and DropBlock sample new masks


def test_dropblock_ramp_counts_training_passes_only():
    net = ResNet12MetaOptNet(in_channels=1, dropblock_ramp=10)
    x = torch.rand(2, 1, 32, 32)
    net.eval()
    net(x)
    assert int(net.layer3.num_batches_tracked) == 0
    net.train()
    for _ in range(3):
        net(x)
    assert int(net.layer3.num_batches_tracked) == 3
    assert net.layer3.keep_rate() == pytest.approx(1 - 0.1 * 3 / 10)
    assert "layer4.num_batches_tracked" in net.state_dict()  # saved with checkpoints


def test_dropblock_is_identity_in_eval_and_drops_blocks_in_training():
    torch.manual_seed(0)
    db = DropBlock(block_size=3)
    x = torch.ones(2, 4, 9, 9)
    db.eval()
    assert torch.equal(db(x, gamma=0.5), x)
    db.train()
    assert torch.equal(db(x, gamma=0.0), x)
    y = db(x, gamma=0.05)
    zero = y == 0
    assert zero.any() and not zero.all()
    # Survivors are rescaled so that the mean activation is preserved.
    assert y.sum().item() == pytest.approx(x.sum().item(), rel=1e-5)
    # Every zero lies in a fully zeroed 3x3 square.
    zi = zero.nonzero()[0]
    b, c, i, j = zi.tolist()
    windows = [zero[b, c, max(0, i - di):i - di + 3, max(0, j - dj):j - dj + 3]
               for di in range(3) for dj in range(3) if i - di >= 0 and j - dj >= 0
               and i - di + 3 <= 9 and j - dj + 3 <= 9]
    assert any(w.all() for w in windows)


def test_dropblock_whole_map_at_metaoptnet_last_stage():
    # On the 5x5 last stage a size-5 block covers the whole channel (MetaOptNet's gamma).
    torch.manual_seed(0)
    db = DropBlock(5).train()
    y = db(torch.ones(8, 64, 5, 5), gamma=0.5)
    per_channel = (y == 0).flatten(2).all(-1) | (y != 0).flatten(2).all(-1)
    assert per_channel.all()


@pytest.mark.parametrize("size,dim", [(84, 1600), (32, 256)])
def test_conv4_output_shape(size, dim):
    assert Conv4()(torch.rand(2, 3, size, size)).shape == (2, dim)


def test_conv4_configurable_channels():
    net = Conv4(in_channels=1, hidden=32)
    assert net(torch.rand(3, 1, 32, 32)).shape == (3, 32 * 2 * 2)


def test_registry_and_errors():
    assert set(ENCODERS) == {"resnet12_metaoptnet", "conv4", "mlp"}
    assert isinstance(build_encoder("conv4", in_channels=1), Conv4)
    mlp = build_encoder("mlp", in_features=10, hidden=[8], out_features=4)
    assert mlp(torch.rand(5, 10)).shape == (5, 4)
    with pytest.raises(ConfigError, match="unknown encoder 'resnet18'"):
        build_encoder("resnet18")
    with pytest.raises(ConfigError, match="conv4"):
        build_encoder("conv4", widht=3)
