"""Run ``estimator_main.py`` as a TF_CONFIG cluster on 127.0.0.1.

    python scripts/local_cluster.py --train_records=records/train --eval_records=records/pairs \\
        --model_dir=/tmp/cluster_run -- --backbone=tiny --image_size=32 --train_steps=300
    python scripts/local_cluster.py --distribution=multi_worker --num_workers=2 \\
        --train_records=records/train --model_dir=/tmp/mw_run --train_steps=20 -- --backbone=tiny

``--distribution=ps`` (default) starts one parameter server, the chief, one worker and one
evaluator (the estimator's standard between-graph training: variables on the ps, each worker
reading its own shard), waits for the chief, worker and evaluator to finish, stops the ps, and
checks the run: both workers advanced the shared global step, the evaluator wrote the LFW
metrics, and the best SavedModel was exported.

``--distribution=multi_worker`` starts ``--num_workers`` workers (worker 0 the chief) that train
in lockstep with MultiWorkerMirroredStrategy, plus an evaluator when ``--eval_records`` is
given, and checks: every task exited 0, every worker logged training steps, and the chief's
final checkpoint is at exactly ``--train_steps`` (synchronous steps count once), with the
evaluator's checks above when there is one.

Every process is stopped at the end, also on failure or timeout. Exit status 0 means all checks
passed. Flags after ``--`` go to every task unchanged.
"""

import argparse
import glob
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST = "127.0.0.1"  # loopback only: this is a test bench, not a deployment
STEP_LINE = re.compile(r"\bstep = (\d+)")


def free_ports(count):
    """``count`` distinct ports free on the loopback interface right now."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def cluster_spec(num_workers=1, num_ps=1):
    """The TF_CONFIG ``cluster`` dict: chief, ``num_workers`` workers, ``num_ps`` ps."""
    ports = free_ports(1 + num_workers + num_ps)
    address = [f"{HOST}:{port}" for port in ports]
    return {"chief": address[:1], "worker": address[1:1 + num_workers],
            "ps": address[1 + num_workers:]}


def multi_worker_cluster(num_workers=2):
    """The TF_CONFIG ``cluster`` dict of a multi-worker run: ``num_workers`` workers only."""
    return {"worker": [f"{HOST}:{port}" for port in free_ports(num_workers)]}


def tf_config(cluster, task_type, index=0):
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


def start(task, cluster, argv, log_dir):
    task_type, index = task
    env = dict(os.environ, TF_CONFIG=tf_config(cluster, task_type, index),
               TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
               PYTHONIOENCODING="utf-8", PYTHONUNBUFFERED="1")
    log_path = os.path.join(log_dir, f"{task[0]}_{task[1]}.log")
    log = open(log_path, "w")
    # A new session: the whole process group can be stopped, whatever TF started under it.
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "estimator_main.py")] + argv,
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    return proc, log, log_path


def stop(proc):
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def logged_steps(log_path):
    """The distinct global steps a task's training log reports, sorted."""
    with open(log_path, encoding="utf-8", errors="replace") as f:
        return sorted({int(s) for s in STEP_LINE.findall(f.read())})


def eval_tags(model_dir):
    """Scalar tags written by the evaluator's summaries (eval_lfw/events.*)."""
    import tensorflow.compat.v1 as tf  # noqa: PLC0415  (only the checks need TensorFlow)

    tags = set()
    for path in glob.glob(os.path.join(model_dir, "eval_lfw", "events.out.tfevents.*")):
        for event in tf.train.summary_iterator(path):
            tags.update(value.tag for value in event.summary.value)
    return tags


def final_step(model_dir):
    """(latest checkpoint, its global step), or (None, None)."""
    import tensorflow.compat.v1 as tf  # noqa: PLC0415  (only the checks need TensorFlow)

    final = tf.train.latest_checkpoint(model_dir)
    return final, (tf.train.load_variable(final, "global_step") if final else None)


def check_run(model_dir, logs, train_steps, training_tasks=(("chief", 0), ("worker", 0)),
              exact_steps=False, evaluated=True):
    """The run's failures as a list of messages (empty: every check passed).

    ``exact_steps``: the final checkpoint must be at ``train_steps`` exactly (synchronous
    training), not merely at or beyond it (asynchronous workers may overshoot)."""
    problems = []
    final, step = final_step(model_dir)
    if step is None or step < train_steps or (exact_steps and step != train_steps):
        relation = "!=" if exact_steps else "<"
        problems.append(f"final checkpoint {final} has global step {step} {relation} "
                        f"{train_steps}")
    for task in training_tasks:
        steps = logged_steps(logs[task])
        if not steps:
            problems.append(f"{task[0]}_{task[1]} logged no training step")
    if evaluated:
        problems += _check_evaluation(model_dir)
    return problems


def _check_evaluation(model_dir):
    problems = []
    tags = eval_tags(model_dir)
    if "lfw/accuracy" not in tags:
        problems.append(f"no lfw/accuracy in the evaluator's summaries (tags: {sorted(tags)})")
    report_path = os.path.join(model_dir, "eval", "report.json")
    if not os.path.exists(report_path):
        problems.append(f"the evaluator wrote no {report_path}")
    best = glob.glob(os.path.join(model_dir, "export", "best", "*", "saved_model.pb"))
    if not best:
        problems.append(f"no best SavedModel under {model_dir}/export/best")
    return problems


