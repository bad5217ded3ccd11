"""Face folders to sharded TFRecords, pairs files, the synthetic dataset and tf.data input_fns."""

__version__ = "0.1.0"
