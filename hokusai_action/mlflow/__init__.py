"""Everything that talks to MLflow: reachability, lookups, the upload (its own streamed HTTP PUT and
MLflow's artifact repositories), the version's registration, transfer limits, the embedded store's
migration, the fallbacks for older MLflow clients, and the downloads ``model verify`` reads.

An adapter: imports the domain and the leaves; never another adapter (db, events, signing,
predictions), the core, the commands or a face.
"""
