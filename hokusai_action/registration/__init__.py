"""The registration and its verification: the phases that turn a validated request into one
registered, announced model, exactly once, and the check the deploy side runs on it.

``register`` reads as the phases; ``request``, ``claim``, ``hashing``, ``event``, ``statement``,
``rerun`` and ``result`` hold them; ``parts`` says what the core is handed; ``verify`` and
``verify_report`` are `model verify`.

Handed its parts (the MLflow registry, the site database, the event sinks, a signer); it builds no
client. Imports the domain, the leaves and the adapters' types it is handed; never the commands or a
face (cli, entrypoint).
"""
