"""The original experiment's defects as switches: each against a plain PyTorch reference."""

import numpy as np
import pytest
import torch
from torch import nn

from mtfilter import BitMappingDataModule, BitMLP, make_targets, per_bit_loss
from mtfilter.nn.layers import ChunkedBatchNorm1d
from tests.helpers import cli, log_dir, read_scalars, read_summary, state_dict_of

SGD = ["--model.optimizer.class_path", "torch.optim.SGD", "--model.optimizer.init_args.lr",
       "0.01", "--model.optimizer.init_args.momentum", "0.9"]  # fmt: skip
LAST = "checkpoints/last.ckpt"


def fit(*args: str):
    return cli(["fit", "--trainer.enable_model_summary", "false", *SGD, *args])


def reference_weights(epochs: int, reduction: str) -> dict[str, torch.Tensor]:
    """configs/tiny.yaml's model and batches (seed 0), trained by a plain PyTorch loop that
    never calls zero_grad."""
    data = BitMappingDataModule(num_bits=4, batch_size=8, seeds=[0])
    loader = data.train_dataloader()
    net = BitMLP(num_bits=4, num_samples=16, layout="mt", in_dim=4, hidden_dim=8, init_seeds=[0])
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        for indices, targets in next(iter(loader)):
            losses = per_bit_loss(net(indices), targets, "l1")
            (losses.sum() if reduction == "sum" else losses.mean()).backward()
            optimizer.step()  # no zero_grad, ever: .grad holds the sum of every gradient so far
    return {f"net.{name}": tensor for name, tensor in net.state_dict().items()}


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_accumulated_gradients_are_a_loop_that_never_zeroes_them(run_dir, reduction):
    run = fit("--trainer.max_epochs", "6", "--model.accumulate_gradients", "true",
              "--model.loss_reduction", reduction)  # fmt: skip
    trained = state_dict_of(log_dir(run) / LAST)
    expected = reference_weights(6, reduction)
    for name, tensor in expected.items():
        torch.testing.assert_close(trained[name], tensor, msg=name)
    zeroed = state_dict_of(log_dir(fit("--trainer.max_epochs", "6")) / LAST)
    assert not torch.allclose(zeroed["net.head.weight"], expected["net.head.weight"])


def test_accumulated_gradients_resume_exactly(run_dir):
    common = ["--model.accumulate_gradients", "true"]
    straight = fit(*common, "--trainer.max_epochs", "8")
    first = fit(*common, "--trainer.max_epochs", "5")
    resumed = fit(*common, "--trainer.max_epochs", "8",
                  "--ckpt_path", str(log_dir(first) / LAST))  # fmt: skip
    a, b = state_dict_of(log_dir(straight) / LAST), state_dict_of(log_dir(resumed) / LAST)
    for name in a:
        torch.testing.assert_close(a[name], b[name], msg=name)


def test_the_mean_reduction_gives_each_bit_a_tenth_of_the_sums_gradient():
    net = BitMLP(num_bits=10, num_samples=32, layout="mt", in_dim=4, hidden_dim=8, init_seeds=[0])
    indices = torch.arange(32)
    losses = per_bit_loss(net(indices), make_targets(10, 32, "permutation", 0), "l1")
    summed = torch.autograd.grad(losses.sum(), net.head.weight, retain_graph=True)[0]
    mean = torch.autograd.grad(losses.mean(), net.head.weight)[0]
    torch.testing.assert_close(mean * 10, summed)


def test_the_lowest_batch_loss_is_recorded_beside_the_exact_figures(run_dir, capsys):
    folder = log_dir(fit("--trainer.max_epochs", "20", "--checkpoint.monitor",
                         "train/batch_loss_min"))  # fmt: skip
    scalars, summary = read_scalars(folder), read_summary(folder)
    batch_min = [value for _, value in scalars["train/batch_loss_min"]]
    epoch_mean = [value for _, value in scalars["train/loss"]]
    # two batches an epoch: the lower one is below their mean, unless they are equal
    assert all(low <= mean + 1e-6 for low, mean in zip(batch_min, epoch_mean, strict=True))
    assert summary["train"]["batch_loss_best"] == pytest.approx(min(batch_min), rel=1e-6)
    assert summary["train"]["batch_loss_best_epoch"] == int(np.argmin(batch_min)) + 1
    assert summary["val"]["loss_best"] is not None  # the exact figure is there too
    best = summary["train"]["batch_loss_best"]  # and the fit's last lines name both
    assert f"best batch loss {best:.4f} at epoch " in capsys.readouterr().out


