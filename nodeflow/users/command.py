"""``nodeflow users ...``: manage the accounts of a multi-user server from its shell.

A password is read from standard input when that is not a terminal (one line), so scripts can
add a class of users; on a terminal it is asked for twice, without echo.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from collections.abc import Callable
from pathlib import Path

from nodeflow.users.accounts import AccountError, Accounts
from nodeflow.users.projects import Projects


def read_password(prompt: str = "password") -> str:
    if not sys.stdin.isatty():
        line = sys.stdin.readline()
        if not line:
            raise AccountError("no password on standard input (send it as one line)")
        return line.rstrip("\r\n")
    first = getpass.getpass(f"{prompt}: ")
    if getpass.getpass(f"{prompt} again: ") != first:
        raise AccountError("the two passwords differ; nothing was changed")
    return first


def root_arg(p: argparse.ArgumentParser, **kw) -> None:
    """``--workspace ROOT``: the multi-user server's folder (the commands that manage a server share it)."""
    p.add_argument("--workspace", metavar="ROOT", help="the server's folder, as given to "
                   "'nodeflow serve --users --workspace ROOT' (default: as for run)", **kw)


def add_parser(sub: argparse._SubParsersAction, default_workspace: Callable[[], Path]) -> None:
    """The ``users`` command and its subcommands, on the main parser's ``sub``."""
    p = sub.add_parser("users", help="accounts of a multi-user server (serve --users): add, list, passwd, remove")
    root_arg(p)
    p.set_defaults(func=cmd_list, default_workspace=default_workspace)
    users = p.add_subparsers(dest="users_command")
    q = users.add_parser("add", help="add a user (password from standard input, or asked for on a terminal)")
    q.add_argument("name")
    q.add_argument("--admin", action="store_true", help="may open any project read-only and publish class templates")
    root_arg(q, default=argparse.SUPPRESS)
    q.set_defaults(func=cmd_add)
    q = users.add_parser("list", help="the users, their role and projects")
    root_arg(q, default=argparse.SUPPRESS)
    q.set_defaults(func=cmd_list)
    q = users.add_parser("passwd", help="set a user's password (ends their sign-ins)")
    q.add_argument("name")
    root_arg(q, default=argparse.SUPPRESS)
    q.set_defaults(func=cmd_passwd)
    q = users.add_parser("remove", help="remove a user; their files are moved to ROOT/removed/")
    q.add_argument("name")
    root_arg(q, default=argparse.SUPPRESS)
    q.set_defaults(func=cmd_remove)


def _accounts(args: argparse.Namespace) -> Accounts:
    return Accounts(Path(args.workspace) if args.workspace else args.default_workspace())


def cmd_add(args: argparse.Namespace) -> int:
    accounts = _accounts(args)
    if accounts.get(args.name) is not None:  # before asking for a password that would be thrown away
        raise AccountError(f"user '{args.name}' already exists")
    user = accounts.add(args.name, read_password(), admin=args.admin)
    print(f"added {'admin ' if user.admin else ''}{user.name} in {accounts.root}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    accounts = _accounts(args)
    counts = Projects(accounts).count_by_owner()
    users = accounts.list()
    if not users:
        print(f"no users in {accounts.root} yet (add one: nodeflow users add NAME --workspace {accounts.root})")
        return 0
    print(f"{'NAME':<32}  {'ROLE':<5}  {'ADDED':<10}  PROJECTS")
    for user in users:
        added = time.strftime("%Y-%m-%d", time.localtime(user.created))
        print(f"{user.name:<32}  {'admin' if user.admin else 'user':<5}  {added:<10}  {counts.get(user.name, 0)}")
    return 0


def cmd_passwd(args: argparse.Namespace) -> int:
    accounts = _accounts(args)
    accounts.require(args.name)
    accounts.set_password(args.name, read_password(f"new password for {args.name}"))
    print(f"password of {args.name} changed; their sign-ins have ended")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    accounts = _accounts(args)
    aside = accounts.remove(args.name)
    print(f"removed {args.name}" + (f"; their files are in {aside}" if aside else ""))
    return 0
