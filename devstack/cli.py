"""Command line of the local stack: ``demo`` (the batch and its report), ``chaos`` (many
orders with injected faults, and the invariant report), ``compare`` (each containment
switched off against the hardened stack), ``serve`` and ``token`` (a fresh Id token from the
running ``serve``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ops.local_map import DEFAULT_PATH


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="orders-local", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="push a realistic batch of orders through the local stack")
    from devstack.chaos import add_arguments

    add_arguments(
        sub.add_parser("chaos", help="many orders with injected faults, then the invariants")
    )
    sub.add_parser(
        "compare",
        help="each containment switched off against the hardened stack (see --help)",
        add_help=False,
    )
    serve = sub.add_parser("serve", help="keep the local stack up with the API on 127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    token = sub.add_parser(
        "token",
        help="a fresh Cognito Id token for a customer of the running `serve` (on stdout)",
    )
    token.add_argument("username", help="e.g. alice@example.com; created on first use")
    token.add_argument(
        "--map",
        type=Path,
        default=DEFAULT_PATH,
        help="the running stack's resource map (default: .devstack/resources.json)",
    )
    args, rest = parser.parse_known_args(argv)
    if args.command == "compare":
        from devstack.compare import main as compare

        return compare(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "demo":
        from devstack.demo import main as demo

        return demo()
    if args.command == "chaos":
        from devstack.chaos import main as chaos

        return chaos(args)
    if args.command == "token":
        from devstack.serve import token_main

        return token_main(args.username, map_path=args.map)
    from devstack.serve import main as serve_main

    return serve_main(port=args.port)
