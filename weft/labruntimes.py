"""`weft lab up --runtimes`: the real container runtimes on every lab host, a dockerd (with the
containerd it starts) and podman, and the image `weft/busybox` built from Debian's busybox-static.

Each host's runtimes live in the host's network namespace and in a mount namespace of their own,
held by a small process (`python -m weft.labruntimes hold ...`) that every runtime process of the
host enters (nsenter), so that dockerd, containerd, the shims, podman, conmon and the CNI plugins all
see the same mounts, across dockerd restarts and separate podman calls. In that mount namespace the
directories the runtimes write to whatever their flags say are the host's own (the notes in
runtimes.md say which: dockerd looks for plugins only in /run/docker/plugins, containerd's shims put
their sockets in /run/containerd/s, podman makes its netns in /run/netns and caches CNI results in
/var/lib/cni): a tmpfs covers /run, /var/lib, /var/cache and /opt there, with every other entry of
the originals bind-mounted back. Nothing of the runtimes' appears in the root mount namespace, and it
all goes when the last process of the namespace exits.

The layout, per host hN (<hd> = <labdir>/hN):
  <hd>/docker/    docker.sock, dockerd.log, daemon.json, root/ (data root), exec/ (exec root),
                  plugins/ (mode 0700; /run/docker/plugins in the host's mount namespace) with
                  weft.sock, served by `weft docker-plugin` (plugin.log, plugin-state/)
  <hd>/podman/    containers.conf, root/, runroot/, tmp/, cni-bin/ (first in cni_plugin_dirs),
                  net.d/ (network_config_dir), cni-cache/ (/var/lib/cni in the mount namespace)
  <labdir>/image/ rootfs/ and busybox.tar, imported into every host's dockerd and podman
"""
import concurrent.futures
import ctypes
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from weft import lab as weftlab
from weft.lab import LabError

IMAGE = "weft/busybox"
BUSYBOX = "/bin/busybox"                       # Debian's busybox-static
DOCKER_CLIENTS = ("/usr/bin/docker",)          # Debian's 20.10 client, the daemon's own version
COMMANDS = ("dockerd", "containerd", "containerd-shim-runc-v2", "runc", "podman", "conmon", "nsenter")
PACKAGES = "docker.io podman containernetworking-plugins busybox-static"
DOCKERD_TIMEOUT = 60.0                         # vfs and a busy 2-core machine: seconds, not ms
# The processes the runtimes start that name the lab dir on their command lines; only these are
# stopped when they are found left over at `down` (anything else is reported, never killed).
RUNTIME_PROGRAMS = {"dockerd", "containerd", "containerd-shim", "containerd-shim-runc-v2", "conmon",
                    "runc", "podman"}
# Per directory covered in a host's mount namespace: the entries that are the host's own, each an
# empty directory or (a path relative to the host dir) a directory of the lab bind-mounted there.
PRIVATE = {
    "/run": {"docker": None, "containerd": None, "runc": None, "crun": None, "netns": None,
             "containers": None, "libpod": None, "podman": None},
    "/var/lib": {"docker": None, "containerd": None, "containers": None, "cni": "podman/cni-cache"},
    "/var/cache": {"containers": None},
    "/opt": {"containerd": None},
}
# podman 4.3's own default capabilities, plus NET_RAW, which Docker grants too: busybox's ping
# needs a raw socket (it has no ICMP datagram fallback), and the examples ping.
PODMAN_CAPS = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "NET_BIND_SERVICE", "NET_RAW",
               "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"]


# ---------------------------------------------------------------- what is needed

def docker_client():
    for path in DOCKER_CLIENTS:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("docker")


