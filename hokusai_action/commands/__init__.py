"""What each command does, apart from how its arguments arrive: the CLI and the GitHub Action call
these, once a command actually runs. ``wiring`` builds each adapter from the settings and hands it
to the core.

Imports the core, the adapters (to build them), the domain and the leaves; never a face.
"""
