"""The ``stad`` command line: a parser per subcommand, each calling library functions.

Every subcommand lives in ``stad/commands/<name>.py`` and exposes two functions:

* ``add_parser(subparsers) -> argparse.ArgumentParser`` registers its arguments, and
* ``main(args) -> int`` does the work (heavy imports such as torch go inside ``main``).

Bad input (``StadError``, ``ValueError``, missing files) is reported as one line on stderr with
exit status 2; ``stad --debug ...`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from stad import __version__

# Subcommand modules under stad.commands, in the order `stad --help` lists them.
COMMANDS: list[str] = [
    "eval",
    "synth",
    "demo",
    "convert",
    "validate",
    "extract_frames",
    "flow",
    "tubelets_to_frames",
    "train",
    "test",
    "detect",
    "proposals",
    "stream",
    "profile",
    "export",
]


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line plus a pointer to --help."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(2)


def get_args_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="stad",
        description="Spatio-temporal action detection: data sets, detectors, tube linking and evaluation.",
        epilog="Run 'stad COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"stad {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        importlib.import_module(f"stad.commands.{name}").add_parser(subparsers)
    return parser


def parse_command_line(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse ``argv``; ``key=value`` config overrides may come anywhere after the config, also after options
    (``stad test CONFIG --checkpoint CKPT eval.subset=train``), and keep their order."""
    parser = get_args_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        overrides = [token for token in extra if "=" in token and not token.startswith("-")]
        if overrides != extra or not hasattr(args, "overrides"):
            prog = f"stad {args.command}" if getattr(args, "command", None) else "stad"
            sys.stderr.write(f"{prog}: error: unrecognized arguments: {' '.join(extra)} (see '{prog} --help')\n")
            raise SystemExit(2)
        args.overrides = [*args.overrides, *overrides]
    return args


def main(argv: list[str] | None = None) -> int:
    parser = get_args_parser()
    args = parse_command_line(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        sys.stderr.write("stad: interrupted\n")
        return 130
    except BrokenPipeError:  # e.g. `stad validate ... | head`
        sys.stderr.close()
        return 141
    except (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as err:
        if args.debug:
            raise
        sys.stderr.write(f"stad {args.command}: error: {err}\n")
        return 2


def run() -> None:
    """Console-script entry point."""
    raise SystemExit(main())


if __name__ == "__main__":
    run()
