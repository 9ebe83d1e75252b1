"""fs.* actions on a real temporary directory tree: reads, writes, listings, copies and moves."""

from __future__ import annotations

import base64
import errno
import glob
import json
import os
from pathlib import Path

import pytest

from opcode_core.errors import CONFLICT, NOT_FOUND, VALIDATION_ERROR, ActionError
from opcode_plugins import fs

SPECS = {spec.name: spec for spec in fs.opcode_register_actions(settings=None)}
EXAMPLES = Path(__file__).resolve().parents[3] / "shared" / "upstream-examples"


async def run(ctx, name, **params):
    return await SPECS[name].execute(params, ctx)


async def fails(ctx, name, code, **params):
    with pytest.raises(ActionError) as info:
        await run(ctx, name, **params)
    assert info.value.code == code, info.value.message
    return info.value


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """data.txt, bin.dat, sub/inner.txt, sub/deep/x.csv, link -> data.txt."""
    (tmp_path / "data.txt").write_text("hello\n")
    (tmp_path / "bin.dat").write_bytes(b"\x00\x01\xff binary")
    (tmp_path / "sub" / "deep").mkdir(parents=True)
    (tmp_path / "sub" / "inner.txt").write_text("inner")
    (tmp_path / "sub" / "deep" / "x.csv").write_text("a,b\n")
    (tmp_path / "link").symlink_to(tmp_path / "data.txt")
    return tmp_path


def test_entry_point_provides_the_actions(via_entry_point):
    module, specs = via_entry_point("fs")
    assert module is fs
    assert sorted(s.name for s in specs) == sorted(
        ["fs.read", "fs.write", "fs.append", "fs.delete", "fs.list", "fs.stat", "fs.copy", "fs.move"])


def test_schemas_are_complete(well_formed):
    well_formed(list(SPECS.values()))


def _example_steps() -> list[tuple[str, dict]]:
    found = []

    def walk(node):
        if isinstance(node, dict):
            if str(node.get("action", "")).startswith("fs."):
                found.append((node["action"], node.get("params", {})))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for path in sorted(glob.glob(str(EXAMPLES / "*.json"))):
        walk(json.loads(Path(path).read_text()))
    return found


@pytest.mark.skipif(not EXAMPLES.is_dir(), reason="../shared/upstream-examples is absent")
def test_upstream_examples_params_are_accepted(schema_check):
    steps = _example_steps()
    assert len(steps) >= 10
    for name, params in steps:
        assert schema_check(SPECS[name], params) == [], (name, params)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("fs.read", {"path": "a", "encoding": "auto"}),
        ("fs.write", {"path": "a", "content": "x", "create_dirs": True, "mode": 420}),
        ("fs.write", {"path": "a", "content": {"any": "json"}, "mode": "0o600", "encoding": "text"}),
        ("fs.write", {"path": "a", "content": "AAE=", "encoding": "base64", "mode": "0755"}),
        ("fs.append", {"path": "a", "content": "x", "create_dirs": False}),
        ("fs.delete", {"path": "a", "recursive": True}),
        ("fs.list", {"path": ".", "pattern": "*.csv", "recursive": True}),
        ("fs.stat", {"path": "a"}),
        ("fs.copy", {"src": "a", "dst": "b", "create_dirs": True}),
        ("fs.move", {"src": "a", "dst": "b"}),
    ],
)
def test_valid_params(schema_check, name, params):
    assert schema_check(SPECS[name], params) == []


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("fs.read", {"path": 5}),
        ("fs.read", {"path": "a", "encoding": "utf16"}),
        ("fs.read", {}),
        ("fs.write", {"path": "a"}),
        ("fs.write", {"path": "a", "content": "x", "mode": "rw-r--r--"}),
        ("fs.write", {"path": "a", "content": "x", "mode": 0o10000}),
        ("fs.write", {"path": "a", "content": "x", "create_dirs": "yes"}),
        ("fs.append", {"path": ["a"], "content": "x"}),
        ("fs.delete", {"path": "a", "recursive": 1}),
        ("fs.list", {"path": "a", "pattern": 3}),
        ("fs.stat", {"path": ""}),
        ("fs.copy", {"src": "a"}),
        ("fs.copy", {"src": "a", "dst": None}),
        ("fs.move", {"src": "a", "dst": "b", "overwrite": True}),
    ],
)
def test_invalid_params(schema_check, name, params):
    assert schema_check(SPECS[name], params) != []


