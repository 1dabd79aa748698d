"""Hand-written plain-PyTorch training loops: the yardsticks mtfilter is measured against.

`train_reference` does the same work as `mtfilter fit` at its defaults, with no framework: the
same BitMLP, data on the device, configs/mt.yaml's Adam, per-epoch loss bookkeeping and the same
full-dataset evaluation pass (loss, bit accuracy, exact match) every epoch, kept on the device and
copied to the host once at the end. `SeparateTowers` is the obvious st implementation: a Python
loop over `num_bits` independent nn.Sequential towers.
"""

import torch
from torch import Tensor, nn

from mtfilter import BitMLP, make_targets, per_bit_loss


def train_reference(
    hidden_dim: int,
    epochs: int,
    layout: str = "mt",
    num_bits: int = 10,
    batch_size: int = 512,
    device: str = "cpu",
    seed: int = 0,
) -> Tensor:
    """Train like `mtfilter fit` does; returns the (epochs, 2 * num_bits + 2) history."""
    num_samples = 2**num_bits
    targets = make_targets(num_bits, num_samples, "permutation", 0).to(device)
    model = BitMLP(
        num_bits=num_bits,
        num_samples=num_samples,
        layout=layout,
        hidden_dim=hidden_dim,
        init_seeds=[seed],
    ).to(device)
    # configs/mt.yaml's optimizer, so that the overhead compares like with like
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4)
    everything = torch.arange(num_samples, device=device)
    generator = torch.Generator(device).manual_seed(seed)
    history = torch.empty(epochs, 2 * num_bits + 2, device=device)
    for epoch in range(epochs):
        order = torch.randperm(num_samples, device=device, generator=generator)
        loss_sum = torch.zeros(num_bits, device=device)
        for start in range(0, num_samples, batch_size):
            indices = order[start : start + batch_size]
            loss_per_bit = per_bit_loss(model(indices), targets[indices], "l1")
            optimizer.zero_grad(set_to_none=True)
            loss_per_bit.sum().backward()
            optimizer.step()
            loss_sum += loss_per_bit.detach() * len(indices)
        model.eval()
        with torch.no_grad():
            logits = model(everything)
            val_loss = per_bit_loss(logits, targets, "l1")
            correct = (logits > 0) == targets.bool()
        model.train()
        history[epoch, :num_bits] = loss_sum / num_samples
        history[epoch, num_bits : 2 * num_bits] = val_loss
        history[epoch, -2] = correct.float().mean()
        history[epoch, -1] = correct.all(dim=1).float().mean()
    return history.cpu()


class SeparateTowers(nn.Module):
    """`num_bits` independent MLPs in a Python loop, one output each: (B,) -> (B, num_bits)."""

    def __init__(self, num_bits: int, num_samples: int, in_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.towers = nn.ModuleList(
            nn.Sequential(
                nn.Embedding(num_samples, in_dim),
                nn.Linear(in_dim, hidden_dim),
                nn.BatchNorm1d(hidden_dim),
                nn.ReLU(),
                nn.Linear(hidden_dim, hidden_dim),
                nn.BatchNorm1d(hidden_dim),
                nn.ReLU(),
                nn.Linear(hidden_dim, 1),
            )
            for _ in range(num_bits)
        )

    def forward(self, indices: Tensor) -> Tensor:
        return torch.cat([tower(indices) for tower in self.towers], dim=1)
