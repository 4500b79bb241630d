"""Who may call what: each method that a page, the socket or the HTTP API can reach declares once,
where it is defined, whether it reads, writes (changes a project: its graph, files, runs) or works
(starts work on the machine: a run, an estimate, a drawing). Everything else derives from that
declaration: the read-only view a viewer gets (:class:`ReadOnlyView`), the socket's commands and the
HTTP routes, which call these methods. A method that declares nothing is refused to a viewer (deny by
default), and a test lists every public method of the declared classes to find one that forgot.

In the manner of JupyterHub's ``@needs_scope``: the rule sits on the thing it guards.
"""

from __future__ import annotations

import copy
import inspect
import typing
from collections.abc import Callable
from enum import Enum
from pathlib import PurePath
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
ATTRIBUTE = "__nodeflow_access__"


class Access(str, Enum):
    READ = "read"
    WRITE = "write"
    WORK = "work"


def _declare(access: Access) -> Callable[[F], F]:
    def mark(function: F) -> F:
        target: Any = function
        if isinstance(function, property):
            target = function.fget
        elif isinstance(function, (classmethod, staticmethod)):
            target = function.__func__
        setattr(target, ATTRIBUTE, access)
        return function
    return mark


#: the method only reads (a viewer may call it)
reads = _declare(Access.READ)
#: the method changes the project (owners only)
writes = _declare(Access.WRITE)
#: the method starts work on the machine (owners only)
works = _declare(Access.WORK)


def guarded(cls: type) -> type:
    """Mark a class whose public methods must all declare their access; a viewer reaching an
    instance of it (as an attribute of another) gets a :class:`ReadOnlyView` of it."""
    setattr(cls, ATTRIBUTE, "class")
    return cls


def is_guarded(value: Any) -> bool:
    return is_guarded_class(type(value))


def is_guarded_class(cls: type) -> bool:
    return getattr(cls, ATTRIBUTE, None) == "class"


def unwrapped(obj: Any) -> Any:
    """The object behind a read-only view (or ``obj`` itself): only to build what its holder is
    handed beside it, through :func:`beside`."""
    return object.__getattribute__(obj, "_target") if isinstance(obj, ReadOnlyView) else obj


def beside(holder: Any, other: Any) -> Any:
    """``other`` as the holder of ``holder`` may use it: whole beside a whole object, read-only (for
    the same reason) beside a read-only view, so a project's parts are handed out as its session is."""
    if isinstance(holder, ReadOnlyView):
        return ReadOnlyView(other, object.__getattribute__(holder, "_reason"))
    return other


def allows(obj: Any, name: str) -> bool:
    """Whether ``obj`` (a guarded object, or a read-only view of one) lets its holder call ``name``:
    always for the object itself, only what ``reads`` through a view. A dotted name (``document.edits``)
    is a method of a part the object hands out, as its holder is handed it."""
    if "." in name:
        part, rest = name.split(".", 1)
        return allows(getattr(obj, part), rest)
    if isinstance(obj, ReadOnlyView):
        return access_of(type(object.__getattribute__(obj, "_target")), name) is Access.READ
    return True


def access_of(owner: type | Any, name: str) -> Access | None:
    """The declared access of ``owner.name`` (a method or a property), None when it declares none. A
    dotted name (``document.edits``) follows the parts a class declares it holds (``document:
    Document`` in its body)."""
    cls = owner if isinstance(owner, type) else type(owner)
    if "." in name:
        part, rest = name.split(".", 1)
        held = typing.get_type_hints(cls).get(part)
        return access_of(held, rest) if isinstance(held, type) and is_guarded_class(held) else None
    found = inspect.getattr_static(cls, name, None)
    if isinstance(found, (staticmethod, classmethod)):
        found = found.__func__
    if isinstance(found, property):
        found = found.fget
    return getattr(found, ATTRIBUTE, None)


def undeclared(cls: type) -> list[str]:
    """The public methods and properties of ``cls`` that declare no access (the test's list)."""
    missing = []
    for name in dir(cls):
        if name.startswith("_"):
            continue
        found = inspect.getattr_static(cls, name)
        if isinstance(found, (staticmethod, classmethod)):
            found = found.__func__
        if isinstance(found, property):
            found = found.fget
        if callable(found) and getattr(found, ATTRIBUTE, None) is None:
            missing.append(name)
    return missing


class Refused(Exception):
    """A change or work asked through a read-only view; nothing was done. (Not an EditError or an
    OSError: a handler that answers those with 422 or a notice must not swallow a refusal, which the
    HTTP API answers 403.)"""


#: values a viewer may be handed as they are: nothing in them can change the project
_IMMUTABLE = (str, bytes, int, float, bool, type(None), PurePath, frozenset)


class ReadOnlyView:
    """What a viewer sees of a guarded object: the methods and properties declared ``reads``, and its
    plain attributes (a copy of anything mutable); guarded collaborators come wrapped the same way.
    Anything else raises :class:`Refused` naming ``reason``."""

    __slots__ = ("_target", "_reason")

    def __init__(self, target: Any, reason: str) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_reason", reason)

    def _refuse(self, name: str) -> Refused:
        return Refused(f"read-only: {self._reason}; nothing was changed ('{name}' changes the project or "
                       "starts work)")

    def __getattr__(self, name: str) -> Any:
        target = self._target
        cls = type(target)
        declared = inspect.getattr_static(cls, name, None)
        if name.startswith("_"):
            raise self._refuse(name)
        if declared is not None and (callable(declared) or isinstance(declared, (property, staticmethod,
                                                                                   classmethod))):
            if access_of(cls, name) is not Access.READ:
                raise self._refuse(name)
            value = getattr(target, name)
            if callable(value) and not isinstance(declared, property):
                return value
            return self._shown(value)
        return self._shown(getattr(target, name))

    def _shown(self, value: Any) -> Any:
        if isinstance(value, _IMMUTABLE):
            return value
        if isinstance(value, tuple) and all(isinstance(v, _IMMUTABLE) for v in value):
            return value
        if is_guarded(value):
            return ReadOnlyView(value, self._reason)
        if callable(value) or inspect.ismodule(value):
            raise self._refuse(getattr(value, "__name__", "?"))
        return copy.deepcopy(value)

    def _forward(self, name: str) -> Any:
        """A container protocol method of the target, when it declares it ``reads``."""
        if access_of(type(self._target), name) is not Access.READ:
            raise self._refuse(name)
        return getattr(self._target, name)

    def __contains__(self, item: Any) -> bool:
        return self._forward("__contains__")(item)

    def __iter__(self):
        return iter(self._forward("__iter__")())

    def __len__(self) -> int:
        return self._forward("__len__")()

    def __setattr__(self, name: str, value: Any) -> None:
        raise self._refuse(name)

    def __delattr__(self, name: str) -> None:
        raise self._refuse(name)

    def __repr__(self) -> str:
        return f"ReadOnlyView({self._target!r})"


__all__ = ["Access", "ReadOnlyView", "Refused", "access_of", "allows", "beside", "guarded", "is_guarded", "is_guarded_class", "reads",
           "undeclared", "unwrapped", "works", "writes"]
