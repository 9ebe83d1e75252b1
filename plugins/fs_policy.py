"""The fs plugin's path policy (deny, read-only and writable lists, checked on resolved paths) and the
tree walking and copying that never follow a symlink, so nothing outside a checked tree is touched.

Settings (`plugins.settings.fs`), all optional:

- `deny_paths`: never read, listed or written. Default `["/proc", "/sys", "/dev"]`: process environments
  (where secrets live), kernel knobs and device files are not workflow data, and a device can stream
  forever. Giving the key replaces that default (list them again to keep them; `[]` denies nothing).
- `read_only_paths`: may be read and listed, never written (this wins over `writable_paths`).
- `writable_paths`: may be read and written.
- `max_read_bytes` (default 10 MB) and `max_list_entries` (default 10,000) are read by the actions.

With neither `read_only_paths` nor `writable_paths` set, everything outside `deny_paths` may be read and
written (the original's permissive default). Once either is set the policy is an allow-list, as upstream:
reads need a path under one of the two lists, writes a path under `writable_paths` and not under
`read_only_paths`. Every path is resolved (`..`, symlinks, including those of the nearest existing parent
of a path that does not exist yet) before it is compared, and so are the listed paths themselves.
The check runs just before the operation, which then uses the resolved path and never follows a symlink
in the last component; a concurrent process that swaps a directory for a symlink in between is outside
what a path check can stop (a mount namespace or a container can).
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from opcode_core import ActionError
from opcode_core.errors import CONFLICT, EXECUTION_ERROR, PATH_DENIED, VALIDATION_ERROR

DEFAULT_DENY_PATHS = ("/proc", "/sys", "/dev")
READ, WRITE = "read", "write"


def resolve(path: str) -> str:
    """The absolute path with `..` and every symlink resolved, also when the last parts do not exist yet."""
    if "\0" in path:
        raise ActionError(f"path {path!r} contains a NUL byte", code=VALIDATION_ERROR)
    # Non-strict realpath resolves the longest existing prefix and appends the rest as written.
    return os.path.realpath(os.path.abspath(path))


def resolve_entry(path: str) -> str:
    """The resolved path of a directory entry itself: its parent resolved, its own name kept.

    Deleting, moving or stat-ing a symlink acts on the link, so the link's own location is what is checked.
    """
    if "\0" in path:
        raise ActionError(f"path {path!r} contains a NUL byte", code=VALIDATION_ERROR)
    absolute = os.path.abspath(path)
    parent, name = os.path.split(absolute)
    if not name:  # the root directory
        return absolute
    return os.path.join(resolve(parent), name)


def is_under(path: str, base: str) -> bool:
    """Whether a resolved path is `base` or inside it (by components: /tmpfoo is not under /tmp)."""
    return path == base or path.startswith(base if base.endswith(os.sep) else base + os.sep)


def _path_list(settings: dict[str, Any], key: str, default: Iterable[str] = ()) -> tuple[str, ...]:
    value = settings.get(key)
    if value is None:
        value = list(default)
    if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
        # Fail closed: a policy we cannot read must not become "allow everything".
        raise ActionError(f"fs plugin setting {key!r} must be a list of paths, not {value!r}", code=EXECUTION_ERROR)
    return tuple(resolve(os.path.expanduser(p)) for p in value)


@dataclass(frozen=True)
class PathPolicy:
    """Resolved deny, read-only and writable path lists; `check` raises PATH_DENIED."""

    deny: tuple[str, ...] = DEFAULT_DENY_PATHS
    read_only: tuple[str, ...] = ()
    writable: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: dict[str, Any] | None) -> PathPolicy:
        """Build the policy from the fs plugin's settings block."""
        settings = settings or {}
        return cls(
            deny=_path_list(settings, "deny_paths", DEFAULT_DENY_PATHS),
            read_only=_path_list(settings, "read_only_paths"),
            writable=_path_list(settings, "writable_paths"),
        )

    @property
    def allow_list(self) -> bool:
        """Whether reads and writes need an explicit grant."""
        return bool(self.read_only or self.writable)

    def problem(self, resolved: str, access: str) -> str | None:
        """Why access to an already resolved path is refused, or None when it is allowed."""
        for base in self.deny:
            if is_under(resolved, base):
                return f"it is under deny_paths entry {base}"
        if access == WRITE:
            for base in self.read_only:
                if is_under(resolved, base):
                    return f"it is under read_only_paths entry {base}"
            if self.allow_list and not any(is_under(resolved, base) for base in self.writable):
                return "it is not under any writable_paths entry" if self.writable else "no writable_paths are set"
        elif self.allow_list and not any(is_under(resolved, b) for b in (*self.read_only, *self.writable)):
            return "it is not under any read_only_paths or writable_paths entry"
        return None

    def check(self, given: str, resolved: str, access: str) -> str:
        """Return `resolved` when access is allowed; raise PATH_DENIED naming the rule otherwise."""
        why = self.problem(resolved, access)
        if why is None:
            return resolved
        shown = given if resolved == os.path.abspath(given) else f"{given} (resolved to {resolved})"
        raise ActionError(f"{access} access to {shown} is denied: {why}", code=PATH_DENIED,
                          details={"path": given, "resolved": resolved, "access": access})

    def target(self, given: str, access: str) -> str:
        """Resolve a path whose target is used (read, written through) and check it."""
        return self.check(given, resolve(given), access)

    def entry(self, given: str, access: str) -> str:
        """Resolve a directory entry (the link itself, not what it points to) and check it."""
        return self.check(given, resolve_entry(given), access)

    def check_tree(self, given: str, root: str, access: str) -> None:
        """Check every entry under a resolved directory that an operation will walk.

        A walk that never follows symlinks only meets entries physically under `root`. Those share the
        root's grant, so the only entries that can be refused are those under a deny (or, for writes,
        read-only) path that itself lies inside the tree: one that exists there refuses the whole operation.
        """
        self.check(given, root, access)
        inner = self.deny + (self.read_only if access == WRITE else ())
        for base in inner:
            if base != root and is_under(base, root) and os.path.lexists(base):
                raise ActionError(
                    f"{access} access to {given} is denied: it contains {base}, which is protected",
                    code=PATH_DENIED, details={"path": given, "resolved": root, "access": access, "contains": base},
                )

    def missing_dirs(self, given: str, directory: str) -> list[str]:
        """The directories `create_dirs` would make for a resolved directory, each checked for writing."""
        missing: list[str] = []
        current = directory
        while not os.path.lexists(current):
            missing.append(current)
            parent = os.path.dirname(current)
            if parent == current:
                break
            current = parent
        for path in missing:
            self.check(given, path, WRITE)
        return missing[::-1]


