"""``python -m data_tools.make_bin``: moved to ``data_tools.insightface.make_bin`` (kept for old
commands)."""
from data_tools.insightface.make_bin import run

if __name__ == "__main__":
    run()