def is_static(path):
    """True when the ELF file at path has no program interpreter (a static executable)."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit ELF only: what Debian ships here
            return False
        phoff, = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != 3 for i in range(phnum))  # PT_INTERP


def missing():
    """What `--runtimes` needs and this machine lacks, as words for one error line."""
    lacking = [c for c in COMMANDS if not shutil.which(c)]
    if not docker_client():
        lacking.append("docker")
    if not os.path.exists(BUSYBOX):
        lacking.append(BUSYBOX)
    elif not is_static(BUSYBOX):
        lacking.append(f"a static {BUSYBOX} (this one is dynamically linked)")
    return lacking


def check_installed():
    lacking = missing()
    if lacking:
        raise LabError(f"--runtimes needs {', '.join(lacking)}: install {PACKAGES}")


# ---------------------------------------------------------------- the image

def applets(busybox=BUSYBOX):
    out = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout
    return [a for a in out.split() if a and "/" not in a]


def build_rootfs(rootfs, busybox=BUSYBOX, names=None):
    """A root file system for weft/busybox in the (new) directory rootfs: bin/busybox and one
    symlink per applet, a root and a nobody user, /tmp, and /var/www/index.html (the working
    directory, so `httpd -f -p 80` serves a page)."""
    rootfs = Path(rootfs)
    names = applets(busybox) if names is None else names
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy(busybox, rootfs / "bin" / "busybox")
    os.chmod(rootfs / "bin" / "busybox", 0o755)
    for name in names:
        if name != "busybox":
            (rootfs / "bin" / name).symlink_to("busybox")
    (rootfs / "etc").mkdir()
    (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                           "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    (rootfs / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (rootfs / "root").mkdir(mode=0o700)
    (rootfs / "tmp").mkdir()
    os.chmod(rootfs / "tmp", 0o1777)
    (rootfs / "var" / "www").mkdir(parents=True)
    (rootfs / "var" / "www" / "index.html").write_text("hello from weft/busybox\n")
    return rootfs


def write_tar(rootfs, tar_path):
    """rootfs as a tarball owned by root, the form `docker import` and `podman import` take."""
    def owned_by_root(info):
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info
    with tarfile.open(tar_path, "w") as tar:
        for entry in sorted(Path(rootfs).iterdir()):
            tar.add(entry, arcname=entry.name, filter=owned_by_root)
    return tar_path


# `docker import --change` and `podman import --change` take the same Dockerfile instructions.
IMAGE_CHANGES = ['CMD ["sh"]', "WORKDIR /var/www"]


# ---------------------------------------------------------------- per-host paths and commands

def host_paths(st, host):
    hd = Path(st["hosts"][host]["dir"])
    d, p = hd / "docker", hd / "podman"
    return {
        "docker_dir": str(d), "docker_socket": str(d / "docker.sock"),
        "docker_host": f"unix://{d / 'docker.sock'}", "docker_plugins_dir": str(d / "plugins"),
        "docker_log": str(d / "dockerd.log"), "docker_data_root": str(d / "root"),
        "docker_exec_root": str(d / "exec"), "docker_cgroup_parent": f"/weft-{st['name']}-{host}",
        "docker_plugin_socket": str(d / "plugins" / "weft.sock"), "docker_plugin_log": str(d / "plugin.log"),
        "docker_plugin_state": str(d / "plugin-state"),
        "podman": {"dir": str(p), "containers_conf": str(p / "containers.conf"), "root": str(p / "root"),
                   "runroot": str(p / "runroot"), "tmp_dir": str(p / "tmp"),
                   "cni_plugin_dir": str(p / "cni-bin"), "network_config_dir": str(p / "net.d"),
                   "cni_cache_dir": str(p / "cni-cache")},
    }


def _require_runtimes(name, host):
    st = weftlab._require(name)
    if not st.get("runtimes"):
        raise LabError(f"lab {name} runs no container runtimes (start it with `weft lab up --runtimes`)")
    if host not in st["hosts"]:
        raise LabError(f"no host {host} in lab {name} (hosts: {', '.join(st['hosts'])})")
    return st


def _ns_pid(st, host):
    pid = st["hosts"][host].get("runtime_ns_pid")
    if not pid or not weftlab._alive(pid) or not weftlab._is_ours(pid, st["marker"]):
        raise LabError(f"{host}'s runtime namespace holder is not running; restart the lab "
                       f"(`weft lab down --name {st['name']}`, then up)")
    return pid


def _enter(st, host):
    """nsenter into host's network namespace and its runtimes' mount namespace, keeping the
    caller's working directory (entering a mount namespace moves to its root otherwise)."""
    try:
        cwd = os.getcwd()
    except FileNotFoundError:
        cwd = "/"
    return ["nsenter", f"--target={_ns_pid(st, host)}", "--net", "--mount", f"--wd={cwd}", "--"]


