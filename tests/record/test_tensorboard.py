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


def test_rows_are_the_bytes_of_tensorboards_own_event(tmp_path):
    """The hand-filled bytes decode to the Event that `add_summary` would have written."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary

    class Queue:
        def __init__(self):
            self.records = []

        def write(self, data):
            self.records.append(data)

    writer = SummaryWriter(str(tmp_path))
    queue, event_writer = Queue(), writer._get_file_writer().event_writer
    event_writer._async_writer, real = queue, event_writer._async_writer
    tags = ["val/loss", "val/loss/bit_0", "x" * 200]  # a tag long enough for a 2-byte length
    values = np.array([[0.5, -0.0, np.nan], [1e-30, 3.0e38, np.inf]])
    steps = np.array([1, 300])  # 300: a 2-byte varint
    tensorboard.write_scalar_rows(writer, tags, steps, values)
    event_writer._async_writer = real
    writer.close()
    assert len(queue.records) == 2
    for record, step, row in zip(queue.records, steps, values, strict=True):
        event = Event.FromString(record)
        expected = Summary(
            value=[Summary.Value(tag=t, simple_value=v) for t, v in zip(tags, row, strict=True)]
        )
        assert event.step == step and event.wall_time > 0
        assert event.summary.SerializeToString() == expected.SerializeToString()
