"""insightface's dataset formats without mxnet: the ``.rec``/``.idx`` reader and writer
(``recordio``), the safe ``.bin`` reader and writer (``bin_format``), their conversion to
records (``convert``), and ``.bin`` files made from a pairs.txt (``bin_from_pairs``, command
line ``make_bin``: ``python -m data_tools.insightface.make_bin``)."""