def runtime_cmd(name, host, argv):
    """(argv, env) that run argv on host beside its runtimes: in its network namespace and its
    runtimes' mount namespace (where /run/docker/plugins is the host's own, and dockerd's and
    podman's network namespaces are), with the host's OVS_*, WEFT_API and PYTHONPATH set."""
    st = _require_runtimes(name, host)
    _, env = weftlab.target_cmd(name, host, ["true"])
    return [*_enter(st, host), *map(str, argv)], env


def docker_cmd(name, host, args):
    """(argv, env) of the real docker client talking to host's dockerd."""
    st = _require_runtimes(name, host)
    return [docker_client(), "-H", host_paths(st, host)["docker_host"], *map(str, args)], dict(os.environ)


def _podman_argv(paths):
    p = paths["podman"]
    return ["podman", "--root", p["root"], "--runroot", p["runroot"], "--storage-driver", "vfs"]


def podman_cmd(name, host, args):
    """(argv, env) of podman on host: in its network namespace (where podman calls the CNI plugins)
    and its runtimes' mount namespace, configured by the host's containers.conf. Every Weft network
    has a conflist in its net.d first (sync_podman_networks)."""
    st = _require_runtimes(name, host)
    paths = host_paths(st, host)
    sync_podman_networks(st, host, paths)
    argv, env = runtime_cmd(name, host, [*_podman_argv(paths), *args])
    env["CONTAINERS_CONF"] = paths["podman"]["containers_conf"]
    return argv, env


def exec_docker(name, host, args):
    """Become the docker client for host (pid, signals and exit status are the client's own)."""
    weftlab.exec_as(*docker_cmd(name, host, args))


def exec_podman(name, host, args):
    weftlab.exec_as(*podman_cmd(name, host, args))


# ---------------------------------------------------------------- the mount namespace holder

_CLONE_NEWNS, _CLONE_NEWNET = 0x20000, 0x40000000
_MS_NOSUID, _MS_NODEV, _MS_BIND, _MS_REC, _MS_SLAVE = 0x2, 0x4, 0x1000, 0x4000, 0x80000
_O_PATH = 0o10000000


def _libc_call(func, *args):
    if func(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{func.__name__}: {os.strerror(err)}")


def _mount(libc, source, target, fstype=None, flags=0, data=None):
    enc = (lambda s: None if s is None else str(s).encode())
    try:
        _libc_call(libc.mount, enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data))
    except OSError as err:
        raise OSError(err.errno, f"mount {source} on {target}: {os.strerror(err.errno)}") from None


def _shadow(libc, path, own, host_dir):
    """Cover path with a tmpfs that shows the same entries, bind-mounted from the original, except
    the names in `own`: each an empty directory of this namespace, or a lab directory bound there."""
    old = os.open(path, os.O_RDONLY | os.O_DIRECTORY)  # the original, reachable once covered
    mode = os.fstat(old).st_mode & 0o7777
    names = os.listdir(old)
    _mount(libc, "tmpfs", path, "tmpfs", _MS_NOSUID | _MS_NODEV, f"mode={mode:o}")
    for name in names:
        if name in own:
            continue
        source, target = f"/proc/self/fd/{old}/{name}", f"{path}/{name}"
        if os.path.islink(source):
            os.symlink(os.readlink(source), target)
            continue
        if os.path.isdir(source):
            os.mkdir(target)
        else:
            open(target, "x").close()  # a file, socket or fifo: a bind mount over an empty file
        _mount(libc, source, target, flags=_MS_BIND | _MS_REC)
    for name, lab_source in own.items():
        os.mkdir(f"{path}/{name}", 0o711)
        if lab_source:
            _mount(libc, Path(host_dir) / lab_source, f"{path}/{name}", flags=_MS_BIND)
    os.close(old)


