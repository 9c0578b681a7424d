"""The agent's session with the Molecule platform (a remote workspace).

Modules: :mod:`.client` (the HTTP API), :mod:`.session` (register, heartbeat, state),
:mod:`.tokens` (the credential cache), :mod:`.card` (the agent card), :mod:`.dedup`
and :mod:`.inbound` (Target wrappers), :mod:`.child` (the supervised agent process).
Errors: :mod:`.errors`.
"""
