"""The event sinks: Google Pub/Sub (CloudEvents binary mode) and a signed webhook (structured mode,
Standard Webhooks); the database sink is the outbox row itself.

An adapter: imports the domain (the event, the sink protocol) and the leaves; never another adapter,
the core, the commands or a face.
"""
