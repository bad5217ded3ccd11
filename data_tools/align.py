"""``python -m data_tools.align``: moved to ``data_tools.alignment.align`` (kept for old
commands)."""
from data_tools.alignment.align import run

if __name__ == "__main__":
    run()
