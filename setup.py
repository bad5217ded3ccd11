"""Circle-loss face recognition on tf.estimator.

TensorFlow is deliberately not in install_requires: Ascend images ship their own TF 1.15 (with
npu_bridge) and GPU users bring a CUDA build. Pick an extra (`cpu`, `gpu`) only when pip should
install TensorFlow for you.
"""

import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def read_version():
    with open(os.path.join(HERE, "data_tools", "__init__.py")) as f:
        return re.search(r'__version__ = "([^"]+)"', f.read()).group(1)


def read_readme():
    with open(os.path.join(HERE, "README.md")) as f:
        return f.read()


setup(
    name="circle-face",
    version=read_version(),
    description="Face recognition training with the Circle loss on tf.estimator (CPU, GPU, Ascend)",
    long_description=read_readme(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.7",
    packages=find_packages(include=["cli", "cli.*", "data_tools", "data_tools.*", "model",
                                    "model.*", "evaluation", "evaluation.*", "export", "export.*",
                                    "training", "training.*", "runtime", "runtime.*"]),
    py_modules=["estimator_main"],
    install_requires=[
        "numpy>=1.16",
        "absl-py>=0.9",
        "tqdm>=4.40",
        "Pillow>=6.2",
        "matplotlib>=3.0",
    ],
    extras_require={
        "cpu": ["tensorflow-cpu==2.15.1"],
        "gpu": ["tensorflow[and-cuda]==2.15.1"],
        # export.convert: ONNX export and the ONNX Runtime checks (TFLite needs TF 2's tf.lite)
        "onnx": ["tf2onnx==1.17.0", "onnx==1.17.0", "onnxruntime==1.22.1"],
        # Face detection for raw photos (python -m data_tools.alignment.align): TensorFlow 2,
        # Python 3.10+.
        "align": ["mtcnn==1.0.0"],
        # Distillation teacher (make_tfrecords.py --teacher=dlib): dlib's ResNet face descriptor
        # (prebuilt wheels, no compiler) and its CC0 weights.
        "teacher": ["dlib-bin==20.0.1.post1", "face-recognition-models==0.3.0"],
        # The face-recognition service (python -m export.serve, circle-serve).
        "serve": ["fastapi==0.165.0", "uvicorn==0.55.0", "python-multipart==0.0.34"],
        # FAISS search for large galleries in the service (numpy's exact matmul without it).
        "faiss": ["faiss-cpu==1.15.1"],
        "test": ["pytest>=6", "pytest-timeout", "hypothesis", "ruff", "vermin",
                 "scikit-image; python_version >= '3.11'", "httpx", "selenium"],
    },
    entry_points={
        "console_scripts": [
            "circle-make-tfrecords=data_tools.make_tfrecords:run",
            "circle-make-pairs=data_tools.make_pairs:run",
            "circle-align=data_tools.alignment.align:run",
            "circle-make-bin=data_tools.insightface.make_bin:run",
            "circle-synthetic-faces=data_tools.synthetic.make_faces:run",
            "circle-train=estimator_main:run",
            "circle-embed=export.embed:run",
            "circle-convert=export.convert:run",
            "circle-quality=export.quality:run",
            "circle-serve=export.serve:run",
            "circle-lfw-holdout=data_tools.lfw_holdout:run",
            "circle-lfw-identification=data_tools.lfw_identification:run",
            "circle-gallery=export.gallery:run",
            "circle-identification=export.identification:run",
            "circle-ijb=export.ijb:run",
            "circle-compare-reports=evaluation.compare_reports:run",
        ],
    },
    classifiers=[
        "License :: OSI Approved :: Apache Software License",
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
