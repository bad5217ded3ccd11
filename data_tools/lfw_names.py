"""Rename the photos of identity folders to LFW's names, ``<name>/<name>_NNNN.<ext>``, so that a
pairs file can refer to them (``python -m data_tools.make_pairs --rename``).

Own photos come named by the camera (``IMG_1001.jpg``, ``DSC_0042.JPG``, ``photo (2).png``); a
pairs file names images by number only. Files already named the LFW way keep their number; the
others, in name order, get the next free numbers. Only image files directly in an identity
folder are renamed (nested folders stay as they are: ``make_pairs`` names them). Each rename is
logged as ``old<TAB>new`` (relative paths) in ``<input_dir>/lfw_renames.tsv`` before the next
one, so an interrupted run is resumed by running it again, and undone by reading the log
backwards.
"""

import os
import re

from data_tools import image_files

LOG_NAME = "lfw_renames.tsv"


def rename_to_lfw(input_dir):
    """Rename every image file directly in ``input_dir``'s identity folders to LFW's names;
    returns the number renamed. Identity folders with whitespace in their name are skipped
    (a pairs file cannot name them: ``make_pairs`` says so)."""
    renamed = 0
    log_path = os.path.join(input_dir, LOG_NAME)
    with open(log_path, "a", encoding="utf-8") as log:
        for name in sorted(os.listdir(input_dir)):
            folder = os.path.join(input_dir, name)
            if name.startswith(".") or not os.path.isdir(folder) or len(name.split()) != 1:
                continue
            pattern = re.compile(re.escape(name) + r"_(\d{4,})$")
            files = sorted(f for f in os.listdir(folder)
                           if not f.startswith(".") and image_files.is_image_filename(f)
                           and os.path.isfile(os.path.join(folder, f)))
            used, others = set(), []
            for filename in files:
                match = pattern.match(os.path.splitext(filename)[0])
                if match and f"{int(match.group(1)):04d}" == match.group(1) \
                        and int(match.group(1)) >= 1:
                    used.add(int(match.group(1)))
                else:
                    others.append(filename)
            number = 0
            for filename in others:
                number += 1
                while number in used:
                    number += 1
                extension = os.path.splitext(filename)[1].lower()
                new = f"{name}_{number:04d}{extension}"
                log.write(f"{name}/{filename}\t{name}/{new}\n")
                log.flush()
                os.rename(os.path.join(folder, filename), os.path.join(folder, new))
                used.add(number)
                renamed += 1
    return renamed
