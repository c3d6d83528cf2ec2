"""The measured value computed from a file of labels and scores (``compute``): the file read once
and hashed (``file``), its readers (CSV, JSON Lines: ``readers``), the cells (``cells``), the
statistics (``statistics``) and the table of metrics they compute (``recipes``).

An adapter of files: imports the domain (the metric catalogue) and the leaves; never another
adapter, the core, the commands or a face.
"""
