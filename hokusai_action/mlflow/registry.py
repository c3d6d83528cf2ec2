"""The MLflow registry the commands build and hand to the core (``registration.register.Registry``)
and to ``model verify``: one object, made of this package's parts.

- ``connection``: the client, bounded retries, and MLflow's failures as the line a user sees;
- ``lookups``: what is read and never written (a version by digest, a run's metric, an alias);
- ``registering``: the upload and the version's creation, resuming an earlier attempt;
- ``versions``: tags, aliases and signature bundles written on a version that exists;
- ``downloads``: a version's files and its signature bundles, fetched for ``model verify``.
"""

from __future__ import annotations

from hokusai_action.mlflow.downloads import MlflowDownloads
from hokusai_action.mlflow.lookups import MlflowLookups
from hokusai_action.mlflow.registering import MlflowRegistering
from hokusai_action.mlflow.versions import MlflowVersionWrites


class MlflowRegistry(MlflowRegistering, MlflowLookups, MlflowVersionWrites, MlflowDownloads):
    """The MLflow side of a registration. Built by the CLI/entrypoint, handed to the core.

    Its parts are mixins over one ``MlflowConnection``, not objects it forwards to: every part uses
    the same client, timeout, experiment and ``unreachable_hint`` (which ``doctor`` sets on this
    object), and the core and ``model verify`` call their methods on this object by name.
    """
