"""The measured value computed from a file of labels and scores: the readers (CSV, JSON Lines), the
cells, the statistics and the table of metrics they compute.

An adapter of files: imports the domain (the metric catalogue) and the leaves; never another
adapter, the core, the commands or a face.
"""
