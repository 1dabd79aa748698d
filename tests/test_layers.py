import torch
from torch import nn

from mtfilter import GroupedBatchNorm, GroupedLinear


def test_grouped_linear_is_one_nn_linear_per_group():
    grouped = GroupedLinear(num_groups=3, in_features=5, out_features=4)
    x = torch.randn(3, 7, 5)
    out = grouped(x)
    for g in range(3):
        linear = nn.Linear(5, 4)
        with torch.no_grad():
            linear.weight.copy_(grouped.weight[g].T)
            linear.bias.copy_(grouped.bias[g, 0])
        torch.testing.assert_close(out[g], linear(x[g]))


def test_grouped_linear_initialises_like_nn_linear():
    grouped = GroupedLinear(num_groups=2, in_features=64, out_features=64)
    bound = 1 / 8
    assert float(grouped.weight.detach().abs().max()) <= bound
    assert (
        float(grouped.weight.detach().std()) > 0.9 * bound / 3**0.5
    )  # uniform's std is bound/sqrt(3)


def test_grouped_batch_norm_is_one_batch_norm_per_group_in_train_and_eval():
    grouped = GroupedBatchNorm(num_groups=2, num_features=3)
    references = [nn.BatchNorm1d(3) for _ in range(2)]
    for _ in range(3):  # running statistics move the same way
        x = torch.randn(2, 16, 3) * 5 + 2
        out = grouped(x)
        for g, reference in enumerate(references):
            torch.testing.assert_close(out[g], reference(x[g]))
    grouped.eval()
    x = torch.randn(2, 4, 3)
    for g, reference in enumerate(references):
        reference.eval()
        torch.testing.assert_close(grouped(x)[g], reference(x[g]))


def test_sync_batch_norm_conversion_keeps_the_grouping():
    grouped = GroupedBatchNorm(num_groups=2, num_features=3)
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(nn.Sequential(grouped))
    assert isinstance(converted[0].norm, nn.SyncBatchNorm)
    assert converted[0].norm.num_features == 6
