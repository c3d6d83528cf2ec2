"""OpenSSF model signing: the model's files and the registration statement signed as Sigstore
bundles (key, certificate or keyless), verified again by ``model verify``, and the identities
Google's and GitHub's clients would use.

An adapter: imports the domain and the leaves; never another adapter, the core, the commands or a face.
"""