async def test_read_text(ctx, tree):
    out = await run(ctx, "fs.read", path=str(tree / "data.txt"))
    assert out == {"path": str(tree / "data.txt"), "content": "hello\n", "encoding": "text", "size": 6}


async def test_read_auto_gives_base64_for_binary(ctx, tree):
    out = await run(ctx, "fs.read", path=str(tree / "bin.dat"))
    assert out["encoding"] == "base64"
    assert base64.b64decode(out["content"]) == b"\x00\x01\xff binary"
    (tree / "latin1.txt").write_bytes("café".encode("latin-1"))  # no NUL, but not UTF-8 either
    assert (await run(ctx, "fs.read", path=str(tree / "latin1.txt")))["encoding"] == "base64"


async def test_read_explicit_encodings(ctx, tree):
    out = await run(ctx, "fs.read", path=str(tree / "data.txt"), encoding="base64")
    assert (out["content"], out["encoding"]) == ("aGVsbG8K", "base64")
    err = await fails(ctx, "fs.read", VALIDATION_ERROR, path=str(tree / "bin.dat"), encoding="text")
    assert "base64" in err.message


async def test_read_missing_directory_and_cap(make_ctx, ctx, tree):
    await fails(ctx, "fs.read", NOT_FOUND, path=str(tree / "nope.txt"))
    await fails(ctx, "fs.read", VALIDATION_ERROR, path=str(tree / "sub"))
    small = make_ctx(settings={"max_read_bytes": 5})
    err = await fails(small, "fs.read", "EXECUTION_ERROR", path=str(tree / "data.txt"))
    assert err.details["max_read_bytes"] == 5
    assert (await run(make_ctx(settings={"max_read_bytes": 6}), "fs.read", path=str(tree / "data.txt")))["size"] == 6


async def test_read_follows_a_symlink_and_relative_paths(ctx, tree, monkeypatch):
    assert (await run(ctx, "fs.read", path=str(tree / "link")))["content"] == "hello\n"
    monkeypatch.chdir(tree / "sub")
    out = await run(ctx, "fs.read", path="../data.txt")
    assert out["path"] == str(tree / "data.txt")


async def test_write_creates_and_overwrites(ctx, tree):
    target = tree / "new.txt"
    assert await run(ctx, "fs.write", path=str(target), content="één") == {"path": str(target), "size": 5}
    await run(ctx, "fs.write", path=str(target), content="x")
    assert target.read_text() == "x"


async def test_write_binary_and_json_content(ctx, tree):
    await run(ctx, "fs.write", path=str(tree / "b.bin"), content=base64.b64encode(b"\x00\xff").decode(),
              encoding="base64")
    assert (tree / "b.bin").read_bytes() == b"\x00\xff"
    await run(ctx, "fs.write", path=str(tree / "j.json"), content={"a": [1, 2]})
    assert json.loads((tree / "j.json").read_text()) == {"a": [1, 2]}
    await fails(ctx, "fs.write", VALIDATION_ERROR, path=str(tree / "x"), content="*not base64*", encoding="base64")


@pytest.mark.parametrize(("mode", "expected"), [("0600", 0o600), ("0o640", 0o640), (0o755, 0o755), ("777", 0o777)])
async def test_write_mode_is_applied_exactly(ctx, tree, mode, expected):
    old = os.umask(0o077)
    try:
        await run(ctx, "fs.write", path=str(tree / "m"), content="x", mode=mode)
    finally:
        os.umask(old)
    assert (tree / "m").stat().st_mode & 0o7777 == expected


