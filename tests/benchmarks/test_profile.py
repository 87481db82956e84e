"""benchmarks.profile reads TensorFlow's trace itself: its op table from a made-up XSpace and
from a real trace of a few steps."""

import keras
import numpy as np
import tensorflow as tf
from tensorflow.tsl.profiler.protobuf import xplane_pb2

from benchmarks import profile


def made_up_space():
    space = xplane_pb2.XSpace()
    plane = space.planes.add(name="/host:CPU")
    names = ["m/conv:Conv2D", "m/loop:While", "ExecutorState::Process", "d/map:GatherV2"]
    for index, name in enumerate(names):
        plane.event_metadata[index].name = name
    for line_name, events in (
        ("tf_Compute/1", [(0, 3.0), (0, 2.0), (1, 9.0), (2, 7.0)]),
        ("tf_Compute/2", [(0, 1.5)]),
        ("tf_data_private_threadpool/3", [(3, 0.25)]),
        ("python", [(0, 100.0)]),  # eager work on Python's thread is not the step's
    ):
        line = plane.lines.add(name=line_name)
        for metadata_id, ms in events:
            line.events.add(metadata_id=metadata_id, duration_ps=int(ms * 1e9))
    return space


def test_op_times_sum_kernels_by_type_and_leave_out_containers_and_the_runtime():
    assert profile.op_times(made_up_space()) == {
        ("model", "Conv2D"): [6.5, 3],
        ("tf.data", "GatherV2"): [0.25, 1],
    }


def test_a_real_trace_of_a_few_steps_ranks_the_dense_kernels(tmp_path):
    inputs = keras.Input((64,))
    model = keras.Model(inputs, keras.layers.Dense(8)(keras.layers.Dense(256)(inputs)))
    model.compile("sgd", "mse")
    x, y = np.ones((64, 64), "float32"), np.zeros((64, 8), "float32")
    model.fit(x, y, batch_size=16, verbose=0)
    tf.profiler.experimental.start(str(tmp_path))
    model.fit(x, y, batch_size=16, verbose=0)
    tf.profiler.experimental.stop()
    times = profile.op_times(profile.read_trace(tmp_path))
    ops = {op for where, op in times if where == "model"}
    assert {"MatMul", "_MklMatMul"} & ops, ops
    rows, ms_per_step = profile.table_rows(times, steps=4, top=3)
    assert len(rows) <= 3 + 3 and ms_per_step > 0
    assert float(rows[0][2]) >= float(rows[1][2])  # ranked by time
