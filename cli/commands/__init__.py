"""The `depnet` subcommands, one module per command group. Each parses its options, calls
the harness (cli/devnet/) or the layers below, and prints; cli/main.py assembles them."""
