"""One settings object, built in one place from flags and action inputs > environment >
``hokusai.yaml`` > defaults: each setting and environment variable declared once, validated once,
with secrets kept out of its repr.

- ``environment``: every variable read, typed, with its doc; ``table``: every setting's ways in,
  default and parser, and the list of sign methods (both pure data, cheap enough for ``--help``);
  ``parsers``: how a raw value becomes a setting's value.
- ``loader``: ``load_settings``, which builds ``Settings`` (``values``) by layering each row of the
  table (``layers``) and leaves to their modules what layering cannot say: ``credentials`` (secrets,
  URLs with user-info, MLflow's HTTP variables in ``mlflow_http``), ``signing`` (the method, the
  key's PEM, the chain), ``provenance`` (git and the CI run). ``config_file`` reads
  ``hokusai.yaml``; ``aliases`` and ``checks`` validate.

A leaf: imports only the other leaves (errors, redaction, safe YAML); never a face, a command, the
registration or an adapter.
"""
