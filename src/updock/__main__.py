"""`python -m updock`: the same as the `updock` command."""

from updock.entry import main

main()
