"""The project's own synthetic faces: identities, nuisances and the renderer (``faces``), the
dataset on disk with its pairs.txt (``dataset``) and the command line (``make_faces``:
``python -m data_tools.synthetic``)."""
