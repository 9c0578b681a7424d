"""``edge-agent service``: start the agent at login, with the service manager of the OS.

Linux gets a systemd user unit, macOS a launchd agent, Windows a scheduled task that
runs at logon. Each runs ``edge-agent http --config FILE``: every setting, the relay
token included, comes from that file, which must be private (0600 on Linux and macOS),
so the token is never on a command line, in the environment or in the service
definition. The definitions are built from data (:mod:`.spec`) into a list of steps
(:mod:`.steps`: files to write or remove, commands to run), one module per service
manager (:mod:`.systemd`, :mod:`.launchd`, :mod:`.schtasks`); only :mod:`.steps` touches
the machine, so the other platforms are tested by the files and commands they produce.
"""
