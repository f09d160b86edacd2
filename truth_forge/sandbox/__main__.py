"""`python -m truth_forge.sandbox --port N`: the sandbox without the project CLI."""

from truth_forge.sandbox.cli import main

main()
