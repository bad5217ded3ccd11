"""Head cost: class-level Circle head against the plain (normalised) softmax head.

The backbone is left out: the embeddings are a trainable [batch, 512] variable, so a step is the
head's forward and backward pass plus the momentum update of the proxies (and the embeddings),
which is everything the head adds to a training step. Both heads are timed in alternating rounds.

Each step's CPU time (the process's user + system time, all threads) is measured as well: on a
machine shared with other jobs the wall clock says how much CPU the step got, the CPU time what
it costs; ``circle_over_softmax_<C>_cpu`` (median of per-round CPU times) stays put under load.
"""

import time

import numpy as np
import tensorflow.compat.v1 as tf

from benchmarks import common
from model import heads

EMBEDDING_SIZE = 512
BATCH = 64
HEADS = ("circle", "softmax")


def _step_runner(head_name, num_classes, batch):
    """(session, fn running one training step) of ``head_name`` over ``num_classes`` proxies."""
    graph = tf.Graph()
    with graph.as_default():
        embeddings, labels = common.random_head_batch(num_classes, batch, EMBEDDING_SIZE)
        head = heads.build_head(head_name, num_classes=num_classes,
                                embedding_size=EMBEDDING_SIZE)
        loss = tf.reduce_mean(head(embeddings, labels).per_example_loss)
        train = tf.train.MomentumOptimizer(0.01, 0.9).minimize(loss)
        init = tf.global_variables_initializer()
    session = tf.Session(graph=graph, config=common.session_config())
    session.run(init)
    return session, lambda: session.run(train)


def _interleaved_wall_and_cpu(runners, rounds):
    """``common.interleaved`` that also takes each round's CPU time: ({name: median wall
    seconds per call}, {name: median CPU seconds per call}); the order flips every round."""
    wall = {name: [] for name in runners}
    cpu = {name: [] for name in runners}
    names = list(runners)
    for round_index in range(rounds):
        for name in names if round_index % 2 == 0 else names[::-1]:
            step, calls = runners[name]
            cpu_start, start = time.process_time(), time.perf_counter()
            for _ in range(calls):
                step()
            wall[name].append((time.perf_counter() - start) / calls)
            cpu[name].append((time.process_time() - cpu_start) / calls)
    return ({name: float(np.median(values)) for name, values in wall.items()},
            {name: float(np.median(values)) for name, values in cpu.items()})


def run(quick=False, workdir=None, class_counts=None):
    """Measure and print; returns the JSON dict (``workdir`` is unused: no files)."""
    del workdir
    class_counts = class_counts or ((1000, 10000) if quick else (10000, 100000))
    warmup, steps, rounds = (1, 2, 2) if quick else (3, 10, 5)
    batch = 8 if quick else BATCH
    figures = {"batch": batch, "embedding_size": EMBEDDING_SIZE}
    for num_classes in class_counts:
        sessions = []
        try:
            runners = {}
            for name in HEADS:
                session, step = _step_runner(name, num_classes, batch)
                sessions.append(session)
                for _ in range(warmup):
                    step()
                runners[name] = (step, steps)
            seconds, cpu_seconds = _interleaved_wall_and_cpu(runners, rounds)
        finally:
            for session in sessions:
                session.close()
        for name in HEADS:
            figures[f"{name}_{num_classes}_ms_per_step"] = common.rounded(
                1000 * seconds[name], 2)
            figures[f"{name}_{num_classes}_cpu_ms_per_step"] = common.rounded(
                1000 * cpu_seconds[name], 2)
        figures[f"circle_over_softmax_{num_classes}"] = common.ratio(seconds["circle"],
                                                                       seconds["softmax"])
        figures[f"circle_over_softmax_{num_classes}_cpu"] = common.ratio(cpu_seconds["circle"],
                                                                           cpu_seconds["softmax"])
    figures["load_average"] = common.load_average()
    figures["target_circle_over_softmax_100000"] = 1.05
    return common.emit("head_cost", figures)


def main(argv=None):
    common.run_command_line(run, __doc__, argv)


if __name__ == "__main__":
    main()
