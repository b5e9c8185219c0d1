"""`python -m updock`: the same as the `updock` command."""

from updock.cli import main

main()
