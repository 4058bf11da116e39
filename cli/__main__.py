"""`python -m cli`: the `lmtune` command."""

from cli.main import main

main()
