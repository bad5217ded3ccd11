"""Run ``estimator_main.py --mode=train_and_evaluate`` as a TF_CONFIG cluster on 127.0.0.1.

    python scripts/local_cluster.py --train_records=records/train --eval_records=records/pairs \\
        --model_dir=/tmp/cluster_run -- --backbone=tiny --image_size=32 --train_steps=300

Starts one parameter server, the chief, one worker and one evaluator (the estimator's standard
between-graph training: variables on the ps, each worker reading its own shard), waits for the
chief, worker and evaluator to finish, stops the ps, and checks the run: both workers advanced
the shared global step, the evaluator wrote the LFW metrics, and the best SavedModel was exported.
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


def check_run(model_dir, logs, train_steps):
    """The run's failures as a list of messages (empty: every check passed)."""
    import tensorflow.compat.v1 as tf  # noqa: PLC0415

    problems = []
    final = tf.train.latest_checkpoint(model_dir)
    step = tf.train.load_variable(final, "global_step") if final else None
    if step is None or step < train_steps:
        problems.append(f"final checkpoint {final} has global step {step} < {train_steps}")
    for task in (("chief", 0), ("worker", 0)):
        steps = logged_steps(logs[task])
        if not steps:
            problems.append(f"{task[0]}_{task[1]} logged no training step")
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


def run_cluster(train_records, eval_records, model_dir, task_argv, train_steps, timeout=300,
                log_dir=None):
    """Start the cluster, wait (at most ``timeout`` s), stop everything; return (problems, logs)."""
    log_dir = log_dir or os.path.join(model_dir + "_logs")
    os.makedirs(log_dir, exist_ok=True)
    cluster = cluster_spec()
    argv = ["--mode=train_and_evaluate", f"--train_records={train_records}",
            f"--eval_records={eval_records}", f"--model_dir={model_dir}",
            f"--train_steps={train_steps}", "--noprogress", "--log_every_n_steps=1",
            "--verbosity=0"] + list(task_argv)
    tasks = [("ps", 0), ("chief", 0), ("worker", 0), ("evaluator", 0)]
    procs, logs, handles = {}, {}, []
    problems = []
    try:
        for task in tasks:
            procs[task], handle, logs[task] = start(task, cluster, argv, log_dir)
            handles.append(handle)
        deadline = time.time() + timeout
        for task in tasks[1:]:  # the ps serves until it is stopped
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
    if not problems:
        problems = check_run(model_dir, logs, train_steps)
    return problems, logs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train_records", required=True)
    parser.add_argument("--eval_records", required=True)
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--train_steps", type=int, default=300)
    parser.add_argument("--timeout", type=int, default=300, help="seconds for the whole run")
    parser.add_argument("task_flags", nargs="*", help="after --: flags for every task")
    args = parser.parse_args(argv)
    problems, logs = run_cluster(args.train_records, args.eval_records, args.model_dir,
                                 args.task_flags, args.train_steps, args.timeout)
    for task, path in sorted(logs.items()):
        steps = logged_steps(path)
        logged = f" ({min(steps)}..{max(steps)})" if steps else ""
        print(f"{task[0]}_{task[1]}: {len(steps)} steps logged{logged}, log {path}")
    if problems:
        print("FAILED:\n  " + "\n  ".join(problems))
        return 1
    print(f"OK: chief and worker trained to step {args.train_steps}, LFW metrics evaluated, best "
          "model exported")
    return 0


if __name__ == "__main__":
    sys.exit(main())
