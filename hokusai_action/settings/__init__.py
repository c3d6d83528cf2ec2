"""One settings object, built in one place from flags and action inputs > environment >
``hokusai.yaml`` > defaults: each setting and environment variable declared once, validated once,
with secrets kept out of its repr.

A leaf: imports only the other leaves (errors, redaction, safe YAML); nothing above it.
"""