def hold(netns, host_dir):
    """Make the runtimes' mount namespace of a host and keep it until SIGTERM. Prints `ready` once
    it is set up; the process's /proc/<pid>/ns/{net,mnt} are what the runtimes enter."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    _libc_call(libc.setns, fd, _CLONE_NEWNET)
    os.close(fd)
    _libc_call(libc.unshare, _CLONE_NEWNS)
    # A slave: mounts of the root namespace still appear here, none of ours appear there.
    _mount(libc, None, "/", flags=_MS_REC | _MS_SLAVE)
    # /sys as the network namespace sees it (as `ip netns exec` does), with the cgroup hierarchies
    # kept: runc puts every container into them.
    cgroup = os.open("/sys/fs/cgroup", _O_PATH)
    _mount(libc, "sysfs", "/sys", "sysfs")
    _mount(libc, f"/proc/self/fd/{cgroup}", "/sys/fs/cgroup", flags=_MS_BIND | _MS_REC)
    os.close(cgroup)
    for path, own in PRIVATE.items():
        if os.path.isdir(path):
            _shadow(libc, path, own, host_dir)
    os.makedirs("/run/docker/plugins", 0o700)
    _mount(libc, Path(host_dir) / "docker" / "plugins", "/run/docker/plugins", flags=_MS_BIND)
    print("ready", flush=True)
    while True:
        signal.pause()


def _start_holder(st, host, progress):
    h = st["hosts"][host]
    log = Path(h["dir"]) / "runtime-ns.log"
    env = weftlab._full_env({"PYTHONPATH": weftlab.source_pythonpath()})
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "weft.labruntimes", "hold", h["netns"], h["dir"]],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, env=env,
                                start_new_session=True)
    weftlab._record_pid(st, proc.pid, f"{host} runtime namespace", proc=proc)
    ready, _, _ = select.select([proc.stdout], [], [], 10)
    line = proc.stdout.readline().decode(errors="replace").strip() if ready else ""
    proc.stdout.close()
    if line != "ready":
        raise LabError(f"{host}: the runtimes' mount namespace could not be set up; "
                       f"last lines of {log}:\n{weftlab._tail(log)}")
    h["runtime_ns_pid"] = proc.pid
    weftlab._save(st)


# ---------------------------------------------------------------- dockerd

def _dockerd_argv(paths):
    d = paths["docker_dir"]
    # runtimes.md: these flags leave every network namespace but its own alone (no iptables, no
    # ip_forward, no bridge); --live-restore keeps containers running over a dockerd restart.
    return ["dockerd", "--iptables=false", "--ip6tables=false", "--ip-masq=false", "--ip-forward=false",
            "--bridge=none", "--storage-driver=vfs", "--data-root", paths["docker_data_root"],
            "--exec-root", paths["docker_exec_root"], "-H", paths["docker_host"],
            "--pidfile", f"{d}/docker.pid", "--exec-opt", "native.cgroupdriver=cgroupfs",
            "--cgroup-parent", paths["docker_cgroup_parent"], "--live-restore",
            "--config-file", f"{d}/daemon.json"]


def _prepare_docker(paths):
    d = Path(paths["docker_dir"])
    d.mkdir(exist_ok=True)
    Path(paths["docker_plugins_dir"]).mkdir(mode=0o700, exist_ok=True)
    # Its own config file, so /etc/docker/daemon.json never applies, and its identity key here
    # rather than in /etc/docker/key.json, which dockerd 20.10 writes by default.
    (d / "daemon.json").write_text(json.dumps({"deprecated-key-path": str(d / "key.json")}) + "\n")


def _popen_dockerd(st, host):
    paths = host_paths(st, host)
    with open(paths["docker_log"], "ab") as log:
        proc = subprocess.Popen([*_enter(st, host), *_dockerd_argv(paths)], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={"PATH": os.environ.get("PATH", os.defpath)})
    # nsenter execs dockerd (it forks only to enter a pid namespace): proc.pid is dockerd.
    weftlab._record_pid(st, proc.pid, f"{host} dockerd", proc=proc)
    st["hosts"][host]["dockerd_pid"] = proc.pid
    weftlab._save(st)
    return proc


def _ping_docker(sock):
    """True when dockerd answers GET /_ping on its socket."""
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(2)
            s.connect(sock)
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            reply = b""
            while chunk := s.recv(4096):
                reply += chunk
        return reply.startswith(b"HTTP/1.") and b" 200 " in reply.split(b"\r\n", 1)[0]
    except OSError:
        return False


def _wait_dockerd(st, host, proc, timeout=DOCKERD_TIMEOUT):
    paths = host_paths(st, host)
    deadline = time.monotonic() + timeout
    while not _ping_docker(paths["docker_socket"]):
        if proc.poll() is not None:
            raise LabError(f"{host}: dockerd exited with status {proc.returncode}; last lines of "
                           f"{paths['docker_log']}:\n{weftlab._tail(paths['docker_log'])}")
        if time.monotonic() > deadline:
            raise LabError(f"{host}: dockerd did not answer on {paths['docker_socket']} within "
                           f"{timeout:.0f}s; last lines of {paths['docker_log']}:\n"
                           f"{weftlab._tail(paths['docker_log'])}")
        time.sleep(0.05)
    # dockerd serves once its containerd is up; containerd's pid file is in the exec root.
    pid = weftlab._read_pidfile(Path(paths["docker_exec_root"]) / "containerd" / "containerd.pid")
    if not any(e["pid"] == pid for e in st["pids"]):
        weftlab._record_pid(st, pid, f"{host} containerd")
    st["hosts"][host]["containerd_pid"] = pid
    weftlab._save(st)


PLUGIN_TIMEOUT = 30.0


def _start_plugin(st, host, progress):
    """`weft docker-plugin` beside host's dockerd: in its network and mount namespaces, with the
    host's OVS_* and WEFT_API (target_cmd's environment), on the socket dockerd finds it by."""
    paths = host_paths(st, host)
    progress(f"{host}: starting weft docker-plugin on {paths['docker_plugin_socket']}")
    argv, env = runtime_cmd(st["name"], host, [
        sys.executable, "-m", "weft.cli", "docker-plugin", "--socket", paths["docker_plugin_socket"],
        "--docker", paths["docker_host"], "--state-dir", paths["docker_plugin_state"]])
    with open(paths["docker_plugin_log"], "ab") as log:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    weftlab._record_pid(st, proc.pid, f"{host} docker-plugin", proc=proc)  # nsenter execs it
    st["hosts"][host]["docker_plugin_pid"] = proc.pid
    weftlab._save(st)
    deadline = time.monotonic() + PLUGIN_TIMEOUT
    while not os.path.exists(paths["docker_plugin_socket"]):
        if proc.poll() is not None or time.monotonic() > deadline:
            problem = f"exited with status {proc.returncode}" if proc.poll() is not None else \
                f"did not serve within {PLUGIN_TIMEOUT:.0f}s"
            raise LabError(f"{host}: weft docker-plugin {problem}; last lines of {paths['docker_plugin_log']}:\n"
                           f"{weftlab._tail(paths['docker_plugin_log'])}")
        time.sleep(0.02)
    return proc


def start_plugin(name, host, progress=weftlab._stderr):
    """Start host's Docker plugin (again, e.g. after stop_plugin)."""
    _start_plugin(_require_runtimes(name, host), host, progress)