def walk_entries(root: str, max_depth: int | None,
                 allowed: Callable[[str], bool] | None = None) -> Iterator[tuple[str, os.stat_result, bool]]:
    """Yield (relative path, lstat, is a symlink) under a directory in sorted pre-order, never through a symlink.

    Only entries physically inside `root` are met; `allowed(path)` false leaves an entry (and what is below
    it) out without even a stat.
    """

    def sorted_entries(directory: str) -> Iterator[os.DirEntry[str]]:
        with os.scandir(directory) as it:
            return iter(sorted(it, key=lambda e: e.name))

    # An explicit stack: a deep tree must not hit the recursion limit.
    stack: list[tuple[Iterator[os.DirEntry[str]], str]] = [(sorted_entries(root), "")]
    while stack:
        entries, prefix = stack[-1]
        entry = next(entries, None)
        if entry is None:
            stack.pop()
            continue
        if allowed is not None and not allowed(entry.path):
            continue
        rel = prefix + entry.name
        st = entry.stat(follow_symlinks=False)
        yield rel, st, entry.is_symlink()
        if stat.S_ISDIR(st.st_mode) and (max_depth is None or len(stack) < max_depth):
            stack.append((sorted_entries(entry.path), rel + "/"))


def pattern_parts(pattern: str | None) -> list[str] | None:
    """Split a list `pattern` into components; one that could name something outside `path` is refused."""
    if not pattern:
        return None
    parts = pattern.split("/")
    if pattern.startswith("/") or ".." in parts or "" in parts:
        raise ActionError(f"pattern {pattern!r} must be relative to `path`, without `..` or empty parts",
                          code=VALIDATION_ERROR)
    return parts


def matches(rel: str, parts: list[str]) -> bool:
    """Glob match as Go's filepath.Match does it: per component, so `*` never crosses a `/`."""
    names = rel.split("/")
    if len(parts) == 1:  # a name pattern, at any depth when recursive (as the original)
        return fnmatchcase(names[-1], parts[0])
    return len(names) == len(parts) and all(fnmatchcase(n, p) for n, p in zip(names, parts, strict=True))


def copy_entry(src: str, dst: str, st: os.stat_result) -> int:
    """Copy one non-directory entry; never opens a symlink at either end."""
    if os.path.islink(dst):
        os.unlink(dst)  # replace the link: writing through it would land where nobody checked
    if stat.S_ISLNK(st.st_mode):
        # Kept as a link: its target is never read here, and every later access to it is checked again.
        os.symlink(os.readlink(src), dst)
        return 0
    if not stat.S_ISREG(st.st_mode):
        raise ActionError(f"cannot copy {src}: not a regular file, directory or symlink", code=VALIDATION_ERROR)
    in_fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(in_fd, "rb") as fin:
        out_fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(out_fd, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1024 * 1024)
            fout.flush()
            os.fchmod(out_fd, stat.S_IMODE(st.st_mode))
            return os.fstat(out_fd).st_size


def copy_tree(src: str, dst: str) -> int:
    """Copy a directory tree (merging into an existing one), keeping symlinks as links; return bytes copied."""
    if os.path.islink(dst):
        raise ActionError(f"cannot copy a directory onto the symlink {dst}", code=CONFLICT)
    os.makedirs(dst, exist_ok=True)
    total = 0
    for rel, st, _ in walk_entries(src, None):
        target = os.path.join(dst, rel)
        if stat.S_ISDIR(st.st_mode):
            if os.path.islink(target):
                raise ActionError(f"cannot copy into {target}: it is a symlink", code=CONFLICT)
            os.makedirs(target, exist_ok=True)
        else:
            total += copy_entry(os.path.join(src, rel), target, st)
    return total


def tree_size(root: str) -> int:
    """Total size of the regular files under a directory."""
    return sum(st.st_size for _, st, _ in walk_entries(root, None) if stat.S_ISREG(st.st_mode))
