"""The composition layer: validated params, the estimator built from model/, export/ and
data_tools, mode dispatch, evaluation reports and the run record. ``estimator_main.py`` is its
command line; this package defines no flags."""
