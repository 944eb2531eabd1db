"""A small certificate authority for Weft's TLS, on the `openssl` command line.

One CA signs: the controller's certificate (its OpenFlow TLS listener, its HTTPS API, and the client
certificate it shows to the hosts' OVSDB over ssl:), one certificate per host (the host's ovs-vswitchd
connecting to the controller, and its ovsdb-server's pssl: remote), and optional API client
certificates. Layout of a PKI directory (0700; every key 0600 from the moment it exists):

    ca-cert.pem  ca-key.pem                    the CA (self-signed, 10 years)
    controller-cert.pem  controller-key.pem    CN=weft-controller, SANs for the API's clients
    hosts/NAME-cert.pem  hosts/NAME-key.pem    CN=NAME, one per host
    clients/NAME-cert.pem  clients/NAME-key.pem

Keys are EC P-256 and signatures SHA-256 (accepted by OVS 3.1 for OpenFlow and OVSDB, by python-ovs and
by Python's ssl); leaves last 825 days. Every failure raises PkiError with a message for the user.
"""
import datetime
import fcntl
import ipaddress
import os
import re
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

from controller import validate
from weft.errors import WeftError

DEFAULT_DIR = "/var/lib/weft/pki"
CA_DAYS = 3650
LEAF_DAYS = 825
CA_SUBJECT = "/O=Weft/CN=Weft CA"
CONTROLLER_CN = "weft-controller"
DEFAULT_IPS = ("127.0.0.1",)
DEFAULT_DNS = ("localhost",)
DNS_LABEL_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")

# The extensions of each kind of certificate. Leaves are both TLS servers and clients: the controller
# serves OpenFlow and the API and is an OVSDB client; a host's vswitchd is an OpenFlow client and its
# ovsdb-server a server. An EC key signs (digitalSignature) and never encrypts a key (keyEncipherment).
_OPENSSL_CNF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
[ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth, clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


class PkiError(WeftError):
    """A PKI operation that could not be done; the message says why and what to do."""


@dataclass(frozen=True)
class Credentials:
    """Where one certificate, its key and the CA that signed it are; created: False if they already were."""
    name: str
    cert: str
    key: str
    ca_cert: str
    created: bool


def _paths(directory, kind, name=None):
    """(cert, key) of the CA ('ca'), the controller, a host or a client."""
    if kind in ("ca", "controller"):
        return os.path.join(directory, f"{kind}-cert.pem"), os.path.join(directory, f"{kind}-key.pem")
    sub = os.path.join(directory, kind + "s")
    return os.path.join(sub, f"{name}-cert.pem"), os.path.join(sub, f"{name}-key.pem")


def check_name(name, what="host"):
    """A host or client name: what Weft accepts as a host name, so also safe in a file name and a subject."""
    if not isinstance(name, str) or not validate.NAME_RE.fullmatch(name):
        raise PkiError(f"{what} name {name!r} is not valid: {validate.NAME_RULE}")
    return name


def _check_dns(name):
    labels = name.split(".")
    if len(name) > 253 or not all(DNS_LABEL_RE.fullmatch(label) for label in labels):
        raise PkiError(f"--dns {name!r} is not a DNS name (labels of letters, digits and '-', dot-separated)")
    return name.lower()


def _check_ip(value):
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise PkiError(f"--ip {value!r} is not an IPv4 or IPv6 address") from None


def _openssl(*args):
    """Run openssl with umask 077 (every file it writes is private from the start); its output as text."""
    try:
        res = subprocess.run(["openssl", *args], capture_output=True, text=True, umask=0o077,
                             timeout=60)
    except FileNotFoundError:
        raise PkiError("the openssl command is not installed (apt-get install openssl)") from None
    except subprocess.TimeoutExpired:
        raise PkiError(f"openssl {args[0]} did not finish in 60 s") from None
    if res.returncode != 0:
        lines = [line for line in res.stderr.splitlines() if line.strip()]
        raise PkiError(f"openssl {args[0]} failed: {lines[-1] if lines else f'exit status {res.returncode}'}")
    return res.stdout


def _serial():
    """A random positive 127-bit serial, as openssl wants it."""
    return "0x" + format(secrets.randbits(127) | 1 << 120, "x")


def _genkey(path):
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-pkeyopt", "ec_param_enc:named_curve", "-out", path)


def _mkdir_private(path):
    if os.path.exists(path) and not os.path.isdir(path):
        raise PkiError(f"{path} exists and is not a directory")
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)
    except OSError as err:
        raise PkiError(f"cannot create the directory {path}: {err.strerror}") from None


