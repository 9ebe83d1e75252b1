"""Filesystem actions (fs.read, fs.write, fs.append, fs.delete, fs.list, fs.stat, fs.copy, fs.move).

Every path goes through the path policy in `fs_policy` (settings `deny_paths`, `read_only_paths`,
`writable_paths`; see that module), resolved with symlinks, before anything is touched: PATH_DENIED
otherwise. A missing path is NOT_FOUND. Reads are capped by the `max_read_bytes` setting (10 MB).
The blocking work runs in a worker thread so a large copy never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import errno
import json
import os
import shutil
import stat
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from opcode_core import ActionContext, ActionError, ActionSpec, hookimpl
from opcode_core.errors import CONFLICT, EXECUTION_ERROR, NOT_FOUND, PERMISSION_DENIED, VALIDATION_ERROR
from opcode_plugins.fs_policy import (
    READ,
    WRITE,
    PathPolicy,
    copy_entry,
    copy_tree,
    matches,
    pattern_parts,
    tree_size,
    walk_entries,
)

JSON = dict[str, Any]

DEFAULT_MAX_READ_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_LIST_ENTRIES = 10_000
DEFAULT_MODE = 0o644
_BINARY_SNIFF = 8192


def _os_error(exc: OSError, op: str, path: str) -> ActionError:
    """An OSError as an ActionError with the code an agent can act on."""
    reason = exc.strerror or str(exc)
    if isinstance(exc, FileNotFoundError):
        return ActionError(f"{op}: {path} does not exist", code=NOT_FOUND, details={"path": path})
    if isinstance(exc, PermissionError):
        return ActionError(f"{op}: {path}: {reason}", code=PERMISSION_DENIED, details={"path": path})
    if isinstance(exc, FileExistsError) or exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
        return ActionError(f"{op}: {path}: {reason}", code=CONFLICT, details={"path": path})
    if exc.errno == errno.ELOOP:
        # O_NOFOLLOW met a symlink that appeared after the policy check: refuse rather than follow it.
        return ActionError(f"{op}: {path} became a symlink while being opened", code=CONFLICT)
    return ActionError(f"{op}: {path}: {reason}", code=EXECUTION_ERROR, details={"path": path})


def timestamp(seconds: float) -> str:
    """RFC 3339 UTC time, to the second, as the original writes it."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_mode(value: Any) -> int:
    """A file mode from an integer (its numeric value: 420 is 0644) or an octal string ("0644", "0o755")."""
    if isinstance(value, str):
        text = value[2:] if value.lower().startswith("0o") else value
        try:
            value = int(text, 8)
        except ValueError as exc:
            raise ActionError(f"mode {value!r} is not an octal number like \"0644\"", code=VALIDATION_ERROR) from exc
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0o7777:
        raise ActionError(f"mode {value!r} is out of range 0..07777", code=VALIDATION_ERROR)
    return value


