"""Job commands (filled in by the jobs issue)."""

COMMANDS: list = []
