"""What each command does, apart from how its arguments arrive: the CLI and the GitHub Action call
these, once a command actually runs. One module per command group (``register``, ``verify``,
``token``, ``events``, ``doctor``, ``db_upgrade``); ``wiring`` builds each adapter from the settings,
hands it to the core and closes it again.

Imports the core, the adapters (to build them), the domain and the leaves; never a face.
"""
