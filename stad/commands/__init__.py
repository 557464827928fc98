"""Subcommands of the ``stad`` CLI: each module has ``add_parser(subparsers)`` and ``main(args)``."""