def task_argv(train_records, eval_records, model_dir, train_steps, extra=()):
    """The command line every task runs (train_and_evaluate, or train without eval records)."""
    argv = ["--mode=train_and_evaluate" if eval_records else "--mode=train",
            f"--train_records={train_records}"]
    if eval_records:
        argv.append(f"--eval_records={eval_records}")
    return argv + [f"--model_dir={model_dir}", f"--train_steps={train_steps}", "--noprogress",
                   "--log_every_n_steps=1", "--verbosity=0"] + list(extra)


def run_cluster(train_records, eval_records, model_dir, task_argv_extra, train_steps, timeout=300,
                log_dir=None):
    """Start the ps cluster, wait (at most ``timeout`` s), stop everything; return (problems,
    logs)."""
    log_dir = log_dir or os.path.join(model_dir + "_logs")
    os.makedirs(log_dir, exist_ok=True)
    argv = task_argv(train_records, eval_records, model_dir, train_steps, task_argv_extra)
    tasks = [("ps", 0), ("chief", 0), ("worker", 0), ("evaluator", 0)]
    problems, logs = run_tasks(tasks, cluster_spec(), argv, log_dir, timeout, servers=1)
    if not problems:
        problems = check_run(model_dir, logs, train_steps)
    return problems, logs


def run_multi_worker(train_records, eval_records, model_dir, task_argv_extra, train_steps,
                     num_workers=2, timeout=300, log_dir=None):
    """Start ``num_workers`` workers with --distribution=multi_worker (and an evaluator when
    ``eval_records`` is given), wait at most ``timeout`` s, stop everything; return (problems,
    logs)."""
    log_dir = log_dir or os.path.join(model_dir + "_logs")
    os.makedirs(log_dir, exist_ok=True)
    argv = task_argv(train_records, eval_records, model_dir, train_steps,
                     ["--distribution=multi_worker"] + list(task_argv_extra))
    workers = [("worker", i) for i in range(num_workers)]
    tasks = workers + ([("evaluator", 0)] if eval_records else [])
    problems, logs = run_tasks(tasks, multi_worker_cluster(num_workers), argv, log_dir, timeout)
    if not problems:
        problems = check_run(model_dir, logs, train_steps, training_tasks=workers,
                             exact_steps=True, evaluated=bool(eval_records))
    return problems, logs


def run_tasks(tasks, cluster, argv, log_dir, timeout, servers=0):
    """Start every task, wait for all but the first ``servers`` ones (parameter servers serve
    until stopped) at most ``timeout`` s in all, then stop every process; return (problems,
    logs): a task that exits non-zero or does not finish in time is a problem."""
    procs, logs, handles = {}, {}, []
    problems = []
    try:
        for task in tasks:
            procs[task], handle, logs[task] = start(task, cluster, argv, log_dir)
            handles.append(handle)
        deadline = time.time() + timeout
        for task in tasks[servers:]:
            remaining = max(1.0, deadline - time.time())
            try:
                code = procs[task].wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                problems.append(f"{task[0]}_{task[1]} did not finish within {timeout} s")
                break
            if code != 0:
                problems.append(f"{task[0]}_{task[1]} exited with status {code} "
                                f"(log: {logs[task]})")
    finally:
        for proc in procs.values():
            stop(proc)
        for handle in handles:
            handle.close()
    return problems, logs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train_records", required=True)
    parser.add_argument("--eval_records", help="pair records for the evaluator (required with "
                        "--distribution=ps; multi_worker runs no evaluator without them)")
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--train_steps", type=int, default=300)
    parser.add_argument("--distribution", choices=("ps", "multi_worker"), default="ps",
                        help="ps: chief + worker + ps + evaluator, asynchronous; multi_worker: "
                        "--num_workers synchronous workers (MultiWorkerMirroredStrategy)")
    parser.add_argument("--num_workers", type=int, default=2, help="multi_worker: workers")
    parser.add_argument("--timeout", type=int, default=300, help="seconds for the whole run")
    parser.add_argument("task_flags", nargs="*", help="after --: flags for every task")
    args = parser.parse_args(argv)
    if args.distribution == "ps":
        if not args.eval_records:
            parser.error("--distribution=ps needs --eval_records (its evaluator)")
        problems, logs = run_cluster(args.train_records, args.eval_records, args.model_dir,
                                     args.task_flags, args.train_steps, args.timeout)
    else:
        if args.num_workers < 1:
            parser.error("--num_workers must be at least 1")
        problems, logs = run_multi_worker(args.train_records, args.eval_records, args.model_dir,
                                          args.task_flags, args.train_steps, args.num_workers,
                                          args.timeout)
    for task, path in sorted(logs.items()):
        steps = logged_steps(path)
        logged = f" ({min(steps)}..{max(steps)})" if steps else ""
        print(f"{task[0]}_{task[1]}: {len(steps)} steps logged{logged}, log {path}")
    if problems:
        print("FAILED:\n  " + "\n  ".join(problems))
        return 1
    if args.distribution == "ps":
        print(f"OK: chief and worker trained to step {args.train_steps}, LFW metrics evaluated, "
              "best model exported")
    else:
        evaluated = ", LFW metrics evaluated, best model exported" if args.eval_records else ""
        print(f"OK: {args.num_workers} workers trained in lockstep to step {args.train_steps} "
              f"exactly{evaluated}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
