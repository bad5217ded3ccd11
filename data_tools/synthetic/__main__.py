"""``python -m data_tools.synthetic``: the command line of ``data_tools.synthetic.make_faces``."""
from data_tools.synthetic.make_faces import run

run()
