"""`python -m asd ...`: the `asd` command, for an environment whose scripts folder is not on PATH."""

from asd.cli import main

main(prog_name="asd")
