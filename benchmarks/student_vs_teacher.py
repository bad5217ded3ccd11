"""How much faster a distilled student embeds a face than its dlib teacher, on this CPU.

The released model's claim (issue 27: "at least 5x faster than the dlib teacher, batch 1, one
process, measured side by side"). Both sides embed one face per call, in one process, with the
threads their runtimes choose on this machine, timed in alternating rounds (``--rounds``, each
``--calls`` calls per contender) so a burst of load from other jobs hits all of them alike; the
figure per contender is the median over rounds of milliseconds per face.

The network alone, an aligned face in, a vector out:

* ``teacher_network``: dlib's ResNet descriptor on its 150x150 chip
  (``face_recognition_model_v1.compute_face_descriptor``, what the teacher runs per face);
* ``student_savedmodel``: the student's float ``pixels`` signature in a TF session;
* ``student_onnx`` / ``student_tflite_int8``: ``model.onnx`` / ``model_int8.tflite`` beside the
  SavedModel, when they are there (ONNX Runtime, the TFLite interpreter).

The whole route from a photo (``--photos``: decode, find the face, align, embed): the teacher's
(HOG detector, 5-point landmarks, chip, descriptor: ``data_tools.teachers.DlibTeacher.embed``)
against the student's ``export.embed --align`` route (MTCNN, the 5-point template, the
SavedModel's ``image_bytes`` signature without flip). A photo where a detector finds no face is
embedded whole by either, as the tools do.

One JSON line: milliseconds per face of each contender and ``<student>_speedup`` = teacher
milliseconds / student milliseconds (network against network; ``photo_speedup`` for the routes).

    python -m benchmarks.student_vs_teacher --model models/face_small --photos lfw/Aaron_Eckhart
"""

import argparse
import glob
import os

import numpy as np

from benchmarks import common
from data_tools import teachers
from export import deploy_formats, format_checks
from export import embedder as embedder_lib

DLIB_CHIP = teachers.DLIB_CHIP_SIZE


def _photo_files(photos, limit):
    if not photos:
        return []
    if os.path.isdir(photos):
        files = sorted(path for pattern in ("*.jpg", "*.jpeg", "*.png")
                       for path in glob.glob(os.path.join(photos, "**", pattern), recursive=True))
    else:
        files = [photos]
    if not files:
        raise SystemExit(f"--photos={photos}: no .jpg/.jpeg/.png files")
    return files[:limit]


def _student_runners(saved_model_dir):
    """``{name: runner}``: the SavedModel's pixels signature and the converted files beside it."""
    runners = {"student_savedmodel": format_checks.SavedModelRunner(saved_model_dir)}
    for name, filename in (("student_onnx", "model.onnx"),
                           ("student_tflite_int8", "model_int8.tflite")):
        path = os.path.join(saved_model_dir, filename)
        if os.path.isfile(path):
            runners[name] = format_checks.runner_for(path)
    return runners


def _photo_route(teacher, model, files):
    """Two callables that each embed the next photo: the teacher's and the student's route."""
    blobs = []
    for path in files:
        with open(path, "rb") as handle:
            blobs.append(handle.read())
    student = embedder_lib.load_saved_model(model)
    transform = student.transform()
    size = transform.image_size if transform is not None and transform.image_size else 112
    position = {"teacher": 0, "student": 0}

    def next_blob(side):
        position[side] = (position[side] + 1) % len(files)
        return position[side]

    def teacher_photo():
        teacher.embed(blobs[next_blob("teacher")])

    def student_photo():
        aligned, _ = embedder_lib.align_photos([files[next_blob("student")]],
                                               image_size=size, fallbacks=[])
        student.embed_bytes(aligned, flip=False)

    return teacher_photo, student_photo, student


def measure(model, photos=None, rounds=5, calls=20, photo_limit=20, seed=0):
    """The figures of one run (see the module docstring)."""
    saved_model_dir = embedder_lib.find_saved_model(model)
    size = deploy_formats.model_image_size(saved_model_dir)
    students = _student_runners(saved_model_dir)
    rng = np.random.RandomState(seed)
    chip = common.face_like_pixels(rng, DLIB_CHIP)
    teacher = teachers.DlibTeacher()  # loaded once: its network alone and its whole route
    recognizer = teacher.recognizer
    pixels = common.face_like_pixels(rng, size).astype(np.float32)[None]
    contenders = {"teacher_network": (lambda: recognizer.compute_face_descriptor(chip), calls)}
    for name, runner in students.items():
        contenders[name] = (lambda runner=runner: runner(pixels), calls)
    files = _photo_files(photos, photo_limit)
    closers = list(students.values())
    if files:
        teacher_photo, student_photo, student = _photo_route(teacher, model, files)
        closers.append(student)
        photo_calls = max(1, min(calls, len(files)))
        contenders["teacher_photo"] = (teacher_photo, photo_calls)
        contenders["student_photo"] = (student_photo, photo_calls)
    for fn, _ in contenders.values():  # warm-up: graph optimisation, first-call allocations
        fn()
    try:
        seconds = common.interleaved(contenders, rounds)
    finally:
        for runner in closers:
            runner.close()
    figures = {"model": saved_model_dir, "input_size": size, "rounds": rounds, "calls": calls,
               "photos": len(files)}
    figures.update({f"{name}_ms": common.rounded(1000.0 * value, 2)
                    for name, value in seconds.items()})
    for name in students:
        figures[f"{name}_speedup"] = common.ratio(seconds["teacher_network"], seconds[name])
    if files:
        figures["photo_speedup"] = common.ratio(seconds["teacher_photo"],
                                                seconds["student_photo"])
    figures["machine"] = common.machine()
    return figures


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="the student's SavedModel (directory)")
    parser.add_argument("--photos", default=None, help="a photo or a folder of photos for the "
                        "whole-route comparison (optional)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20, help="faces per contender per round")
    parser.add_argument("--photo_limit", type=int, default=20)
    args = parser.parse_args(argv)
    common.emit("student_vs_teacher", measure(args.model, args.photos, args.rounds, args.calls,
                                              args.photo_limit))


if __name__ == "__main__":
    main()
