"""The registration's vocabulary, shared by the core and every adapter: model naming and version
numbers, token ids, statuses, the tags a registration writes, the metric catalogue and gate, the
``token_ready_for_deploy`` event and the sink protocol.

Pure values and rules. Imports only the leaves (errors, safe YAML); never an adapter (mlflow, db,
events, signing, predictions), the core, the commands or a face.
"""
