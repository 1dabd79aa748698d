import os

import numpy as np
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as python_crc
from torch.utils.tensorboard import SummaryWriter

from mtfilter.record import tensorboard
from tests.helpers import read_scalars


def test_fast_checksum_equals_tensorboards_own():
    for size in (0, 1, 17, 1000):
        data = os.urandom(size)
        assert tensorboard.masked_crc32c(data) == python_crc(data)


def test_rows_written_fast_read_back_with_tensorboards_reader(tmp_path):
    tensorboard.use_fast_record_checksum()
    writer = SummaryWriter(str(tmp_path))
    values = np.array([[0.5, 0.25], [0.125, 1.0]])
    tensorboard.write_scalar_rows(writer, ["a/loss", "a/acc"], np.array([1, 2]), values)
    writer.close()
    scalars = read_scalars(tmp_path)
    assert scalars["a/loss"] == [(1, 0.5), (2, 0.125)]
    assert scalars["a/acc"] == [(1, 0.25), (2, 1.0)]
