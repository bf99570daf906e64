"""``python -m cli``: the `depnet` command, as `depnet up` starts validator processes."""

from cli.main import main

main(prog_name="depnet")