async def test_write_needs_create_dirs_for_a_missing_parent(ctx, tree):
    target = tree / "a" / "b" / "c.txt"
    await fails(ctx, "fs.write", NOT_FOUND, path=str(target), content="x")
    await run(ctx, "fs.write", path=str(target), content="x", create_dirs=True)
    assert target.read_text() == "x"


async def test_append_creates_then_appends(ctx, tree):
    target = tree / "log.txt"
    assert (await run(ctx, "fs.append", path=str(target), content="one\n"))["size"] == 4
    out = await run(ctx, "fs.append", path=str(target), content="two\n")
    assert (out["size"], target.read_text()) == (8, "one\ntwo\n")


async def test_delete_file_link_and_directories(ctx, tree):
    assert await run(ctx, "fs.delete", path=str(tree / "link")) == {"path": str(tree / "link"), "deleted": True}
    assert not (tree / "link").is_symlink()
    assert (tree / "data.txt").read_text() == "hello\n"  # the link went, not its target
    await fails(ctx, "fs.delete", CONFLICT, path=str(tree / "sub"))
    assert (tree / "sub" / "inner.txt").exists()
    await run(ctx, "fs.delete", path=str(tree / "sub"), recursive=True)
    assert not (tree / "sub").exists()
    (tree / "empty").mkdir()
    await run(ctx, "fs.delete", path=str(tree / "empty"))
    assert not (tree / "empty").exists()


async def test_delete_missing(ctx, tree):
    await fails(ctx, "fs.delete", NOT_FOUND, path=str(tree / "nope"))
    assert (await run(ctx, "fs.delete", path=str(tree / "nope"), recursive=True))["deleted"] is False


async def test_list_directory(ctx, tree):
    out = await run(ctx, "fs.list", path=str(tree))
    assert [e["name"] for e in out["entries"]] == ["bin.dat", "data.txt", "link", "sub"]
    by_name = {e["name"]: e for e in out["entries"]}
    assert by_name["data.txt"]["size"] == 6 and by_name["data.txt"]["path"] == str(tree / "data.txt")
    assert by_name["sub"]["is_dir"] is True
    assert by_name["link"]["is_symlink"] is True and by_name["link"]["is_dir"] is False
    assert by_name["data.txt"]["modified_at"].endswith("Z")
    assert out["truncated"] is False


async def test_list_patterns(ctx, tree):
    names = await run(ctx, "fs.list", path=str(tree), pattern="*.txt")
    assert [e["name"] for e in names["entries"]] == ["data.txt"]
    deep = await run(ctx, "fs.list", path=str(tree), pattern="*.csv", recursive=True)
    assert [e["path"] for e in deep["entries"]] == [str(tree / "sub" / "deep" / "x.csv")]
    nested = await run(ctx, "fs.list", path=str(tree), pattern="sub/*.txt")
    assert [e["path"] for e in nested["entries"]] == [str(tree / "sub" / "inner.txt")]
    everything = await run(ctx, "fs.list", path=str(tree), recursive=True)
    assert [e["path"][len(str(tree)) + 1:] for e in everything["entries"]] == [
        "bin.dat", "data.txt", "link", "sub", "sub/deep", "sub/deep/x.csv", "sub/inner.txt"]
    await fails(ctx, "fs.list", VALIDATION_ERROR, path=str(tree / "sub"), pattern="../*")


async def test_list_cap_and_errors(make_ctx, ctx, tree):
    out = await run(make_ctx(settings={"max_list_entries": 2}), "fs.list", path=str(tree))
    assert (len(out["entries"]), out["truncated"]) == (2, True)
    await fails(ctx, "fs.list", NOT_FOUND, path=str(tree / "nope"))
    await fails(ctx, "fs.list", VALIDATION_ERROR, path=str(tree / "data.txt"))