class _Staging:
    """A private scratch directory inside the PKI directory, under the PKI's lock.

    Files are made there and moved into place with os.replace (same filesystem): a failure halfway leaves
    nothing behind, and a reader never sees a half-written file. The lock serialises concurrent runs.
    """

    def __init__(self, directory):
        self.directory = directory

    def __enter__(self):
        try:
            self.lock = os.fdopen(os.open(os.path.join(self.directory, ".lock"), os.O_RDWR | os.O_CREAT, 0o600))
            fcntl.flock(self.lock, fcntl.LOCK_EX)
            self.path = tempfile.mkdtemp(prefix=".new-", dir=self.directory)  # mode 0700
        except OSError as err:
            raise PkiError(f"cannot write in {self.directory}: {err.strerror}") from None
        with open(os.path.join(self.path, "openssl.cnf"), "w") as f:
            f.write(_OPENSSL_CNF)
        return self

    def file(self, name):
        return os.path.join(self.path, name)

    def __exit__(self, *exc):
        shutil.rmtree(self.path, ignore_errors=True)
        self.lock.close()


def _install(staged_key, staged_cert, key, cert):
    """Move a new key and certificate into place: the key stays 0600, the certificate (public) is 0644."""
    os.chmod(staged_cert, 0o644)
    os.replace(staged_key, key)
    os.replace(staged_cert, cert)


def _ca_state(directory):
    """'none', 'complete', or raises: a CA directory with only half a CA is an operator's problem to see."""
    cert, key = _paths(directory, "ca")
    have = os.path.exists(cert), os.path.exists(key)
    if have == (False, False):
        return "none"
    if have == (True, True):
        return "complete"
    present, missing = (cert, key) if have[0] else (key, cert)
    raise PkiError(f"incomplete CA in {directory}: {os.path.basename(present)} exists but "
                   f"{os.path.basename(missing)} does not; restore it, or remove {present} to start over")


def init_ca(directory, exist_ok=False):
    """Create the CA in `directory` (made 0700). An existing CA is never replaced: PkiError, or with
    exist_ok its Credentials (created=False)."""
    directory = os.path.abspath(directory)
    cert, key = _paths(directory, "ca")
    _mkdir_private(directory)
    with _Staging(directory) as st:
        if _ca_state(directory) == "complete":
            if exist_ok:
                return Credentials("ca", cert, key, cert, False)
            raise PkiError(f"a CA already exists in {directory}; not replacing it (every certificate it "
                           f"signed would stop being trusted). `weft pki show --dir {directory}` lists it")
        _genkey(st.file("key.pem"))
        _openssl("req", "-new", "-x509", "-config", st.file("openssl.cnf"), "-extensions", "ca",
                 "-key", st.file("key.pem"), "-subj", CA_SUBJECT, "-sha256", "-days", str(CA_DAYS),
                 "-set_serial", _serial(), "-out", st.file("cert.pem"))
        _install(st.file("key.pem"), st.file("cert.pem"), key, cert)
    return Credentials("ca", cert, key, cert, True)


def _require_ca(directory):
    if not os.path.isdir(directory) or _ca_state(directory) == "none":
        raise PkiError(f"no CA in {directory}: create it first with `weft pki init --dir {directory}`")
    return _paths(directory, "ca")


def read_cert(path):
    """A certificate's subject CN, SANs (['IP:1.2.3.4', 'DNS:x']), serial, notAfter (aware datetime)."""
    out = _openssl("x509", "-in", path, "-noout", "-subject", "-serial", "-enddate", "-nameopt", "RFC2253",
                   "-ext", "subjectAltName")
    info = {"path": path, "subject": "", "cn": None, "sans": [], "serial": None, "not_after": None}
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("subject="):
            info["subject"] = line[len("subject="):].strip()
            cn = re.search(r"(?:^|,)CN=([^,]*)", info["subject"])
            info["cn"] = cn.group(1) if cn else None
        elif line.startswith("serial="):
            info["serial"] = line[len("serial="):].strip()
        elif line.startswith("notAfter="):
            when = datetime.datetime.strptime(line[len("notAfter="):].strip(), "%b %d %H:%M:%S %Y %Z")
            info["not_after"] = when.replace(tzinfo=datetime.timezone.utc)
        elif "Subject Alternative Name" in line and i + 1 < len(lines):
            for item in lines[i + 1].split(","):
                kind, _, value = item.strip().partition(":")
                if kind == "IP Address":
                    info["sans"].append("IP:" + str(ipaddress.ip_address(value)))
                elif kind == "DNS":
                    info["sans"].append("DNS:" + value)
    return info


def _verify(ca_cert, cert):
    """None if `cert` chains to `ca_cert` and is in date, else openssl's reason."""
    try:
        _openssl("verify", "-CAfile", ca_cert, cert)
        return None
    except PkiError as err:
        return str(err).split(": ", 1)[-1]


def _same_key(key, cert):
    return _openssl("pkey", "-in", key, "-pubout") == _openssl("x509", "-in", cert, "-noout", "-pubkey")


