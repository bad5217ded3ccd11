"""Embedding distillation: a term that pulls the student's embedding towards a teacher's.

The teacher's embedding of each training image is stored in the records
(``make_tfrecords.py --teacher``, feature ``teacher_embedding``). The term sits beside the
head's loss, ``loss = head + λ · distillation`` (``--distill_weight=λ``), or replaces it
(``--head=none``: images need no identity label then). When the student's and the teacher's
dimensions differ, a learned linear projection ``P`` [D_student, D_teacher] maps the student's
embedding into the teacher's space first (train-time only: the exported model serves the
student's own embedding). The two terms:

* ``cosine``: ``1 - cos(P s, t)``: the direction only, as verification compares embeddings;
* ``l2``: ``‖P s − t‖² / D_teacher``: the mean squared error of the raw vectors (magnitude too).

With ``teacher_mean`` (``--distill_center``, the default) the teacher's vectors are centred
first: ``t − mean``, the mean of the teacher's embeddings over the training records. A teacher
whose space is not zero-centred puts every face in one cone (dlib's 128-d descriptor: the mean
has norm 1.29 against a typical vector's 1.41, so two random faces have cosine 0.84); matching
the raw direction then teaches the student mostly that shared component, and it contradicts a
margin head, which wants unrelated faces near cosine 0. Centred, two random LFW faces have
cosine 0.00 ± 0.17 under dlib.

Computed in float32 whatever the backbone's precision (the student's embedding is float32 at
the backbone's end, see ``model_fn.embed``).
"""

import collections

import tensorflow.compat.v1 as tf

LOSSES = ("cosine", "l2")
SCOPE = "distillation"
PROJECTION = "projection"
TEACHER_FEATURE = "teacher_embedding"


class DistillationConfig(collections.namedtuple(
        "DistillationConfig", ["weight", "loss", "teacher_dim", "teacher_mean"])):
    """``weight`` λ (0: off, the graph is today's), ``loss`` (one of :data:`LOSSES`), the
    records' ``teacher_dim`` (0 when they hold no teacher) and ``teacher_mean`` (a tuple of
    ``teacher_dim`` floats subtracted from each teacher vector, or None: compared as stored).
    Validated on construction."""

    def __new__(cls, weight=0.0, loss="cosine", teacher_dim=0, teacher_mean=None):
        weight = float(weight)
        if not weight >= 0.0:
            raise ValueError(f"--distill_weight must be >= 0, got {weight}")
        if loss not in LOSSES:
            raise ValueError(f"--distill_loss must be one of {LOSSES}, got {loss!r}")
        teacher_dim = int(teacher_dim or 0)
        if weight > 0 and teacher_dim <= 0:
            raise ValueError(f"--distill_weight={weight:g} needs training records with teacher "
                             "embeddings (make_tfrecords.py --teacher=...)")
        if teacher_mean is not None:
            teacher_mean = tuple(float(v) for v in teacher_mean)
            if len(teacher_mean) != teacher_dim:
                raise ValueError(f"the teacher's mean has {len(teacher_mean)} values, the "
                                 f"records' teacher {teacher_dim}")
        return super().__new__(cls, weight, loss, teacher_dim, teacher_mean)

    @property
    def enabled(self):
        return self.weight > 0


def project(student, teacher_dim):
    """The student's embeddings [B, D] in the teacher's space [B, teacher_dim]: themselves when
    the dimensions agree, else through the learned projection ``distillation/projection``."""
    student_dim = student.shape.as_list()[-1]
    if student_dim == teacher_dim:
        return student
    with tf.variable_scope(SCOPE, reuse=tf.AUTO_REUSE):
        projection = tf.get_variable(
            PROJECTION, [student_dim, teacher_dim], tf.float32,
            initializer=tf.glorot_uniform_initializer())
    return tf.matmul(student, projection)


def per_example_loss(student, teacher, loss="cosine"):
    """The distillation term of each example, float32 [B]; ``student`` already in the teacher's
    space (:func:`project`)."""
    student = tf.cast(student, tf.float32)
    teacher = tf.cast(teacher, tf.float32)
    if loss == "cosine":
        cosine = tf.reduce_sum(tf.nn.l2_normalize(student, axis=1)
                               * tf.nn.l2_normalize(teacher, axis=1), axis=1)
        return 1.0 - cosine
    if loss == "l2":
        return tf.reduce_mean(tf.square(student - teacher), axis=1)
    raise ValueError(f"distillation loss must be one of {LOSSES}, got {loss!r}")


def distillation_loss(student, teacher, config):
    """Mean distillation term of a batch (float32 scalar) and the mean cosine between the
    projected student and the (centred, with ``config.teacher_mean``) teacher (a monitoring
    number)."""
    if teacher is None:
        raise ValueError("distillation needs the feature 'teacher_embedding': train on records "
                         "converted with make_tfrecords.py --teacher")
    projected = project(tf.cast(student, tf.float32), config.teacher_dim)
    teacher = tf.cast(teacher, tf.float32)
    if config.teacher_mean is not None:
        teacher = teacher - tf.constant(config.teacher_mean, tf.float32, name="teacher_mean")
    terms = per_example_loss(projected, teacher, config.loss)
    cosine = tf.reduce_mean(tf.reduce_sum(
        tf.nn.l2_normalize(projected, axis=1) * tf.nn.l2_normalize(teacher, axis=1), axis=1))
    return tf.reduce_mean(terms), cosine
