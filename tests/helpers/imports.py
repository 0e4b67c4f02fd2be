"""Python code run in a subprocess as if some packages were not installed.

`hiding(...)` returns source to put first in a `python -c` script: a finder at the head of
`sys.meta_path` that answers `ModuleNotFoundError` for the packages hidden, as Python does for a
package that is not installed. `only_installed(...)` describes an image that installs a few packages
(and their dependencies) and copies a few project folders: everything else is hidden.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

_FINDER = """\
import importlib.abc as _abc, sys as _sys

class _HiddenPackages(_abc.MetaPathFinder):
    def __init__(self, hidden, allowed, shared, allowed_below_shared):
        self.hidden, self.allowed = set(hidden), allowed and set(allowed)
        self.shared, self.allowed_below_shared = set(shared), set(allowed_below_shared)

    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in _sys.stdlib_module_names or top.startswith("_sysconfigdata"):  # the latter: sysconfig's
            return None
        hidden = top in self.hidden or (self.allowed is not None and top not in self.allowed)
        if not hidden and top in self.shared and "." in name:
            hidden = ".".join(name.split(".")[:2]) not in self.allowed_below_shared
        if hidden:
            raise ModuleNotFoundError(f"No module named {{name!r}} (hidden by the test)", name=name)
        return None

_sys.meta_path.insert(0, _HiddenPackages({hidden}, {allowed}, {shared}, {below}))
"""


def hiding(
    hidden: Iterable[str] = (),
    *,
    allowed: Iterable[str] | None = None,
    shared: Iterable[str] = (),
    allowed_below_shared: Iterable[str] = (),
) -> str:
    """Source that hides the top-level packages `hidden`, and with `allowed` every one but those (and
    the standard library); within a namespace package in `shared` (e.g. `google`), only the
    subpackages in `allowed_below_shared` (e.g. `google.protobuf`)."""
    return _FINDER.format(
        hidden=json.dumps(sorted(hidden)),
        allowed="None" if allowed is None else json.dumps(sorted(allowed)),
        shared=json.dumps(sorted(shared)),
        below=json.dumps(sorted(allowed_below_shared)),
    )


def requirements_closure(requirements: Iterable[str]) -> set[str]:
    """The distributions `pip install <requirements>` installs: them and their dependencies, as the
    installed metadata declares them (canonical names; extras' dependencies left out)."""
    seen: set[str] = set()
    todo = list(requirements)
    while todo:
        requirement = Requirement(todo.pop())
        name = canonicalize_name(requirement.name)
        if name in seen or (requirement.marker and not requirement.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        try:
            todo.extend(metadata.requires(name) or [])
        except metadata.PackageNotFoundError:
            pass  # not installed here: nothing to follow
    return seen


def _import_names(distribution: metadata.Distribution) -> tuple[set[str], set[str]]:
    """(top-level import names, `top.sub` names) of the files a distribution installed."""
    tops: set[str] = set()
    subs: set[str] = set()
    for file in distribution.files or ():
        parts = file.parts
        if not parts or parts[0] == ".." or parts[0].endswith((".dist-info", ".egg-info", ".pth", ".data")):
            continue
        top = parts[0].split(".")[0]
        if not re.fullmatch(r"[A-Za-z_]\w*", top):
            continue
        tops.add(top)
        if len(parts) > 2:
            subs.add(f"{top}.{parts[1].split('.')[0]}")
    return tops, subs


def only_installed(requirements: Iterable[str], folders: Iterable[str]) -> str:
    """Source that hides every package but the project `folders` and what `pip install
    <requirements>` would install (as installed here)."""
    wanted = requirements_closure(requirements)
    allowed: set[str] = set(folders)
    below: set[str] = set()
    others: set[str] = set()
    for distribution in metadata.distributions():
        name = canonicalize_name(distribution.metadata["Name"] or "")
        tops, subs = _import_names(distribution)
        if name in wanted:
            allowed |= tops
            below |= subs
        else:
            others |= tops
    # A top-level name that other distributions install into as well (the `google` namespace of
    # protobuf and the Google Cloud clients) is allowed only as deep as the wanted ones go.
    shared = (allowed & others) - set(folders)
    return hiding(allowed=allowed, shared=shared, allowed_below_shared=below)
