"""Command line of the local stack: ``demo`` (the batch and its report), ``chaos`` (many
orders with injected faults, and the invariant report) and ``serve``."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="orders-local", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="push a realistic batch of orders through the local stack")
    from devstack.chaos import add_arguments

    add_arguments(
        sub.add_parser("chaos", help="many orders with injected faults, then the invariants")
    )
    serve = sub.add_parser("serve", help="keep the local stack up with the API on 127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    if args.command == "demo":
        from devstack.demo import main as demo

        return demo()
    if args.command == "chaos":
        from devstack.chaos import main as chaos

        return chaos(args)
    from devstack.serve import main as serve_main

    return serve_main(port=args.port)
