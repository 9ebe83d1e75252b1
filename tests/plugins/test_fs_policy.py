"""The fs path policy against real escapes: `..`, absolute paths, symlinks out of allowed directories,
symlinked parents, copies and moves across the boundary, and recursive deletes next to protected files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from opcode_core.errors import EXECUTION_ERROR, PATH_DENIED, VALIDATION_ERROR, ActionError
from opcode_plugins import fs
from opcode_plugins.fs_policy import DEFAULT_DENY_PATHS, PathPolicy, is_under, resolve

SPECS = {spec.name: spec for spec in fs.opcode_register_actions(settings=None)}


async def run(ctx, name, **params):
    return await SPECS[name].execute(params, ctx)


async def denied(ctx, name, **params) -> ActionError:
    with pytest.raises(ActionError) as info:
        await run(ctx, name, **params)
    assert info.value.code == PATH_DENIED, info.value.message
    return info.value


@pytest.fixture
def area(tmp_path: Path) -> dict[str, Path]:
    """work/ (writable) with ref/ (read-only) and secret/ (denied) inside; outside/ next to it, not granted."""
    work, outside = tmp_path / "work", tmp_path / "outside"
    for d in (work / "ref", work / "secret", work / "sub", outside / "dir"):
        d.mkdir(parents=True)
    (work / "file.txt").write_text("mine")
    (work / "ref" / "manual.txt").write_text("read me")
    (work / "secret" / "key.txt").write_text("hidden")
    (outside / "target.txt").write_text("precious")
    (outside / "dir" / "keep.txt").write_text("keep")
    (work / "to_outside").symlink_to(outside / "target.txt")
    (work / "outdir").symlink_to(outside / "dir")
    return {"work": work, "outside": outside, "root": tmp_path}


@pytest.fixture
def pctx(make_ctx, area):
    """A context whose fs settings grant `work` (writes), with ref read-only and secret denied."""
    work = area["work"]
    return make_ctx(settings={"writable_paths": [str(work)], "read_only_paths": [str(work / "ref")],
                              "deny_paths": [str(work / "secret")]})


def test_is_under_compares_components():
    assert is_under("/tmp/a", "/tmp") and is_under("/tmp", "/tmp") and is_under("/x", "/")
    assert not is_under("/tmpfoo", "/tmp")
    assert not is_under("/tm", "/tmp")


def test_resolve_handles_missing_tails_and_links(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "ln").symlink_to(tmp_path / "real")
    assert resolve(str(tmp_path / "ln" / "new" / "f.txt")) == str((tmp_path / "real").resolve() / "new" / "f.txt")
    assert resolve(str(tmp_path / "real" / ".." / "real")) == str((tmp_path / "real").resolve())


def test_default_policy_and_bad_settings():
    assert PathPolicy.from_settings(None).deny == tuple(resolve(p) for p in DEFAULT_DENY_PATHS)
    assert PathPolicy.from_settings({"deny_paths": []}).deny == ()
    for bad in ({"deny_paths": "/etc"}, {"writable_paths": [1]}, {"read_only_paths": [""]}):
        with pytest.raises(ActionError) as info:
            PathPolicy.from_settings(bad)
        assert info.value.code == EXECUTION_ERROR


async def test_inside_the_policy_everything_works(pctx, area):
    work = area["work"]
    await run(pctx, "fs.write", path=str(work / "sub" / "n.txt"), content="x")
    assert (await run(pctx, "fs.read", path=str(work / "ref" / "manual.txt")))["content"] == "read me"
    await run(pctx, "fs.copy", src=str(work / "ref" / "manual.txt"), dst=str(work / "sub" / "m.txt"))
    await run(pctx, "fs.move", src=str(work / "sub" / "m.txt"), dst=str(work / "m.txt"))
    assert (work / "m.txt").read_text() == "read me"


async def test_dotdot_escape_is_denied(pctx, area):
    escape = str(area["work"] / "sub" / ".." / ".." / "outside" / "target.txt")
    err = await denied(pctx, "fs.read", path=escape)
    assert err.details["resolved"] == str((area["outside"] / "target.txt").resolve())
    await denied(pctx, "fs.write", path=escape, content="pwned")
    assert (area["outside"] / "target.txt").read_text() == "precious"


async def test_absolute_paths_outside_are_denied(pctx, area):
    await denied(pctx, "fs.read", path="/etc/hostname")
    await denied(pctx, "fs.stat", path=str(area["outside"] / "target.txt"))
    await denied(pctx, "fs.list", path=str(area["outside"]))
    await denied(pctx, "fs.delete", path=str(area["outside"] / "target.txt"))
    assert (area["outside"] / "target.txt").exists()


async def test_symlink_to_outside_is_caught(pctx, area):
    link = str(area["work"] / "to_outside")
    await denied(pctx, "fs.read", path=link)
    await denied(pctx, "fs.write", path=link, content="pwned")
    await denied(pctx, "fs.append", path=link, content="pwned")
    await denied(pctx, "fs.copy", src=link, dst=str(area["work"] / "stolen.txt"))
    assert (area["outside"] / "target.txt").read_text() == "precious"
    assert not (area["work"] / "stolen.txt").exists()


async def test_symlink_to_etc_is_caught(pctx, area):
    (area["work"] / "etc").symlink_to("/etc")
    await denied(pctx, "fs.read", path=str(area["work"] / "etc" / "hostname"))
    await denied(pctx, "fs.list", path=str(area["work"] / "etc"))
    planted = Path("/etc/opcode-fs-policy-test-must-not-exist")
    try:
        await denied(pctx, "fs.write", path=str(area["work"] / "etc" / planted.name), content="x")
        assert not planted.exists()
    finally:
        planted.unlink(missing_ok=True)


async def test_symlinked_parent_directory_is_caught(pctx, area):
    via = area["work"] / "outdir"
    await denied(pctx, "fs.write", path=str(via / "new.txt"), content="x")
    await denied(pctx, "fs.write", path=str(via / "a" / "b" / "new.txt"), content="x", create_dirs=True)
    await denied(pctx, "fs.delete", path=str(via / "keep.txt"))
    assert sorted(p.name for p in (area["outside"] / "dir").iterdir()) == ["keep.txt"]


async def test_create_dirs_never_makes_a_directory_outside_writable(make_ctx, area):
    granted = area["work"] / "out" / "inner"
    ctx = make_ctx(settings={"writable_paths": [str(granted)]})
    await denied(ctx, "fs.write", path=str(granted / "f.txt"), content="x", create_dirs=True)
    assert not (area["work"] / "out").exists()


async def test_copy_and_move_across_the_boundary(pctx, area):
    work, outside = area["work"], area["outside"]
    await denied(pctx, "fs.copy", src=str(work / "file.txt"), dst=str(outside / "copied.txt"))
    await denied(pctx, "fs.copy", src=str(work / "file.txt"), dst=str(work / "outdir" / "copied.txt"))
    await denied(pctx, "fs.copy", src=str(work / "file.txt"), dst=str(work / "secret" / "x.txt"))
    await denied(pctx, "fs.copy", src=str(work / "secret" / "key.txt"), dst=str(work / "leak.txt"))
    await denied(pctx, "fs.move", src=str(work / "file.txt"), dst=str(outside / "moved.txt"))
    await denied(pctx, "fs.move", src=str(outside / "target.txt"), dst=str(work / "taken.txt"))
    await denied(pctx, "fs.move", src=str(work / "ref" / "manual.txt"), dst=str(work / "manual.txt"))
    assert (work / "file.txt").read_text() == "mine" and (work / "ref" / "manual.txt").exists()
    assert sorted(p.name for p in outside.iterdir()) == ["dir", "target.txt"]
    assert not (work / "leak.txt").exists() and not (work / "taken.txt").exists()


async def test_copying_a_tree_with_an_outward_link_never_reads_through_it(pctx, area):
    work = area["work"]
    (work / "sub" / "out").symlink_to(area["outside"] / "dir")
    await run(pctx, "fs.copy", src=str(work / "sub"), dst=str(work / "copy"))
    assert (work / "copy" / "out").is_symlink()
    await denied(pctx, "fs.read", path=str(work / "copy" / "out" / "keep.txt"))


async def test_copy_or_move_of_a_tree_holding_a_protected_path_is_denied(pctx, area):
    work = area["work"]
    await denied(pctx, "fs.move", src=str(work), dst=str(area["root"] / "work2"))
    await denied(pctx, "fs.copy", src=str(work), dst=str(work / "sub" / "copy"))
    assert (work / "secret" / "key.txt").exists() and not (work / "sub" / "copy").exists()


async def test_recursive_delete_leaves_what_links_point_to(pctx, area):
    work, outside = area["work"], area["outside"]
    doomed = work / "sub" / "doomed"
    doomed.mkdir()
    (doomed / "file_link").symlink_to(outside / "target.txt")
    (doomed / "dir_link").symlink_to(outside / "dir")
    (doomed / "plain.txt").write_text("bye")
    assert (await run(pctx, "fs.delete", path=str(doomed), recursive=True))["deleted"] is True
    assert not doomed.exists()
    assert (outside / "target.txt").read_text() == "precious"
    assert (outside / "dir" / "keep.txt").read_text() == "keep"


async def test_recursive_delete_of_a_tree_holding_protected_paths_is_denied(pctx, area):
    err = await denied(pctx, "fs.delete", path=str(area["work"]), recursive=True)
    assert err.details["contains"] in {str(area["work"] / "ref"), str(area["work"] / "secret")}
    assert (area["work"] / "file.txt").exists() and (area["work"] / "secret" / "key.txt").exists()


async def test_deleting_a_link_removes_only_the_link(pctx, area):
    await run(pctx, "fs.delete", path=str(area["work"] / "outdir"), recursive=True)
    assert not (area["work"] / "outdir").is_symlink()
    assert (area["outside"] / "dir" / "keep.txt").exists()


async def test_read_only_and_deny_rules(pctx, area):
    work = area["work"]
    await denied(pctx, "fs.write", path=str(work / "ref" / "manual.txt"), content="x")
    await denied(pctx, "fs.delete", path=str(work / "ref" / "manual.txt"))
    await denied(pctx, "fs.read", path=str(work / "secret" / "key.txt"))
    await denied(pctx, "fs.stat", path=str(work / "secret"))
    listing = await run(pctx, "fs.list", path=str(work), recursive=True)
    names = {e["path"][len(str(work)) + 1:] for e in listing["entries"]}
    assert "ref/manual.txt" in names
    assert not any(n.startswith("secret") for n in names)  # left out, not descended into
    assert "outdir/keep.txt" not in names  # links are listed, never followed
    assert (work / "ref" / "manual.txt").read_text() == "read me"


async def test_read_only_alone_allows_no_writes(make_ctx, area):
    ctx = make_ctx(settings={"read_only_paths": [str(area["work"])]})
    assert (await run(ctx, "fs.read", path=str(area["work"] / "file.txt")))["content"] == "mine"
    err = await denied(ctx, "fs.write", path=str(area["work"] / "file.txt"), content="x")
    assert "under read_only_paths" in err.message
    err = await denied(ctx, "fs.write", path=str(area["root"] / "elsewhere.txt"), content="x")
    assert "no writable_paths" in err.message
    assert not (area["root"] / "elsewhere.txt").exists()


async def test_default_policy_denies_proc_sys_dev_and_can_be_replaced(make_ctx, ctx):
    for path in ("/proc/self/environ", "/sys/kernel/hostname", "/dev/null"):
        await denied(ctx, "fs.read", path=path)
    await denied(ctx, "fs.write", path="/dev/null", content="x")
    listing = await run(ctx, "fs.list", path="/")
    assert not {"proc", "sys", "dev"} & {e["name"] for e in listing["entries"]}
    opened = make_ctx(settings={"deny_paths": []})
    out = await run(opened, "fs.read", path="/proc/self/status")
    assert "Pid:" in out["content"]


async def test_nul_bytes_are_refused(ctx, tmp_path):
    with pytest.raises(ActionError) as info:
        await run(ctx, "fs.read", path=f"{tmp_path}/a\0b")
    assert info.value.code == VALIDATION_ERROR


async def test_relative_paths_are_checked_after_resolution(pctx, area, monkeypatch):
    monkeypatch.chdir(area["work"] / "sub")
    await denied(pctx, "fs.read", path="../../outside/target.txt")
    assert (await run(pctx, "fs.read", path="../file.txt"))["content"] == "mine"
    assert os.getcwd() == str(area["work"] / "sub")
