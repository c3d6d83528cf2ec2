"""The Hokusai site database: the schema and its migrations, the unit of work, tokens and their
claims (with the process identities that own them), and the event outbox with its relay.

An adapter: imports the domain (statuses, the event, the sink protocol) and the leaves; never
another adapter (mlflow, events, signing, predictions), the core, the commands or a face.
"""