class SharedInputTowers(nn.Module):
    """The original code's st: one nn.Embedding read by `num_bits` nn.Sequential towers."""

    def __init__(self, net: BitMLP) -> None:
        super().__init__()
        table = net.embedding.weight.detach()[0]  # (in_dim, N)
        self.embedding = nn.Embedding.from_pretrained(table.T.clone(), freeze=False)
        first, second = net.hidden[0].linear, net.hidden[1].linear  # fan-out, then per bit
        self.towers = nn.ModuleList()
        hidden = second.in_features
        for bit in range(net.num_bits):
            rows = slice(bit * hidden, (bit + 1) * hidden)
            layers = [nn.Linear(first.in_features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                      nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                      nn.Linear(hidden, 1)]  # fmt: skip
            with torch.no_grad():
                layers[0].weight.copy_(first.weight[0, rows])
                layers[0].bias.copy_(first.bias[0, rows, 0])
                layers[3].weight.copy_(second.weight[bit])
                layers[3].bias.copy_(second.bias[bit, :, 0])
                layers[6].weight.copy_(net.head.weight[bit])
                layers[6].bias.copy_(net.head.bias[bit, :, 0])
            self.towers.append(nn.Sequential(*layers))

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        x = self.embedding(indices)
        return torch.cat([tower(x) for tower in self.towers], dim=1)


def test_st_with_a_shared_embedding_is_split_with_no_shared_layer_and_the_original_st():
    kwargs = {"num_bits": 4, "num_samples": 16, "in_dim": 4, "hidden_dim": 8, "init_seeds": [3],
              "bias_before_batch_norm": True}  # fmt: skip  # the original's nn.Linear biases
    shared = BitMLP(layout="st", shared_embedding=True, **kwargs)
    split = BitMLP(layout="split", num_shared_layers=0, **kwargs)
    assert shared.state_dict().keys() == split.state_dict().keys()
    for name, tensor in split.state_dict().items():
        torch.testing.assert_close(shared.state_dict()[name], tensor, msg=name)
    assert shared.parameter_counts() == split.parameter_counts()
    reference = SharedInputTowers(shared)
    indices = torch.randperm(16, generator=torch.Generator().manual_seed(0))[:8]
    targets = make_targets(4, 16, "permutation", 0)[indices]
    ours = per_bit_loss(shared(indices), targets, "l1").mean()
    theirs = (torch.sigmoid(reference(indices)) - targets).abs().mean()  # nn.L1Loss()
    torch.testing.assert_close(ours, theirs)
    ours.backward()
    theirs.backward()
    torch.testing.assert_close(shared.embedding.weight.grad[0].T, reference.embedding.weight.grad)
    for bit, tower in enumerate(reference.towers):
        torch.testing.assert_close(shared.head.weight.grad[bit], tower[6].weight.grad)


def test_chunked_batch_norm_normalises_each_chunk_as_data_parallel_did():
    x = torch.randn(1, 6, 32, generator=torch.Generator().manual_seed(0)) * 3 + 1
    chunked = ChunkedBatchNorm1d(6, chunks=4)
    with torch.no_grad():
        chunked.weight.uniform_(0.5, 1.5)
        chunked.bias.uniform_(-1, 1)
    devices = [nn.BatchNorm1d(6) for _ in range(4)]  # one replica per device, same parameters
    for device in devices:
        device.load_state_dict(chunked.state_dict())
    expected = torch.cat(
        [
            device(part[0].T).T[None]
            for device, part in zip(devices, x.chunk(4, dim=2), strict=True)
        ],
        dim=2,
    )
    torch.testing.assert_close(chunked(x), expected)
    # only the first device's running statistics survive a DataParallel step
    torch.testing.assert_close(chunked.running_mean, devices[0].running_mean)
    torch.testing.assert_close(chunked.running_var, devices[0].running_var)
    plain = ChunkedBatchNorm1d(6, chunks=1)
    torch.testing.assert_close(plain(x), nn.BatchNorm1d(6)(x[0].T).T[None])


def test_a_batch_that_does_not_split_into_the_chunks_is_refused_before_training(run_dir):
    from mtfilter import ConfigError

    with pytest.raises(ConfigError, match="batch_norm_chunks=3.*8"):
        fit("--model.batch_norm_chunks", "3")
    assert not (run_dir / "lightning_logs").exists()


def test_numpy_permutation_targets_are_numpys_legacy_permutation():
    np.random.seed(0)
    codes = np.random.permutation(1024)
    expected = [[int(bit) for bit in f"{code:010b}"] for code in codes]
    assert make_targets(10, 1024, "numpy_permutation", 0).int().tolist() == expected


@pytest.mark.parametrize("layout", ["mt", "st"])
def test_the_original_configs_train_their_whole_budget(layout):
    """The original ran 10,000 epochs whatever happened: convergence is recorded, not obeyed."""
    from mtfilter.train.preflight import PreflightCLI
    from tests.helpers import CONFIGS

    config = PreflightCLI(["--config", str(CONFIGS / f"original/{layout}.yaml")]).config
    assert config.trainer.max_epochs == 10000 and config.convergence.stop is False
    assert config.model.accumulate_gradients and config.model.loss_reduction == "mean"
