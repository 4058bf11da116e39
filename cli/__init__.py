"""The `lmtune` command: the composition root (the CLI, the terminal client and `lmtune up`). Nothing imports it."""