def stop_plugin(name, host, progress=weftlab._stderr):
    """Stop host's Docker plugin (SIGTERM: it removes its socket); dockerd and its containers run on."""
    _stop_daemon(_require_runtimes(name, host), host, "docker_plugin", progress)


def start_docker(name, host, progress=weftlab._stderr):
    """Start host's dockerd (again, e.g. after stop_docker) and wait until it answers."""
    st = _require_runtimes(name, host)
    progress(f"{host}: starting dockerd, waiting for it to answer on {host_paths(st, host)['docker_socket']}")
    _wait_dockerd(st, host, _popen_dockerd(st, host))


def stop_docker(name, host, progress=weftlab._stderr):
    """Stop host's dockerd (SIGTERM, as its service manager would): with --live-restore its
    containers keep running, and a later start_docker takes them back."""
    st = _require_runtimes(name, host)
    _stop_daemon(st, host, "dockerd", progress)


def restart_docker(name, host, progress=weftlab._stderr):
    stop_docker(name, host, progress)
    start_docker(name, host, progress)


def _stop_daemon(st, host, kind, progress, timeout=20):
    _stop_daemons(st, [host], kind, progress, timeout)


def _stop_daemons(st, hosts, kind, progress, timeout=20):
    """SIGTERM the recorded `kind` daemon of every host at once (a dockerd takes about a second to
    stop, most of it waiting), then SIGKILL those still there after timeout."""
    entries = []
    for host in hosts:
        pid = st["hosts"][host].get(f"{kind}_pid")
        if pid and weftlab._alive(pid) and weftlab._is_ours(pid, st["marker"]):
            entries.append({"pid": pid, "what": f"{host}'s {kind}", "group": False})
            progress(f"{host}: stopping {kind} (pid {pid})")
            weftlab._signal(entries[-1], signal.SIGTERM)
    left = weftlab._wait_gone(entries, timeout)
    for e in left:
        progress(f"{e['what']} (pid {e['pid']}) did not stop within {timeout}s of SIGTERM, sending SIGKILL")
        weftlab._signal(e, signal.SIGKILL)
    left = weftlab._wait_gone(left, 5)
    if left:
        raise LabError("could not stop " + ", ".join(f"{e['what']} (pid {e['pid']})" for e in left))


