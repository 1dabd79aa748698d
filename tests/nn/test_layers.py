import torch
from torch import nn

from mtfilter import BitMLP, GroupedLinear
from mtfilter.nn.layers import GroupedEmbedding


def test_grouped_linear_is_one_nn_linear_per_group():
    grouped = GroupedLinear(num_groups=3, in_features=5, out_features=4)
    x = torch.randn(3, 5, 7)  # (G, in, B)
    out = grouped(x)
    for g in range(3):
        linear = nn.Linear(5, 4)
        with torch.no_grad():
            linear.weight.copy_(grouped.weight[g])
            linear.bias.copy_(grouped.bias[g, :, 0])
        torch.testing.assert_close(out[g].T, linear(x[g].T))


def test_grouped_embedding_looks_up_shared_or_per_replica_rows():
    table = GroupedEmbedding(num_groups=4, num_embeddings=6, embedding_dim=3)  # 2 replicas x 2
    shared = torch.tensor([[5, 0, 2]])
    torch.testing.assert_close(table(shared), table.weight[:, :, [5, 0, 2]])
    per_replica = torch.tensor([[1, 2], [3, 4]])
    out = table(per_replica)  # replica 0 owns groups 0-1, replica 1 groups 2-3
    torch.testing.assert_close(out[:2], table.weight[:2][:, :, [1, 2]])
    torch.testing.assert_close(out[2:], table.weight[2:][:, :, [3, 4]])


def test_grouped_linear_initialises_like_nn_linear():
    grouped = GroupedLinear(num_groups=2, in_features=64, out_features=64)
    bound = 1 / 8
    assert float(grouped.weight.detach().abs().max()) <= bound
    assert (
        float(grouped.weight.detach().std()) > 0.9 * bound / 3**0.5
    )  # uniform's std is bound/sqrt(3)


def test_sync_batch_norm_conversion_keeps_the_grouping():
    model = BitMLP(num_bits=3, num_samples=16, layout="st", in_dim=4, hidden_dim=8)
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    norms = [layer.norm for layer in converted.hidden]
    assert all(isinstance(norm, nn.SyncBatchNorm) for norm in norms)
    assert [norm.num_features for norm in norms] == [3 * 8, 3 * 8]  # one channel per (bit, unit)
