"""Old path of ``python -m evaluation.compare_reports`` (kept so that existing commands run)."""
from evaluation.compare_reports import run  # noqa: F401

if __name__ == "__main__": run()  # noqa: E701
