"""The parts of weft.labruntimes that need no daemon: the image's root file system and tarball, and
the check for what `weft lab up --runtimes` needs."""
import os
import shutil
import subprocess
import tarfile

import pytest

from weft import lab as weftlab
from weft import labruntimes


def test_rootfs_has_busybox_and_one_symlink_per_applet(tmp_path):
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"\x7fELF stand-in")
    rootfs = labruntimes.build_rootfs(tmp_path / "rootfs", busybox, ["sh", "httpd", "wget", "ping", "nc", "busybox"])
    assert (rootfs / "bin" / "busybox").read_bytes() == b"\x7fELF stand-in"
    assert os.stat(rootfs / "bin" / "busybox").st_mode & 0o777 == 0o755
    assert sorted(p.name for p in (rootfs / "bin").iterdir()) == ["busybox", "httpd", "nc", "ping", "sh", "wget"]
    for applet in ("sh", "httpd", "wget", "ping", "nc"):
        assert os.readlink(rootfs / "bin" / applet) == "busybox"
    assert (rootfs / "etc" / "passwd").read_text().startswith("root:x:0:0:")
    assert os.stat(rootfs / "tmp").st_mode & 0o7777 == 0o1777
    assert (rootfs / "var" / "www" / "index.html").read_text() == "hello from weft/busybox\n"
    assert "WORKDIR /var/www" in labruntimes.IMAGE_CHANGES  # where httpd serves from by default


def test_tarball_is_owned_by_root_and_keeps_the_symlinks(tmp_path):
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"x")
    rootfs = labruntimes.build_rootfs(tmp_path / "rootfs", busybox, ["sh"])
    tar = labruntimes.write_tar(rootfs, tmp_path / "image.tar")
    with tarfile.open(tar) as t:
        members = {m.name: m for m in t.getmembers()}
    assert members["bin/sh"].issym() and members["bin/sh"].linkname == "busybox"
    assert members["bin/busybox"].isfile() and members["var/www/index.html"].isfile()
    assert {(m.uid, m.gid, m.uname) for m in members.values()} == {(0, 0, "root")}
    assert not any(name.startswith(("/", "..")) for name in members)


@pytest.mark.skipif(not os.path.exists("/bin/busybox"), reason="busybox-static is not installed")
def test_applets_come_from_busybox_itself():
    names = labruntimes.applets("/bin/busybox")
    assert {"sh", "httpd", "wget", "ping", "nc"} <= set(names)


def test_is_static_tells_a_static_executable_from_a_dynamic_one(tmp_path):
    assert not labruntimes.is_static("/bin/sh")  # dash, linked against libc
    if os.path.exists("/bin/busybox"):
        assert labruntimes.is_static("/bin/busybox") == ("busybox-static" in _package_of("/bin/busybox"))
    text = tmp_path / "script"
    text.write_text("#!/bin/sh\n")
    assert not labruntimes.is_static(text)


def _package_of(path):
    return subprocess.run(["dpkg", "-S", path], capture_output=True, text=True).stdout


def test_missing_runtimes_give_one_line_before_anything_is_built(monkeypatch):
    monkeypatch.setattr(labruntimes, "COMMANDS", ("no-such-dockerd", "sh", "no-such-podman"))
    monkeypatch.setattr(labruntimes, "BUSYBOX", "/bin/sh")  # there, but not static
    with pytest.raises(weftlab.LabError) as err:
        labruntimes.check_installed()
    message = str(err.value)
    assert "no-such-dockerd, no-such-podman" in message and "/bin/sh" in message and "dynamically linked" in message
    assert "busybox-static" in message and "\n" not in message
    if all(shutil.which(t) for t in ("ip", "ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl",
                                     "ovs-appctl", "socat")):
        with pytest.raises(weftlab.LabError, match="no-such-dockerd"):
            weftlab.up("rtmissing", 1, runtimes=True, progress=lambda msg: None)
        assert not (weftlab.LABS_DIR / "rtmissing").exists()  # refused before anything was built
