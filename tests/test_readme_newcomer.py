"""What a newcomer reads in the README before the first own-data command (issue 32)."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        return fh.read()


def test_the_own_data_section_says_to_use_the_venv_before_its_first_command():
    text = readme()
    section = text[text.index("## Your own data"):]
    first_command = section.index("```")
    intro = section[:first_command]
    assert ". .venv/bin/activate" in intro and ".venv/bin/python" in intro, intro
    # And the environment it names is the one the two commands build.
    assert re.search(r"make demo.*creates \.venv", text)
