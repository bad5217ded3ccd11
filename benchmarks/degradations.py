"""Cost of the training degradations (data_tools/degradations.py) in the input pipeline.

The training input_fn with configs/face_small.flags' augmentation (64 px, flips, scale crops,
contrast, brightness) against the same plus configs/face_small_robust.flags' degradations (low
resolution, blur, JPEG, gamma, shading), on the same records, in alternating rounds so that the
other jobs of a shared machine slow all of them alike. The ratio is the figure; images/s depend on
the cores.
"""

from benchmarks import common
from benchmarks.input_pipeline import dataset_runner
from data_tools import input_fns
from data_tools.input_config import Degradations

BATCH = 64
IMAGE_SIZE = 64  # face_small's input
# configs/face_small.flags' augmentation, and face_small_robust.flags' degradations.
AUGMENTATION = dict(random_flip=True, min_crop_scale=0.8, contrast_delta=0.3,
                    brightness_delta=20.0)
ROBUST = Degradations(lowres_prob=0.3, lowres_min_scale=0.4, blur_prob=0.2, blur_max_sigma=1.5,
                      jpeg_prob=0.3, jpeg_min_quality=30, gamma_range=0.4, shading_prob=0.3,
                      shading_strength=0.5)
# Every degradation on every image: the worst case.
ALWAYS = ROBUST._replace(lowres_prob=1.0, blur_prob=1.0, jpeg_prob=1.0, shading_prob=1.0)


def run(quick=False, workdir=None):
    """Measure and print; returns the JSON dict."""
    num_classes, per_class = (8, 16) if quick else (100, 30)
    warmup, calls, rounds = (1, 2, 1) if quick else (5, 20, 4)
    sessions = []
    with common.scratch_dir(workdir, "bench_degrade_") as scratch:
        try:
            records = common.make_train_records(scratch, num_classes, per_class)
            pipelines = []
            for name, config in (("plain", None), ("robust", ROBUST), ("always", ALWAYS)):
                train = input_fns.train_input_fn_builder(
                    records, image_size=IMAGE_SIZE, batch_size=BATCH, seed=0,
                    shuffle_buffer=num_classes * per_class, degradations=config, **AUGMENTATION)
                pipelines.append((name, lambda train=train: train(params={})))
            # One pipeline at a time, a fresh session each round (as input_pipeline.py: an idle
            # pipeline would keep prefetching, stealing cores and banking batches); rounds
            # alternate the order, and each keeps its fastest round.
            seconds = {}
            for round_index in range(rounds):
                order = pipelines if round_index % 2 == 0 else pipelines[::-1]
                for name, dataset in order:
                    session, fetch = dataset_runner(dataset)
                    sessions.append(session)
                    for _ in range(warmup):
                        fetch()
                    elapsed = common.per_call(fetch, calls)
                    seconds[name] = min(seconds.get(name, elapsed), elapsed)
                    session.close()
            rates = {name: BATCH / value for name, value in seconds.items()}
            return common.emit("degradations", {
                "images": num_classes * per_class, "batch": BATCH, "image_size": IMAGE_SIZE,
                "cpus": common.cpu_count(),
                "plain_images_per_s": common.rounded(rates["plain"]),
                "robust_images_per_s": common.rounded(rates["robust"]),
                "always_images_per_s": common.rounded(rates["always"]),
                "robust_over_plain": common.ratio(rates["robust"], rates["plain"]),
                "always_over_plain": common.ratio(rates["always"], rates["plain"]),
            })
        finally:
            for session in sessions:
                session.close()


def main(argv=None):
    common.run_command_line(run, __doc__, argv)


if __name__ == "__main__":
    main()