# ---------------------------------------------------------------- podman

def _write_podman_conf(st, host, paths):
    p = paths["podman"]
    for key in ("dir", "root", "runroot", "tmp_dir", "cni_plugin_dir", "network_config_dir", "cni_cache_dir"):
        Path(p[key]).mkdir(exist_ok=True)
    # [engine] env: podman also runs as conmon's exit command (`podman container cleanup`, the CNI
    # DEL of a container that exited by itself), and conmon passes on CONTAINERS_CONF and PATH
    # only: the host's OVS_*, WEFT_API and PYTHONPATH reach the CNI plugins through this file.
    _, env = weftlab.target_cmd(st["name"], host, ["true"])
    engine_env = [f"{k}={env[k]}" for k in ("OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR",
                                            "WEFT_API", "PYTHONPATH") if env.get(k)]
    q = json.dumps  # TOML basic strings and arrays of them read like JSON
    Path(p["containers_conf"]).write_text(f"""\
# weft lab host {host}: runtimes.md says why each line is here.
[containers]
# podman's default asks for nofile=1048576, which root here cannot raise to.
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
default_capabilities = {q(PODMAN_CAPS)}

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
tmp_dir = {q(p["tmp_dir"])}
image_copy_tmp_dir = {q(p["tmp_dir"])}
env = {q(engine_env)}

[network]
network_backend = "cni"
cni_plugin_dirs = {q([p["cni_plugin_dir"], "/usr/lib/cni"])}
network_config_dir = {q(p["network_config_dir"])}
""")


def _install_cni_plugin(paths):
    """weft-cni as `weft` (the conflists' type), first in podman's cni_plugin_dirs, running this
    venv's Python and this tree's weft, as `python -m weft.cli` does on a lab host."""
    from weft import cni
    cni.write_plugin(str(Path(paths["podman"]["cni_plugin_dir"]) / "weft"), source=weftlab.REPO_ROOT)