async def test_stat(ctx, tree):
    (tree / "data.txt").chmod(0o640)
    out = await run(ctx, "fs.stat", path=str(tree / "data.txt"))
    assert out["size"] == 6 and out["is_dir"] is False and out["permissions"] == "0640"
    assert out["is_symlink"] is False
    linked = await run(ctx, "fs.stat", path=str(tree / "link"))
    assert linked["is_symlink"] is True and linked["size"] == 6
    assert (await run(ctx, "fs.stat", path=str(tree / "sub")))["is_dir"] is True
    await fails(ctx, "fs.stat", NOT_FOUND, path=str(tree / "nope"))


async def test_copy_file_keeps_mode(ctx, tree):
    (tree / "data.txt").chmod(0o600)
    out = await run(ctx, "fs.copy", src=str(tree / "data.txt"), dst=str(tree / "copy.txt"))
    assert out == {"src": str(tree / "data.txt"), "dst": str(tree / "copy.txt"), "size": 6, "is_dir": False}
    assert (tree / "copy.txt").read_text() == "hello\n"
    assert (tree / "copy.txt").stat().st_mode & 0o777 == 0o600


async def test_copy_tree_keeps_links_as_links_and_merges(ctx, tree):
    (tree / "sub" / "rel").symlink_to("inner.txt")
    (tree / "dst" / "deep").mkdir(parents=True)
    (tree / "dst" / "keep.txt").write_text("kept")
    out = await run(ctx, "fs.copy", src=str(tree / "sub"), dst=str(tree / "dst"))
    assert out["is_dir"] is True and out["size"] == len("inner") + len("a,b\n")
    assert (tree / "dst" / "deep" / "x.csv").read_text() == "a,b\n"
    assert os.readlink(tree / "dst" / "rel") == "inner.txt"
    assert (tree / "dst" / "keep.txt").read_text() == "kept"
    await fails(ctx, "fs.copy", VALIDATION_ERROR, src=str(tree / "sub"), dst=str(tree / "sub" / "again"))


async def test_copy_needs_create_dirs(ctx, tree):
    await fails(ctx, "fs.copy", NOT_FOUND, src=str(tree / "data.txt"), dst=str(tree / "x" / "y.txt"))
    await run(ctx, "fs.copy", src=str(tree / "data.txt"), dst=str(tree / "x" / "y.txt"), create_dirs=True)
    assert (tree / "x" / "y.txt").read_text() == "hello\n"
    await fails(ctx, "fs.copy", NOT_FOUND, src=str(tree / "nope"), dst=str(tree / "z"))


async def test_move_file_directory_and_link(ctx, tree):
    out = await run(ctx, "fs.move", src=str(tree / "data.txt"), dst=str(tree / "moved.txt"))
    assert out == {"src": str(tree / "data.txt"), "dst": str(tree / "moved.txt"), "size": 6, "is_dir": False}
    assert not (tree / "data.txt").exists() and (tree / "moved.txt").read_text() == "hello\n"
    await run(ctx, "fs.move", src=str(tree / "sub"), dst=str(tree / "new" / "sub"), create_dirs=True)
    assert (tree / "new" / "sub" / "deep" / "x.csv").exists()
    (tree / "ln").symlink_to("moved.txt")
    await run(ctx, "fs.move", src=str(tree / "ln"), dst=str(tree / "ln2"))
    assert os.readlink(tree / "ln2") == "moved.txt"


async def test_move_across_filesystems_copies_then_deletes(ctx, tree, monkeypatch):
    def cross_device(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "rename", cross_device)
    out = await run(ctx, "fs.move", src=str(tree / "sub"), dst=str(tree / "elsewhere"))
    assert out["size"] == len("inner") + len("a,b\n")
    assert not (tree / "sub").exists()
    assert (tree / "elsewhere" / "deep" / "x.csv").read_text() == "a,b\n"
