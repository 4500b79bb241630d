"""``nodeflow assignments ...``: a shared server's class competitions from its shell (an admin's
tool): add one with its hidden test set, list, close, remove."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from nodeflow.users.command import root_arg


def add_parser(sub: argparse._SubParsersAction, default_workspace: Callable[[], Path]) -> None:
    """The ``assignments`` command and its subcommands, on the main parser's ``sub``."""
    p = sub.add_parser("assignments", help="class competitions of a multi-user server: add, list, close, remove")
    root_arg(p)
    p.set_defaults(func=cmd_list, default_workspace=default_workspace)
    commands = p.add_subparsers(dest="assignments_command")
    q = commands.add_parser("add", help="a new assignment with a hidden test set (a zip of class folders)")
    q.add_argument("title")
    q.add_argument("--test", required=True, metavar="ZIP", help="the hidden test set: a zip of class folders")
    q.add_argument("--deadline", metavar="WHEN", help="ISO 8601 date and time (UTC unless it names its zone); "
                   "before it the board scores the public half of the test set, after it the private half")
    q.add_argument("--per-day", type=int, default=5, metavar="N", help="hand-ins per student per day (default 5)")
    root_arg(q, default=argparse.SUPPRESS)
    q.set_defaults(func=cmd_add)
    q = commands.add_parser("list", help="the assignments")
    root_arg(q, default=argparse.SUPPRESS)
    q.set_defaults(func=cmd_list)
    for name, func, what in (("close", cmd_close, "take no more hand-ins (the board stays)"),
                             ("remove", cmd_remove, "remove an assignment, its test set and its hand-ins")):
        q = commands.add_parser(name, help=what)
        q.add_argument("id")
        root_arg(q, default=argparse.SUPPRESS)
        q.set_defaults(func=func)


def _store(args: argparse.Namespace, with_catalogue: bool = False):
    from nodeflow.assignments import Assignments
    from nodeflow.node import Registry

    root = Path(args.workspace) if args.workspace else args.default_workspace()
    return Assignments(root, Registry.discover() if with_catalogue else None)


def cmd_add(args: argparse.Namespace) -> int:
    from nodeflow.assignments import parse_deadline

    source = Path(args.test)
    if not source.is_file():
        raise ValueError(f"--test {args.test}: no such file")
    store = _store(args, with_catalogue=True)
    made = store.create_from_zip(args.title, source, parse_deadline(args.deadline), args.per_day)
    deadline = f", deadline {made.to_json(store.clock())['deadline']}" if made.deadline is not None else ""
    print(f"added assignment {made.id} '{made.title}': {made.images} hidden images in {len(made.classes)} classes"
          f"{deadline}, {made.per_day} hand-ins per day")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    store = _store(args)
    found = store.list()
    if not found:
        print("no assignments yet (add one: nodeflow assignments add TITLE --test ZIP)")
        return 0
    now = store.clock()
    print(f"{'ID':<12}  {'STATE':<6}  {'DEADLINE':<25}  {'IMAGES':>6}  HANDINS  TITLE")
    for a in found:
        shown = a.to_json(now)
        state = "closed" if a.closed else "open"
        print(f"{a.id:<12}  {state:<6}  {shown['deadline'] or '-':<25}  {a.images:>6}  "
              f"{len(store.handins(a.id)):>7}  {a.title}")
    return 0


def cmd_close(args: argparse.Namespace) -> int:
    made = _store(args).close_assignment(args.id)
    print(f"closed assignment {made.id} '{made.title}': it takes no more hand-ins")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    _store(args).remove(args.id)
    print(f"removed assignment {args.id}, its test set and its hand-ins")
    return 0