def _issue(directory, kind, name, cn, sans, force):
    directory = os.path.abspath(directory)
    ca_cert, ca_key = _require_ca(directory)
    cert, key = _paths(directory, kind, name)
    label = kind if kind == "controller" else f"{kind} {name}"
    _mkdir_private(os.path.dirname(cert))
    with _Staging(directory) as st:
        if not force and (os.path.exists(cert) or os.path.exists(key)):
            problem = _existing_problem(ca_cert, cert, key, cn, sans)
            if problem is None:
                return Credentials(name, cert, key, ca_cert, False)
            raise PkiError(f"{label}: {problem}; replace it with --force (whatever uses the old one then "
                           f"needs the new files)")
        with open(st.file("openssl.cnf"), "a") as f:
            f.write(f"subjectAltName = {', '.join(sans)}\n")
        _genkey(st.file("key.pem"))
        _openssl("req", "-new", "-config", st.file("openssl.cnf"), "-key", st.file("key.pem"),
                 "-subj", f"/CN={cn}", "-out", st.file("req.pem"))
        _openssl("x509", "-req", "-in", st.file("req.pem"), "-CA", ca_cert, "-CAkey", ca_key,
                 "-set_serial", _serial(), "-days", str(LEAF_DAYS), "-sha256",
                 "-extfile", st.file("openssl.cnf"), "-extensions", "leaf", "-out", st.file("cert.pem"))
        _install(st.file("key.pem"), st.file("cert.pem"), key, cert)
    return Credentials(name, cert, key, ca_cert, True)


def _existing_problem(ca_cert, cert, key, cn, sans):
    """Why an existing certificate cannot be kept for this request, or None if it can."""
    if not (os.path.exists(cert) and os.path.exists(key)):
        return f"only one of {cert} and {key} exists"
    info = read_cert(cert)
    if info["cn"] != cn or sorted(info["sans"]) != sorted(sans):
        return (f"a certificate already exists for CN={info['cn']} with {', '.join(info['sans']) or 'no SAN'}, "
                f"not {', '.join(sans)}")
    reason = _verify(ca_cert, cert)
    if reason:
        return f"the existing certificate does not verify against this CA ({reason})"
    if not _same_key(key, cert):
        return f"{key} is not the key of {cert}"
    return None


def issue_controller(directory, ips=None, dns=None, force=False):
    """The controller's certificate (CN=weft-controller) with IP and DNS subjectAltNames; with neither
    given, 127.0.0.1 and localhost. Kept as it is if it already matches (created=False)."""
    if not ips and not dns:
        ips, dns = DEFAULT_IPS, DEFAULT_DNS
    sans = [f"IP:{_check_ip(ip)}" for ip in ips or ()] + [f"DNS:{_check_dns(d)}" for d in dns or ()]
    sans = list(dict.fromkeys(sans))
    return _issue(directory, "controller", "controller", CONTROLLER_CN, sans, force)


def issue_host(directory, name, force=False):
    """A host's certificate, CN=NAME (and DNS:NAME): for `ovs-vsctl set-ssl` and its OVSDB pssl: remote."""
    check_name(name, "host")
    return _issue(directory, "host", name, name, [f"DNS:{name}"], force)


def issue_client(directory, name, force=False):
    """An API client's certificate, CN=NAME."""
    check_name(name, "client")
    return _issue(directory, "client", name, name, [f"DNS:{name}"], force)


def inventory(directory):
    """Every certificate of the PKI: dicts with kind, name, cert, key, cn, subject, sans, not_after,
    days_left and problem (None, or why it would not be accepted: expired, not signed by this CA...)."""
    directory = os.path.abspath(directory)
    ca_cert, _ = _require_ca(directory)
    entries = [("ca", "ca"), ("controller", "controller")]
    for kind in ("host", "client"):
        sub = os.path.join(directory, kind + "s")
        names = sorted(f[:-len("-cert.pem")] for f in os.listdir(sub) if f.endswith("-cert.pem")) \
            if os.path.isdir(sub) else []
        entries += [(kind, n) for n in names]
    now = datetime.datetime.now(datetime.timezone.utc)
    rows = []
    for kind, name in entries:
        cert, key = _paths(directory, kind, name)
        if not os.path.exists(cert):
            continue
        info = read_cert(cert)
        problem = _verify(ca_cert, cert)
        if problem is None and not os.path.exists(key):
            problem = f"its key {key} is missing"
        rows.append({"kind": kind, "name": name, "cert": cert, "key": key, "cn": info["cn"],
                     "subject": info["subject"], "sans": info["sans"], "serial": info["serial"],
                     "not_after": info["not_after"].isoformat(),
                     "days_left": (info["not_after"] - now).days, "problem": problem})
    return rows