def sync_podman_networks(st, host, paths):
    """One conflist per Weft network in host's podman net.d (and none for a network gone), naming
    the lab's API and the host's OVSDB, so `podman run --network NAME` works for any Weft network,
    however it was made (weft network create, docker network create -d weft...). With the
    controller down, net.d stays as it was: podman calls that need no network still work."""
    if not st.get("api"):
        return
    from weft import cni
    from weft.client import ApiClient, ApiError
    try:
        names = [n["name"] for n in ApiClient(st["api"], timeout=10).get("/v1/networks")]
    except ApiError:
        return
    cni.sync_conflists(paths["podman"]["network_config_dir"], names, api=st["api"],
                       ovsdb=f"unix:{st['hosts'][host]['dir']}/db.sock")


# ---------------------------------------------------------------- bring-up and teardown

def _import_image(st, tar, progress):
    """docker import and podman import of the tarball, on every host at once."""
    jobs = []
    for host in st["hosts"]:
        argv, env = docker_cmd(st["name"], host, ["import", *sum((["--change", c] for c in IMAGE_CHANGES), []),
                                                  tar, IMAGE])
        jobs.append((f"{host}: docker import", argv, env))
        argv, env = podman_cmd(st["name"], host, ["import", "--quiet",
                                                  *sum((["--change", c] for c in IMAGE_CHANGES), []), tar, IMAGE])
        jobs.append((f"{host}: podman import", argv, env))
    progress(f"lab {st['name']}: importing {IMAGE} into {len(st['hosts'])} dockerd(s) and podman(s)")

    def run(job):
        what, argv, env = job
        res = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        if res.returncode:
            raise LabError(f"{what} failed (exit {res.returncode}): {(res.stderr or res.stdout).strip()}")
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        for fut in [pool.submit(run, j) for j in jobs]:
            fut.result()


def start(st, progress):
    """Bring up the runtimes on every host of a lab being built (lab.up calls this)."""
    st["runtimes"] = True
    weftlab._save(st)
    image_dir = Path(st["dir"]) / "image"
    progress(f"lab {st['name']}: building {IMAGE} from {BUSYBOX} in {image_dir}")
    image_dir.mkdir()
    tar = write_tar(build_rootfs(image_dir / "rootfs"), image_dir / "busybox.tar")
    for host in st["hosts"]:
        _prepare_docker(host_paths(st, host))
        _write_podman_conf(st, host, host_paths(st, host))
        _install_cni_plugin(host_paths(st, host))
        _start_holder(st, host, progress)
    for host in st["hosts"]:  # before dockerd, which activates it when it restores its networks
        _start_plugin(st, host, progress)
    # All dockerds start at once: each spends most of its start-up (~0.5 s idle, seconds when the
    # machine is busy) waiting, not computing.
    procs = {}
    for host in st["hosts"]:
        progress(f"{host}: starting dockerd (vfs, data in {host_paths(st, host)['docker_data_root']})")
        procs[host] = _popen_dockerd(st, host)
    for host, proc in procs.items():
        progress(f"{host}: waiting for dockerd to answer on {host_paths(st, host)['docker_socket']}")
        _wait_dockerd(st, host, proc)
    _import_image(st, tar, progress)


def _try(progress, what, argv, env, timeout=120):
    try:
        res = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        progress(f"{what}: timed out")
        return None
    if res.returncode:
        progress(f"{what} failed (exit {res.returncode}): {(res.stderr or res.stdout).strip()}")
        return None
    return res.stdout


