"""Raw photos onto the 5-point template: the similarity transform and landmark files
(``face_alignment``), the optional detector adapter (``face_detector``), the folder pipeline
(``raw_faces``) and its command line (``align``: ``python -m data_tools.alignment.align``)."""
