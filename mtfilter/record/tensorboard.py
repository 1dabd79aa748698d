"""Writing many scalars per epoch to TensorBoard at a cost far below a training epoch.

Three costs dominate otherwise (measured on a 2-core CPU): Lightning's `log_metrics` writes one
event per scalar (~64 us each, ~2 ms for the ~35 scalars of an epoch at 10 bits), TensorBoard
without TensorFlow checksums every record in pure Python (~150 us per KB), and building the
event's protobuf objects costs about as much as writing it (~70 us an event of 35 scalars, of
which ~30 building). Here one event per epoch carries all its scalars, its bytes are filled into
a template encoded once per set of tags, and the record checksum is computed in C by
google-crc32c.
"""

import functools
import struct
import time
from typing import Any

import google_crc32c
import numpy as np
from tensorboard.compat.proto.event_pb2 import Event, SessionLog
from tensorboard.summary.writer import record_writer
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from mtfilter.nn.counter_rng import MASK32


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC32-C, the same value as TensorBoard's pure-Python version."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & MASK32


def use_fast_record_checksum() -> None:
    """Make TensorBoard's record writer use the C checksum (same bytes on disk, ~900x faster)."""
    # TensorBoard binds the pure-Python function at import; there is no setting to swap it.
    record_writer.masked_crc32c = masked_crc32c


def write_scalar_rows(
    writer: SummaryWriter, tags: list[str], steps: np.ndarray, values: np.ndarray
) -> None:
    """One event per step holding every tag's value: `values` is (len(steps), len(tags)).

    The bytes are those of `Event(wall_time, step, summary=Summary(value=[Summary.Value(tag,
    simple_value)...]))` (a test decodes them with TensorBoard's own protos), handed to the
    writer's queue as its `add_event` would."""
    template, slots = _summary_template(tuple(tags))
    summaries = np.tile(template, (len(steps), 1))  # (E, L) bytes of each step's Summary
    summaries[:, slots] = values.astype("<f4").view(np.uint8).reshape(len(steps), -1)
    queue = writer._get_file_writer().event_writer._async_writer
    summary_field = b"\x2a" + _varint(template.size)  # Event.summary, field 5
    for step, summary in zip(steps.tolist(), summaries, strict=True):
        # Event.wall_time (field 1, double), Event.step (field 2, varint)
        header = b"\x09" + struct.pack("<d", time.time()) + b"\x10" + _varint(int(step))
        queue.write(header + summary_field + summary.tobytes())


@functools.lru_cache(maxsize=64)
def _summary_template(tags: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """A Summary's bytes with every simple_value 0, and the byte positions of the values in
    tag order: (L,) uint8 and (4 * len(tags),) int."""
    parts: list[bytes] = []
    slots: list[int] = []
    offset = 0
    for tag in tags:
        name = tag.encode()
        # Summary.Value: tag (field 1, bytes), simple_value (field 2, fixed32)
        value = b"\x0a" + _varint(len(name)) + name + b"\x15"
        entry = b"\x0a" + _varint(len(value) + 4) + value  # Summary.value (field 1)
        slots.extend(range(offset + len(entry), offset + len(entry) + 4))
        parts.append(entry + bytes(4))
        offset += len(entry) + 4
    return np.frombuffer(b"".join(parts), dtype=np.uint8).copy(), np.array(slots)


def _varint(number: int) -> bytes:
    """Protobuf's base-128 varint of a non-negative integer."""
    out = bytearray()
    while number > 0x7F:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


def purge_from(writer: SummaryWriter, step: int) -> None:
    """Hide the events of `step` and later that earlier event files of this folder hold, as
    `SummaryWriter(purge_step=step)` does: a run resumed in its own folder from a checkpoint of
    epoch `step - 1` then shows each epoch once, whatever the stopped process wrote after it."""
    file_writer = writer._get_file_writer()
    file_writer.add_event(Event(step=step, file_version="brain.Event:2"))
    file_writer.add_event(Event(step=step, session_log=SessionLog(status=SessionLog.START)))


def write_hparams(
    writer: SummaryWriter, params: dict[str, Any], metrics: dict[str, float], step: int
) -> None:
    """Hyperparameters and their headline metrics for TensorBoard's HPARAMS tab, the metrics at
    `step` (the run's last epoch: a resumed run's later figures come after its earlier ones)."""
    experiment, start, end = hparams(params, metrics)
    file_writer = writer._get_file_writer()
    for summary in (experiment, start, end):
        file_writer.add_summary(summary)
    write_scalar_rows(
        writer, list(metrics), np.array([step], dtype=np.int64), np.array([list(metrics.values())])
    )
    writer.flush()


def write_cosine_image(writer: SummaryWriter, tag: str, cosines: np.ndarray, step: int) -> None:
    """A (T, T) matrix of cosines as an image: red -1 (conflict), white 0, blue +1, grey for
    none; each cell 16 pixels wide so that ten tasks make a readable picture."""
    from matplotlib import colormaps  # only when there is something to draw

    rgb = colormaps["RdBu"]((np.clip(cosines, -1, 1) + 1) / 2)[..., :3]  # (T, T, 3)
    rgb[np.isnan(cosines)] = 0.6  # grey: no cosine, a task with a zero gradient
    pixels = np.kron(rgb, np.ones((16, 16, 1)))
    writer.add_image(tag, (pixels * 255).astype(np.uint8), step, dataformats="HWC")