def _leftovers(st):
    """Processes whose command line names the lab dir and that the lab did not record: (pid, argv)."""
    recorded = {e["pid"] for e in st["pids"]}
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) in recorded or int(entry.name) == os.getpid():
            continue
        try:
            argv = Path(entry.path, "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if weftlab._alive(int(entry.name)) and any(st["marker"].encode() in a for a in argv):
            found.append((int(entry.name), [a.decode(errors="replace") for a in argv if a]))
    return found


def _cgroup_dirs(st, host):
    parent = host_paths(st, host)["docker_cgroup_parent"].strip("/")
    return [p for p in Path("/sys/fs/cgroup").glob(f"*/{parent}") if p.is_dir()]


def _remove_containers(st, host, progress):
    name, h = st["name"], st["hosts"][host]
    holder = h.get("runtime_ns_pid")
    if not (holder and weftlab._alive(holder) and weftlab._is_ours(holder, st["marker"])):
        return  # without its mount namespace neither runtime can be reached
    dockerd = h.get("dockerd_pid")
    if dockerd and weftlab._alive(dockerd):
        ids = (_try(progress, f"{host}: docker ps", *docker_cmd(name, host, ["ps", "-aq", "--no-trunc"])) or "").split()
        if ids:
            progress(f"{host}: removing {len(ids)} Docker container(s)")
            _try(progress, f"{host}: docker rm -f", *docker_cmd(name, host, ["rm", "-f", *ids]))
    if (_try(progress, f"{host}: podman ps", *podman_cmd(name, host, ["ps", "-aq"])) or "").split():
        progress(f"{host}: removing the podman containers")
        _try(progress, f"{host}: podman rm -fa", *podman_cmd(name, host, ["rm", "-fa", "-t", "0"]))
    # podman removes the network namespace of every container it removes; one left means a
    # container it could not remove.
    netns = f"/proc/{holder}/root/run/netns"
    left = sorted(os.listdir(netns)) if os.path.isdir(netns) else []
    if left:
        progress(f"{host}: podman left network namespaces {', '.join(left)} (they go with its mount namespace)")


def stop(st, progress):
    """Take the runtimes down before the rest of the lab (lab.down calls this while the controller
    and any network plugin still run, so they see the containers leave): remove every container,
    through the real clients, stop the dockerds and their containerds, and stop what the runtimes
    left behind that names the lab dir."""
    name = st["name"]
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:  # hosts are independent
        list(pool.map(lambda host: _remove_containers(st, host, progress), st["hosts"]))
    # dockerd stops the containerd it started; one still there after its dockerd is stopped here.
    _stop_daemons(st, list(st["hosts"]), "dockerd", progress)
    _stop_daemons(st, list(st["hosts"]), "containerd", progress)
    # Shims and conmons of containers that could not be removed (their runtime is gone, or hung).
    strays = [(pid, argv) for pid, argv in _leftovers(st) if Path(argv[0]).name in RUNTIME_PROGRAMS]
    if strays:
        entries = [{"pid": pid, "what": " ".join(argv), "group": False} for pid, argv in strays]
        for e in entries:
            progress(f"lab {name}: stopping left-over runtime process {e['pid']}: {e['what'][:200]}")
            weftlab._signal(e, signal.SIGKILL)
        weftlab._wait_gone(entries, 5)
    for host in st["hosts"]:
        for d in _cgroup_dirs(st, host):
            for cg in sorted(d.iterdir(), reverse=True):
                if cg.is_dir():
                    _rmdir(cg, progress)
            _rmdir(d, progress)


def _rmdir(path, progress):
    try:
        path.rmdir()
    except OSError as err:
        progress(f"cannot remove cgroup {path}: {err.strerror}")


def check_nothing_left(st):
    """After down stopped everything: no process may still name the lab dir."""
    left = _leftovers(st)
    if left:
        raise LabError("still running after the lab stopped: " + "; ".join(
            f"pid {pid} ({' '.join(argv)[:120]})" for pid, argv in left))


def main(argv):
    if len(argv) == 3 and argv[0] == "hold":
        try:
            hold(argv[1], argv[2])
        except OSError as err:  # one line for the lab's error message, which shows this log
            print(f"runtime namespace of {argv[2]}: {err.strerror or err}", file=sys.stderr)
            return 1
    print("usage: python -m weft.labruntimes hold NETNS HOST_DIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
