"""The model's files: walked with their links checked, hashed into the artifact digest (in the
background ahead of the imports, or while they upload), and watched for changes.

A leaf: imports only the other leaves (errors, progress); nothing above it.
"""
