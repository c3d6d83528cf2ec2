"""The model's files: walked with their links checked (``walk``), listed and watched for changes
(``files``), hashed into the artifact digest (``hashing``; in the background ahead of the imports,
``background``; or while they upload, ``streamed``).

A leaf: imports only the leaf ``errors``; nothing above it.
"""