def _content_bytes(params: JSON) -> bytes:
    content = params["content"]
    if not isinstance(content, str):
        # The original interpolated everything into strings; a whole-value reference keeps its type here.
        content = json.dumps(content, ensure_ascii=False)
    if params.get("encoding", "text") == "base64":
        try:
            return base64.b64decode("".join(content.split()), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ActionError(f"content is not valid base64: {exc}", code=VALIDATION_ERROR) from exc
    return content.encode()


def _prepare_parent(policy: PathPolicy, given: str, resolved: str, create_dirs: bool, op: str) -> None:
    parent = os.path.dirname(resolved)
    if os.path.isdir(parent):
        return
    if not create_dirs:
        raise ActionError(f"{op}: directory {os.path.dirname(os.path.abspath(given))} does not exist "
                          "(set create_dirs to create it)", code=NOT_FOUND, details={"path": given})
    for directory in policy.missing_dirs(given, parent):
        try:
            os.mkdir(directory, 0o755)
        except FileExistsError:
            pass  # a concurrent step made it
        except OSError as exc:
            raise _os_error(exc, op, directory) from exc


def _info(path: str, st: os.stat_result, *, is_symlink: bool) -> JSON:
    return {
        "path": path,
        "size": st.st_size,
        "modified_at": timestamp(st.st_mtime),
        "is_dir": stat.S_ISDIR(st.st_mode),
        "is_symlink": is_symlink,
        "permissions": f"{stat.S_IMODE(st.st_mode) & 0o777:04o}",
    }


def _read(params: JSON, policy: PathPolicy, settings: JSON) -> JSON:
    given = params["path"]
    path = policy.target(given, READ)
    cap = int(settings.get("max_read_bytes", DEFAULT_MAX_READ_BYTES))
    try:
        # Non-blocking open so a FIFO cannot hang the step before the regular-file check below.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise _os_error(exc, "fs.read", given) from exc
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise ActionError(f"fs.read: {given} is {kind}", code=VALIDATION_ERROR, details={"path": given})
    with os.fdopen(fd, "rb") as f:
        data = f.read(cap + 1)
    if len(data) > cap:
        raise ActionError(f"fs.read: {given} is larger than the {cap}-byte read limit (max_read_bytes)",
                          code=EXECUTION_ERROR, details={"path": given, "size": st.st_size, "max_read_bytes": cap})
    encoding = params.get("encoding", "auto")
    text: str | None = None
    if encoding != "base64" and (encoding == "text" or b"\0" not in data[:_BINARY_SNIFF]):
        try:
            text = data.decode()
        except UnicodeDecodeError as exc:
            if encoding == "text":
                raise ActionError(f"fs.read: {given} is not UTF-8 text; read it with encoding base64 or auto",
                                  code=VALIDATION_ERROR, details={"path": given}) from exc
    if text is None:
        text, encoding = base64.b64encode(data).decode(), "base64"
    else:
        encoding = "text"
    return {"path": os.path.abspath(given), "content": text, "encoding": encoding, "size": len(data)}


def _write(params: JSON, policy: PathPolicy, settings: JSON, *, append: bool = False) -> JSON:
    op = "fs.append" if append else "fs.write"
    given = params["path"]
    path = policy.target(given, WRITE)
    data = _content_bytes(params)
    mode = parse_mode(params.get("mode", DEFAULT_MODE))
    _prepare_parent(policy, given, path, params.get("create_dirs", False), op)
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_APPEND if append else os.O_TRUNC)
    try:
        fd = os.open(path, flags, mode)
        with os.fdopen(fd, "wb") as f:
            if "mode" in params:
                # os.open's mode only applies to a new file and is narrowed by the umask; an explicit mode is meant.
                os.fchmod(fd, mode)
            f.write(data)
            f.flush()
            size = os.fstat(fd).st_size if append else len(data)
    except OSError as exc:
        raise _os_error(exc, op, given) from exc
    return {"path": os.path.abspath(given), "size": size}


def _delete(params: JSON, policy: PathPolicy, settings: JSON) -> JSON:
    given, recursive = params["path"], params.get("recursive", False)
    path = policy.entry(given, WRITE)
    try:
        st = os.lstat(path)
    except FileNotFoundError as exc:
        if recursive:  # as the original's RemoveAll: nothing there is not an error
            return {"path": os.path.abspath(given), "deleted": False}
        raise _os_error(exc, "fs.delete", given) from exc
    try:
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(path)  # a symlink goes, never what it points to
        elif recursive:
            policy.check_tree(given, path, WRITE)
            shutil.rmtree(path)  # never follows symlinks inside the tree
        else:
            os.rmdir(path)
    except OSError as exc:
        if exc.errno == errno.ENOTEMPTY:
            raise ActionError(f"fs.delete: directory {given} is not empty (set recursive to delete it)",
                              code=CONFLICT, details={"path": given}) from exc
        raise _os_error(exc, "fs.delete", given) from exc
    return {"path": os.path.abspath(given), "deleted": True}


def _list(params: JSON, policy: PathPolicy, settings: JSON) -> JSON:
    given, recursive = params["path"], params.get("recursive", False)
    path = policy.target(given, READ)
    parts = pattern_parts(params.get("pattern"))
    if not os.path.isdir(path):
        if os.path.lexists(path):
            raise ActionError(f"fs.list: {given} is not a directory", code=VALIDATION_ERROR, details={"path": given})
        raise ActionError(f"fs.list: {given} does not exist", code=NOT_FOUND, details={"path": given})
    shown = os.path.abspath(given)
    cap = int(settings.get("max_list_entries", DEFAULT_MAX_LIST_ENTRIES))
    depth = None if recursive else len(parts or [""])
    entries: list[JSON] = []
    truncated = False
    try:
        # Entries under a denied (or, with an allow-list, ungranted) path inside the directory are left out.
        for rel, st, linked in walk_entries(path, depth, lambda p: policy.problem(p, READ) is None):
            if parts is None or matches(rel, parts):
                if len(entries) == cap:
                    truncated = True
                    break
                row = _info(os.path.join(shown, rel), st, is_symlink=linked)
                entries.append({"name": os.path.basename(rel), **row})
    except OSError as exc:
        raise _os_error(exc, "fs.list", given) from exc
    return {"path": shown, "entries": entries, "truncated": truncated}


def _stat(params: JSON, policy: PathPolicy, settings: JSON) -> JSON:
    given = params["path"]
    path = policy.target(given, READ)
    try:
        st = os.stat(path)
        linked = os.path.islink(os.path.abspath(given))
    except OSError as exc:
        raise _os_error(exc, "fs.stat", given) from exc
    return _info(os.path.abspath(given), st, is_symlink=linked)


def _copy(params: JSON, policy: PathPolicy, settings: JSON, *, move: bool = False) -> JSON:
    op = "fs.move" if move else "fs.copy"
    src_given, dst_given = params["src"], params["dst"]
    # A move takes the entry itself (a symlink moves as a link); a copy reads through it and writes through
    # a destination symlink, like cp, to its checked target.
    src = policy.entry(src_given, WRITE) if move else policy.target(src_given, READ)
    dst = policy.entry(dst_given, WRITE) if move else policy.target(dst_given, WRITE)
    try:
        st = os.lstat(src)
    except OSError as exc:
        raise _os_error(exc, op, src_given) from exc
    is_dir = stat.S_ISDIR(st.st_mode)
    if is_dir:
        policy.check_tree(src_given, src, WRITE if move else READ)
        if dst == src or dst.startswith(src + os.sep):
            raise ActionError(f"{op}: {dst_given} is {src_given} or inside it", code=VALIDATION_ERROR)
    if os.path.isdir(dst) and not os.path.islink(dst):
        policy.check_tree(dst_given, dst, WRITE)
    _prepare_parent(policy, dst_given, dst, params.get("create_dirs", False), op)
    try:
        if move:
            try:
                os.rename(src, dst)
                size = tree_size(dst) if is_dir else st.st_size
                return {"src": os.path.abspath(src_given), "dst": os.path.abspath(dst_given), "size": size,
                        "is_dir": is_dir}
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
        # A copy, or a move to another filesystem: copy, then (moving) remove the source.
        size = copy_tree(src, dst) if is_dir else copy_entry(src, dst, st)
        if move and is_dir:
            shutil.rmtree(src)
        elif move:
            os.unlink(src)
    except OSError as exc:
        raise _os_error(exc, op, src_given) from exc
    return {"src": os.path.abspath(src_given), "dst": os.path.abspath(dst_given), "size": size, "is_dir": is_dir}


def _action(work: Callable[..., JSON], **options: Any) -> Callable[[JSON, ActionContext], Any]:
    async def execute(params: JSON, ctx: ActionContext) -> JSON:
        settings = ctx.settings or {}
        return await asyncio.to_thread(work, params, PathPolicy.from_settings(settings), settings, **options)

    return execute


_POLICY = " Checked against the fs plugin's deny_paths / read_only_paths / writable_paths after resolving symlinks."
_PATH = {"type": "string", "minLength": 1,
         "description": "File or directory path; relative paths are taken from the server's working directory."
         + _POLICY}
_CONTENT = {"description": "What to write: a string (text, or base64 with `encoding`); any other JSON value is "
            "written as its JSON text."}
_CONTENT_ENCODING = {"type": "string", "enum": ["text", "base64"], "default": "text",
                     "description": "text: `content` is written as UTF-8; base64: it is decoded first (binary)."}
_CREATE_DIRS = {"type": "boolean", "default": False,
                "description": "Create missing parent directories (each must be writable under the policy)."}
_RECURSIVE = {"type": "boolean", "default": False}
_SRC = {**_PATH, "description": "Source path." + _POLICY}
_DST = {**_PATH, "description": "Destination path (an existing file is replaced)." + _POLICY}


def _params(required: list[str], **properties: JSON) -> JSON:
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def _out(**properties: JSON) -> JSON:
    return {"type": "object", "properties": properties}


_S, _I, _B = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}
_STAT_OUT = _out(path=_S, size=_I, modified_at=_S, is_dir=_B, is_symlink=_B, permissions=_S)
_MOVED_OUT = _out(src=_S, dst=_S, size=_I, is_dir=_B)

# name: (work, options, description, params schema, output schema)
_ACTIONS: dict[str, tuple[Callable[..., JSON], JSON, str, JSON, JSON]] = {
    "fs.read": (_read, {}, "Read a file; output `{path, content, encoding, size}`. encoding auto (default) gives "
                "text for UTF-8 files and base64 for binary ones; files over max_read_bytes (10 MB) fail.",
                _params(["path"], path=_PATH, encoding={
                    "type": "string", "enum": ["text", "base64", "auto"], "default": "auto",
                    "description": "text (UTF-8, else it fails), base64, or auto: text unless the file is binary."}),
                _out(path=_S, content=_S, encoding=_S, size=_I)),
    "fs.write": (_write, {}, "Create or overwrite a file; output `{path, size}` (bytes written).",
                 _params(["path", "content"], path=_PATH, content=_CONTENT, encoding=_CONTENT_ENCODING,
                         create_dirs=_CREATE_DIRS, mode={
                             "type": ["integer", "string"], "pattern": "^(0[oO]?)?[0-7]{1,4}$", "minimum": 0,
                             "maximum": 0o7777, "default": "0644",
                             "description": "Permissions: an octal string (\"0644\", \"0o600\") or the numeric "
                             "value as an integer (420 is 0644, as in the original). When given it is applied "
                             "exactly, also to an existing file; otherwise new files get 0644 less the umask."}),
                 _out(path=_S, size=_I)),
    "fs.append": (_write, {"append": True}, "Append to a file, creating it when missing; output `{path, size}` "
                  "(the file's size after).",
                  _params(["path", "content"], path=_PATH, content=_CONTENT, encoding=_CONTENT_ENCODING,
                          create_dirs=_CREATE_DIRS),
                  _out(path=_S, size=_I)),
    "fs.delete": (_delete, {}, "Delete a file, a symlink (never its target) or an empty directory; with recursive, "
                  "a directory tree (symlinks inside are removed, not followed). Output `{path, deleted}`; a "
                  "missing path is NOT_FOUND, or `deleted: false` when recursive.",
                  _params(["path"], path=_PATH, recursive={
                      **_RECURSIVE, "description": "Delete a directory and everything in it."}),
                  _out(path=_S, deleted=_B)),
    "fs.list": (_list, {}, "List a directory; output `{path, entries: [{name, path, size, modified_at, is_dir, "
                "is_symlink, permissions}], truncated}`, sorted by path. Symlinks are listed, not followed.",
                _params(["path"], path=_PATH, pattern={
                    "type": "string", "minLength": 1,
                    "description": "Glob (`*`, `?`, `[a-z]`) on entry names, e.g. `*.csv`; with `/` it matches "
                    "the relative path component by component (`*/report.txt`)."},
                    recursive={**_RECURSIVE, "description": "Include subdirectories' entries (the pattern then "
                               "matches names at any depth)."}),
                _out(path=_S, entries={"type": "array", "items": _STAT_OUT}, truncated=_B)),
    "fs.stat": (_stat, {}, "Metadata of a file or directory (symlinks followed); output `{path, size, modified_at, "
                "is_dir, is_symlink, permissions}`. A missing path is NOT_FOUND.",
                _params(["path"], path=_PATH), _STAT_OUT),
    "fs.copy": (_copy, {}, "Copy a file or a directory tree (merged into an existing directory; symlinks inside are "
                "copied as links); output `{src, dst, size, is_dir}`.",
                _params(["src", "dst"], src=_SRC, dst=_DST, create_dirs=_CREATE_DIRS), _MOVED_OUT),
    "fs.move": (_copy, {"move": True}, "Move or rename a file, symlink or directory (across filesystems by copy and "
                "delete); both ends must be writable. Output `{src, dst, size, is_dir}`.",
                _params(["src", "dst"], src=_SRC, dst=_DST, create_dirs=_CREATE_DIRS), _MOVED_OUT),
}


@hookimpl
def opcode_register_actions(settings: Any) -> list[ActionSpec]:
    """Provide fs.read, fs.write, fs.append, fs.delete, fs.list, fs.stat, fs.copy and fs.move."""
    return [
        ActionSpec(name, description, params, _action(work, **options), output_schema=output)
        for name, (work, options, description, params, output) in _ACTIONS.items()
    ]
