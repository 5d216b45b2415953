"""Running sluice for real: `make install` (staged with DESTDIR into a
temporary folder, from this tree's build: BUILD, never rebuilt here), the
sendmail link, the man page, the systemd unit and the container image's
Dockerfile and .dockerignore, checked against each other and against the
binary:

- every installed file, with its mode, and nothing else; sluice.conf is
  never created or overwritten; the installed binary runs;
- SENDMAIL_LINK=yes makes a working sendmail link (no recipients: exit 64),
  and another sendmail there is kept unless FORCE=yes;
- docs/sluice.8 renders with groff -ww and man without a warning, and
  documents every command, queue subcommand, option, signal and exit code;
  the configuration keys it names exist;
- the unit's ExecStart is the binary `make install` installs for PREFIX,
  its hardening matches its privilege choice, systemd-analyze verifies it;
- the Dockerfile builds with `make install DESTDIR=/out PREFIX=/usr`,
  copies only what that produced to the same paths, installs the packages
  that provide the Makefile's libraries (build) and the binary's shared
  libraries (runtime), and its ENV is a configuration sluice accepts.
The Docker image itself cannot be built here (no Docker daemon)."""
import ipaddress
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import sluicetest  # noqa: E402
from sluicetest import BIN, BUILD, ROOT, SANITIZER_PATTERNS, main, test  # noqa: E402

EX_USAGE = 64
SECTIONS = ("NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "CONFIGURATION",
            "SIGNALS", "FILES", "ENVIRONMENT", "EXIT STATUS", "EXAMPLES",
            "SEE ALSO")
QUEUE_SUBCOMMANDS = {
    "list": ("--status", "--domain", "--older-than", "--json"),
    "show": ("--body",),
    "export": (),
    "retry": ("--all", "--domain"),
    "hold": (), "release": (), "delete": (), "bounce": (),
    "stats": ("--json",),
    "purge": ("--older-than",),
}
SENDMAIL_OPTIONS = ("-t", "-f", "-F", "-i", "-C")
STATES = ("queued", "deferred", "held", "delivered", "bounced")


class Staging:
    """A temporary DESTDIR, removed after the test (kept on failure)."""

    proc = None

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="sluice-install-")
        sluicetest._cleanups.append(self)

    def path(self, rel):
        return os.path.join(self.dir, rel.lstrip("/"))

    def cleanup(self, keep):
        if keep:
            print("#   kept %s" % self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def make(*args):
    """Run make in the tree with this BUILD, never remaking the binary."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    cmd = ["make", "-s", "--no-print-directory", "-o",
           os.path.join(BUILD, "sluice"), "BUILD=" + BUILD] + list(args)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def install(dest, *args):
    r = make("install", "DESTDIR=" + dest.dir, *args)
    assert r.returncode == 0, "make install %s failed (%d): %s" % (
        " ".join(args), r.returncode, r.stderr[-2000:])
    return r


def run(argv, **kw):
    """subprocess.run, failing on a sanitizer report in the output."""
    kw.setdefault("capture_output", True)
    kw.setdefault("timeout", 60)
    r = subprocess.run(argv, **kw)
    err = r.stderr if isinstance(r.stderr, bytes) else r.stderr.encode()
    for pat in SANITIZER_PATTERNS:
        assert pat not in err, "sanitizer report from %s:\n%s" % (
            argv[0], err.decode(errors="replace")[-3000:])
    return r


def read(path):
    with open(path, "rb") as f:
        return f.read()


def src(rel):
    return os.path.join(ROOT, rel)


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def tree(root):
    """{relative path: (kind, mode)} of everything under root."""
    out = {}
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(d, n)
            st = os.lstat(p)
            kind = ("link" if stat.S_ISLNK(st.st_mode) else
                    "dir" if stat.S_ISDIR(st.st_mode) else "file")
            out[os.path.relpath(p, root)] = (kind, stat.S_IMODE(st.st_mode))
    return out


def doc_files():
    names = ["README.md"] + ["docs/" + n for n in os.listdir(src("docs"))
                             if n.endswith(".md")]
    return sorted(names)


def expected_tree(prefix, sysconfdir="/etc"):
    pre, etc = prefix.strip("/"), sysconfdir.strip("/")
    files = {pre + "/sbin/sluice": 0o755,
             pre + "/share/man/man8/sluice.8": 0o644,
             pre + "/share/doc/sluice/sluice.service": 0o644,
             pre + "/share/doc/sluice/sluice.conf.example": 0o644,
             etc + "/sluice/sluice.conf.example": 0o644}
    for d in doc_files():
        files[pre + "/share/doc/sluice/" + os.path.basename(d)] = 0o644
    out = {p: ("file", m) for p, m in files.items()}
    for p in list(files):
        d = os.path.dirname(p)
        while d:
            out[d] = ("dir", 0o755)
            d = os.path.dirname(d)
    return out


# ---- the systemd unit ----

def unit_props(text):
    """{key: [values]} of a unit file (all sections; keys are unique
    across the sections of this unit)."""
    props = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;[":
            continue
        k, _, v = line.partition("=")
        props.setdefault(k.strip(), []).append(v.strip())
    return props


def seconds(value):
    m = re.fullmatch(r"(\d+)\s*(s|min|m)?", value)
    assert m, "cannot read the duration %r" % value
    return int(m.group(1)) * (60 if m.group(2) in ("min", "m") else 1)


# ---- the man page ----

def render_man(path, width="2000n"):
    """The page as plain text on long lines, without hyphenation."""
    r = run(["groff", "-man", "-Tascii", "-rLL=" + width, "-rHY=0", "-ww",
             path], text=True)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    return re.sub(r".\x08", "", r.stdout)


def man_section(text, name):
    m = re.search(r"^%s\n(.*?)(?=^[A-Z][A-Z ]+\n|\Z)" % re.escape(name),
                  text, re.S | re.M)
    assert m, "no section %s" % name
    return m.group(1)


def unknown_keys(keys):
    """The keys `sluice check-config` reports as unknown."""
    with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as f:
        for k in keys:
            f.write("%s = x\n" % k)
    try:
        r = run([BIN, "check-config", "-c", f.name], text=True,
                env=clean_env())
        return re.findall(r'unknown key "([^"]+)"', r.stderr)
    finally:
        os.unlink(f.name)


def clean_env(extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env.update(extra or {})
    return env


# ---- the Dockerfile ----

def dockerfile():
    """[(stage index, INSTRUCTION, arguments)], continuations joined."""
    out, stage, cur = [], -1, ""
    for line in open(src("Dockerfile")).read().splitlines():
        if not cur and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if cur and line.lstrip().startswith("#"):
            continue
        if line.endswith("\\"):
            cur += line[:-1] + " "
            continue
        cur += line
        instr, _, args = cur.strip().partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            stage += 1
        out.append((stage, instr, args.strip()))
        cur = ""
    assert not cur, "the Dockerfile ends inside a continuation"
    return out


def instrs(df, name, stage=None):
    return [a for s, i, a in df if i == name and (stage is None or s == stage)]


def one(df, name, stage=None):
    found = instrs(df, name, stage)
    assert len(found) == 1, "%d %s instructions: %r" % (len(found), name, found)
    return found[0]


def docker_env(df):
    """The image's settings: its sluice.conf, then its ENV over it."""
    env = {}
    assert "docs/sluice-container.conf /etc/sluice/sluice.conf" in instrs(df, "COPY", 1)
    for line in open(src("docs/sluice-container.conf")):
        line = line.split("#")[0].strip()
        if line:
            k, _, v = line.partition("=")
            env["SLUICE_" + k.strip().upper()] = v.strip()
    for a in instrs(df, "ENV", 1):
        for word in shlex.split(a):
            k, eq, v = word.partition("=")
            assert eq, "ENV %r is not KEY=VALUE" % word
            env[k] = v
    return env


def apt_installs(df, stage):
    pkgs = []
    for a in instrs(df, "RUN", stage):
        for cmd in re.split(r"&&|;", a):
            words = shlex.split(cmd)
            if "apt-get" in words and "install" in words:
                pkgs += [w for w in words[words.index("install") + 1:]
                         if not w.startswith("-")]
    return pkgs


def dockerignore_patterns():
    pats = []
    for line in open(src(".dockerignore")):
        line = line.strip()
        if line and not line.startswith("#"):
            assert not line.startswith("!"), "exceptions are not handled here"
            pats.append(os.path.normpath(line))
    return pats


def ignored(path, pats):
    """Docker's rule: a path is excluded when it or a parent matches."""
    def rx(p):
        out = ""
        i = 0
        while i < len(p):
            if p.startswith("**/", i):
                out += "(?:.*/)?"
                i += 3
            elif p.startswith("**", i):
                out += ".*"
                i += 2
            elif p[i] == "*":
                out += "[^/]*"
                i += 1
            elif p[i] == "?":
                out += "[^/]"
                i += 1
            else:
                out += re.escape(p[i])
                i += 1
        return re.compile(out + r"\Z")
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return any(rx(p).match(q) for p in pats for q in prefixes)


def have(cmd):
    return shutil.which(cmd) is not None


def apt_works():
    return (have("apt-cache") and have("dpkg") and
            run(["apt-cache", "show", "libc6"]).returncode == 0)


def owners(paths):
    """{path: {packages}} from dpkg -S ("pkg:arch, pkg2: /path" lines).
    Each path is also tried with and without /usr (merged /usr)."""
    alt = {}
    for p in paths:
        alt[p] = p
        alt[p[4:] if p.startswith("/usr/") else "/usr" + p] = p
    r = run(["dpkg", "-S"] + sorted(alt), text=True)
    out = {p: set() for p in paths}
    for line in r.stdout.splitlines():
        if ": " in line:
            pkgs, path = line.rsplit(": ", 1)
            if path in alt:
                out[alt[path]] |= {p.split(":")[0] for p in pkgs.split(", ")}
    return out


# =====================================================================
# make install


@test
def install_puts_every_file_in_place_with_its_mode():
    dest = Staging()
    r = install(dest, "PREFIX=/usr")
    got = tree(dest.dir)
    want = expected_tree("/usr")
    assert got == want, "unexpected: %r; missing: %r" % (
        sorted(set(got.items()) - set(want.items())),
        sorted(set(want.items()) - set(got.items())))
    assert read(dest.path("usr/sbin/sluice")) == read(BIN)
    assert read(dest.path("etc/sluice/sluice.conf.example")) == read(src("config.example"))
    assert read(dest.path("usr/share/doc/sluice/sluice.conf.example")) == read(src("config.example"))
    for d in doc_files():
        assert read(dest.path("usr/share/doc/sluice/" + os.path.basename(d))) == read(src(d)), d
    # The man page and the unit are rewritten for PREFIX=/usr.
    for p in ("usr/share/man/man8/sluice.8", "usr/share/doc/sluice/sluice.service"):
        assert b"/usr/local/" not in read(dest.path(p)), p
    assert "no /etc/sluice/sluice.conf yet" in r.stdout, r.stdout


@test
def installed_binary_runs():
    dest = Staging()
    install(dest, "PREFIX=/usr")
    r = run([dest.path("usr/sbin/sluice"), "version"], text=True)
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"sluice \d+\.\d+\.\d+\S*\n", r.stdout), r.stdout
    assert r.stdout == run([BIN, "version"], text=True).stdout


@test
def install_never_touches_sluice_conf():
    dest = Staging()
    os.makedirs(dest.path("etc/sluice"))
    with open(dest.path("etc/sluice/sluice.conf"), "w") as f:
        f.write("# mine\nlisten = 127.0.0.1:2526\n")
    os.chmod(dest.path("etc/sluice/sluice.conf"), 0o640)
    with open(dest.path("etc/sluice/sluice.conf.example"), "w") as f:
        f.write("# an old example\n")
    r = install(dest, "PREFIX=/usr")
    assert read(dest.path("etc/sluice/sluice.conf")) == b"# mine\nlisten = 127.0.0.1:2526\n"
    assert mode(dest.path("etc/sluice/sluice.conf")) == 0o640
    assert read(dest.path("etc/sluice/sluice.conf.example")) == read(src("config.example"))
    assert "sluice.conf yet" not in r.stdout, r.stdout
    # Installing twice is fine and changes nothing.
    before = tree(dest.dir)
    install(dest, "PREFIX=/usr")
    assert tree(dest.dir) == before


@test
def install_builds_first_in_a_fresh_tree():
    fresh = Staging()
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    r = run(["make", "-n", "--no-print-directory", "install",
             "BUILD=" + fresh.path("build"), "DESTDIR=" + fresh.path("root")],
            cwd=ROOT, env=env, text=True)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    compile_at = next(i for i, l in enumerate(lines) if " -c -o " in l)
    link_at = next(i for i, l in enumerate(lines)
                   if re.search(r" -o %s\b" % re.escape(fresh.path("build/sluice")), l))
    install_at = next(i for i, l in enumerate(lines)
                      if l.startswith("install -m 0755 ") and "/sbin/sluice" in l)
    assert compile_at < link_at < install_at, r.stdout[:2000]


@test
def sysconfdir_moves_the_example_and_the_units_config():
    dest = Staging()
    install(dest, "PREFIX=/opt/sluice", "SYSCONFDIR=/opt/etc")
    assert os.path.isfile(dest.path("opt/etc/sluice/sluice.conf.example"))
    assert not os.path.exists(dest.path("etc"))
    props = unit_props(read(dest.path("opt/sluice/share/doc/sluice/sluice.service")).decode())
    assert props["ExecStart"] == ["/opt/sluice/sbin/sluice serve -c /opt/etc/sluice/sluice.conf"], props
    # The man page keeps /etc: sluice's built-in default is /etc/sluice/sluice.conf.
    man = read(dest.path("opt/sluice/share/man/man8/sluice.8")).decode()
    assert "/etc/sluice/sluice.conf" in man and "/opt/sluice/sbin/sluice" in man


# =====================================================================
# the sendmail link


@test
def sendmail_link_works():
    dest = Staging()
    r = install(dest, "PREFIX=/usr", "SENDMAIL_LINK=yes")
    link = dest.path("usr/sbin/sendmail")
    assert os.path.islink(link) and os.readlink(link) == "sluice", r.stdout
    assert os.path.samefile(link, dest.path("usr/sbin/sluice"))
    install(dest, "PREFIX=/usr", "SENDMAIL_LINK=yes")   # again: fine
    assert os.readlink(link) == "sluice"
    # No recipients and no -t: a usage error, EX_USAGE.
    r = run([link], input=b"Subject: x\n\nbody\n", env=clean_env())
    assert r.returncode == EX_USAGE, "sendmail without recipients exited %d: %s" % (
        r.returncode, r.stderr.decode(errors="replace")[-500:])
    # Without SENDMAIL_LINK there is no link.
    plain = Staging()
    install(plain, "PREFIX=/usr")
    assert not os.path.lexists(plain.path("usr/sbin/sendmail"))


@test
def foreign_sendmail_is_kept_without_force():
    dest = Staging()
    os.makedirs(dest.path("usr/sbin"))
    foreign = dest.path("usr/sbin/sendmail")
    with open(foreign, "w") as f:
        f.write("#!/bin/sh\necho another MTA\n")
    os.chmod(foreign, 0o755)
    r = make("install", "DESTDIR=" + dest.dir, "PREFIX=/usr", "SENDMAIL_LINK=yes")
    assert r.returncode != 0, "a foreign sendmail was replaced"
    assert "FORCE=yes" in r.stderr and "sendmail" in r.stderr, r.stderr
    assert not os.path.islink(foreign)
    assert read(foreign) == b"#!/bin/sh\necho another MTA\n"
    # A link to another MTA is foreign too.
    os.unlink(foreign)
    os.symlink("/usr/sbin/exim4", foreign)
    r = make("install", "DESTDIR=" + dest.dir, "PREFIX=/usr", "SENDMAIL_LINK=yes")
    assert r.returncode != 0 and os.readlink(foreign) == "/usr/sbin/exim4", r.stderr
    # FORCE=yes replaces it.
    install(dest, "PREFIX=/usr", "SENDMAIL_LINK=yes", "FORCE=yes")
    assert os.readlink(foreign) == "sluice"
    # A typo is an error, not a silent no.
    r = make("install", "DESTDIR=" + dest.dir, "PREFIX=/usr", "SENDMAIL_LINK=ye")
    assert r.returncode != 0 and "SENDMAIL_LINK" in r.stderr, r.stderr


# =====================================================================
# the man page


@test
def man_page_renders_without_warnings():
    dest = Staging()
    install(dest, "PREFIX=/usr")
    for page in (src("docs/sluice.8"), dest.path("usr/share/man/man8/sluice.8")):
        r = run(["groff", "-man", "-Tutf8", "-ww", "-z", page], text=True)
        assert r.returncode == 0 and r.stderr == "", "%s: %s" % (page, r.stderr)
        if have("man"):
            r = run(["man", "--warnings", "-l", page], text=True,
                    env=dict(os.environ, MANWIDTH="80", MANPAGER="cat", PAGER="cat",
                             LC_ALL="C.UTF-8"))
            assert r.returncode == 0 and r.stderr == "", "%s: %s" % (page, r.stderr)
            assert "sluice - SMTP mail relay" in r.stdout, r.stdout[:300]
    text = render_man(src("docs/sluice.8"))
    heads = re.findall(r"^([A-Z][A-Z ]+)$", text, re.M)
    assert tuple(heads) == SECTIONS, heads


@test
def man_page_documents_every_command_and_option():
    text = render_man(src("docs/sluice.8"))
    commands = man_section(text, "COMMANDS")
    # Every command of `sluice help`, as a tag in COMMANDS.
    helptext = run([BIN, "help"], text=True, env=clean_env()).stdout
    names = re.findall(r"^  ([a-z][a-z-]+)", helptext, re.M)
    assert {"serve", "check-config", "queue", "sendmail", "health"} <= set(names), names
    for n in names:
        assert re.search(r"^ +%s\b" % re.escape(n), commands, re.M), "command %s" % n
    for sub, opts in QUEUE_SUBCOMMANDS.items():
        m = re.search(r"^ +queue %s\b(.*)$" % sub, commands, re.M)
        assert m, "queue %s" % sub
        for o in opts:
            assert re.search(r"(^|[ \[])%s\b" % re.escape(o), m.group(1)), "queue %s %s" % (sub, o)
    for o in SENDMAIL_OPTIONS:
        assert re.search(r"^ +%s\b" % re.escape(o), commands, re.M), "sendmail %s" % o
        assert re.search(r"\[%s\b" % re.escape(o), man_section(text, "SYNOPSIS")), o
    for s in STATES:
        assert re.search(r"\b%s\b" % s, commands), s
    signals = man_section(text, "SIGNALS")
    for s in ("SIGHUP", "SIGTERM", "SIGINT"):
        assert s in signals, s
    codes = re.findall(r"^ +(\d+) ", man_section(text, "EXIT STATUS"), re.M)
    assert {"0", "1", "2", "64", "67", "69", "75"} <= set(codes), codes
    env = man_section(text, "ENVIRONMENT")
    assert "SLUICE_CONFIG" in env and "SLUICE_KEY" in env, env


@test
def man_page_names_only_real_config_keys():
    text = render_man(src("docs/sluice.8"))
    conf = man_section(text, "CONFIGURATION")
    tags = re.findall(r"^ {7}([a-z_]+(?:, [a-z_]+)*)(?: |$)", conf, re.M)
    keys = {k for t in tags for k in t.split(", ")}
    for k in ("hostname", "listen", "queue_path", "relay_networks", "log_format",
              "log_level", "metrics_listen", "user", "finished_retention",
              "shutdown_grace"):
        assert k in keys, "%s not documented (found %s)" % (k, sorted(keys))
    assert unknown_keys(sorted(keys)) == [], unknown_keys(sorted(keys))
    # The example file it points at is the one make install installs.
    assert "/etc/sluice/sluice.conf.example" in conf


# =====================================================================
# the systemd unit


@test
def unit_execstart_is_the_installed_binary():
    for prefix in ("", "/usr"):
        dest = Staging()
        install(dest, *(["PREFIX=" + prefix] if prefix else []))
        sbin = (prefix or "/usr/local") + "/sbin/sluice"
        props = unit_props(read(dest.path((prefix or "/usr/local") +
                                          "/share/doc/sluice/sluice.service")).decode())
        argv = shlex.split(props["ExecStart"][0])
        assert argv == [sbin, "serve", "-c", "/etc/sluice/sluice.conf"], argv
        assert os.access(dest.path(sbin), os.X_OK), sbin
        for line in props["ExecReload"]:
            exe = shlex.split(line)[0]
            assert exe == "/bin/kill" or exe == sbin, line
    # The unit in the tree is the one for the default PREFIX.
    assert unit_props(read(src("docs/sluice.service")).decode())["ExecStart"][0].startswith(
        "/usr/local/sbin/sluice ")


@test
def unit_settings_are_consistent():
    p = unit_props(read(src("docs/sluice.service")).decode())
    assert p["Type"] == ["simple"] and p["Restart"] == ["on-failure"], p
    assert "/bin/kill -HUP $MAINPID" in p["ExecReload"], p["ExecReload"]
    assert seconds(p["TimeoutStopSec"][0]) > 30, "TimeoutStopSec must exceed shutdown_grace (30s)"
    assert p["StateDirectory"] == ["sluice"]
    assert p["ProtectSystem"] == ["strict"]
    assert "/var/lib/sluice" in p["ReadWritePaths"][0].split()
    assert set(p["RestrictAddressFamilies"][0].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    for k in ("ProtectHome", "PrivateTmp", "PrivateDevices"):
        assert p.get(k) == ["yes"], k
    user = p.get("User", ["root"])[0]
    if user not in ("root", "0"):
        # Not root: it needs the capability to bind 25, 465 and 587.
        assert "CAP_NET_BIND_SERVICE" in p["AmbientCapabilities"][0].split()
        assert "CAP_NET_BIND_SERVICE" in p["CapabilityBoundingSet"][0].split()
    else:
        # Root that drops to `user` itself: setuid/setgid must stay possible.
        caps = p.get("CapabilityBoundingSet", ["CAP_SETUID CAP_SETGID"])[0].split()
        assert {"CAP_SETUID", "CAP_SETGID"} <= set(caps), caps


if have("systemd-analyze"):
    @test
    def unit_passes_systemd_analyze_verify():
        dest = Staging()
        install(dest, "PREFIX=/usr")
        text = read(dest.path("usr/share/doc/sluice/sluice.service")).decode()
        text = text.replace("/usr/sbin/sluice", dest.path("usr/sbin/sluice"))
        os.makedirs(dest.path("verify"))
        unit = dest.path("verify/sluice.service")
        with open(unit, "w") as f:
            f.write(text)
        r = run(["systemd-analyze", "verify", unit], text=True,
                env=dict(os.environ, MANPATH=dest.path("usr/share/man"), SYSTEMD_LOG_COLOR="0"))
        assert r.returncode == 0 and r.stderr.strip() == "", r.stderr


# =====================================================================
# the Dockerfile


@test
def dockerfile_stages_build_and_copy_what_make_install_makes():
    df = dockerfile()
    froms = instrs(df, "FROM")
    assert len(froms) == 2, froms
    assert re.fullmatch(r"debian:(12|bookworm)\s+AS\s+build", froms[0], re.I), froms[0]
    assert re.fullmatch(r"debian:(12|bookworm)-slim", froms[1]), froms[1]
    build_runs = " ".join(instrs(df, "RUN", 0))
    assert re.search(r"\bmake -j\S*nproc", build_runs), build_runs
    assert "make install DESTDIR=/out PREFIX=/usr" in build_runs, build_runs
    # The build stage copies the tree; nothing it needs is ignored.
    for a in instrs(df, "COPY", 0):
        words = a.split()
        assert not any(w.startswith("--from") for w in words), a
        for s in words[:-1]:
            assert os.path.exists(src(s)), "COPY source %s does not exist" % s
    pats = dockerignore_patterns()
    needed = ["Makefile", "config.example", "README.md", "docs/sluice.8",
              "docs/sluice.service"] + doc_files()
    for d in ("common", "server", "queue", "sql", "tls", "dns"):
        needed += [d + "/" + n for n in os.listdir(src(d))]
    for n in needed:
        assert not ignored(n, pats), "%s is excluded by .dockerignore" % n
    for n in ("build/sluice", "build-asan/cli/main.o", "build-h4-tsan/sluice",
              "var/queue.db", ".git/HEAD", "bench/.cache/x"):
        assert ignored(n, pats), "%s is not excluded by .dockerignore" % n
    # The runtime stage copies files of that install, to the same paths.
    dest = Staging()
    install(dest, "PREFIX=/usr")
    copies = instrs(df, "COPY", 1)
    assert copies
    targets = []
    for a in copies:
        words = a.split()
        if words == ["docs/sluice-container.conf", "/etc/sluice/sluice.conf"]:
            continue  # the image's configuration, from the tree
        assert words[0] == "--from=build", a
        srcpath, dst = words[1], words[2]
        assert srcpath.startswith("/out/"), a
        rel = srcpath[len("/out/"):]
        assert os.path.exists(dest.path(rel)), "%s is not installed by make install" % rel
        assert dst.rstrip("/") == "/" + rel.rstrip("/"), a
        targets.append(dst)
    assert "/usr/sbin/sluice" in targets, targets


@test
def dockerfile_runtime_settings():
    df = dockerfile()
    env = docker_env(df)
    assert env["SLUICE_QUEUE_PATH"] == "/var/lib/sluice/queue.db", env
    assert "SLUICE_RELAY_NETWORKS" in env, env
    volumes = []
    for a in instrs(df, "VOLUME", 1):
        volumes += json.loads(a) if a.startswith("[") else a.split()
    assert os.path.dirname(env["SLUICE_QUEUE_PATH"]) in volumes, volumes
    # The volume's folder belongs to the user, made before VOLUME.
    runs = " ".join(instrs(df, "RUN", 1))
    user = one(df, "USER", 1)
    assert user.split(":")[0] not in ("root", "0"), user
    assert re.search(r"useradd\b[^&;]*\b%s\b" % re.escape(user.split(":")[0]), runs), runs
    assert re.search(r"install -d -o %s\b[^&;]*/var/lib/sluice" % re.escape(user), runs), runs
    order = [i for s, i, a in df if s == 1]
    assert order.index("VOLUME") > max(i for i, x in enumerate(order) if x == "RUN")
    # The listeners and EXPOSE agree, on ports any user may bind under any
    # runtime (Podman does not lower ip_unprivileged_port_start as Docker
    # does), one per kind of listener.
    listen_ports = sorted(int(re.search(r":(\d+)(/|$)", item.strip()).group(1))
                          for item in env["SLUICE_LISTEN"].split(","))
    exposed = sorted(int(p.split("/")[0]) for p in one(df, "EXPOSE", 1).split())
    assert listen_ports == exposed, (listen_ports, exposed)
    assert all(p >= 1024 for p in exposed), exposed
    kinds = sorted((item.strip().partition("/")[2] or "smtp")
                   for item in env["SLUICE_LISTEN"].split(","))
    assert kinds == ["smtp", "smtps", "submission"], kinds
    # Only loopback relays: through a published port every client may
    # appear as the bridge's gateway, a private address.
    for net in env["SLUICE_RELAY_NETWORKS"].split(","):
        n = ipaddress.ip_network(net.strip())
        assert n.is_loopback, "the image trusts %s" % n
    # Exec-form commands: sluice from PATH, serve by default.
    assert json.loads(one(df, "ENTRYPOINT")) == ["sluice"]
    assert json.loads(one(df, "CMD")) == ["serve"]
    assert one(df, "STOPSIGNAL") == "SIGTERM"
    hc = one(df, "HEALTHCHECK")
    opts = dict(re.findall(r"--([a-z-]+)=(\S+)", hc))
    assert "interval" in opts and "timeout" in opts, hc
    assert seconds(opts["timeout"]) < seconds(opts["interval"]), hc
    assert json.loads(hc[hc.index("CMD") + 3:].strip()) == ["sluice", "health"], hc
    helptext = run([BIN, "help"], text=True, env=clean_env()).stdout
    for cmd in ("serve", "health"):
        assert re.search(r"^  %s\b" % cmd, helptext, re.M), cmd


@test
def container_docs_publish_the_image_ports():
    """Every port the docs and the Dockerfile publish (docker/podman -p,
    compose ports:) is one the image listens on (or the metrics port the
    same example sets), and no command in them needs a --sysctl."""
    df = dockerfile()
    exposed = {p.split("/")[0] for p in one(df, "EXPOSE", 1).split()}
    seen = 0
    for name in ("docs/container.md", "README.md", "Dockerfile"):
        text = open(src(name)).read()
        blocks = re.findall(r"```[a-z]*\n(.*?)```", text, re.S) if name.endswith(".md") \
            else [text]
        for block in blocks:
            if re.search(r"\b(docker|podman) run\b", block):
                assert "--sysctl" not in block, "%s: %s" % (name, block)
            published = re.findall(r"-p\s+(?:[\d.]+:)?(\d+):(\d+)\b", block)
            published += re.findall(r"^\s*- \"(?:[\d.]+:)?(\d+):(\d+)\"$", block, re.M)
            for host, inside in published:
                seen += 1
                ok = inside in exposed or (
                    inside == "9025" and "METRICS_LISTEN" in block)
                assert ok, "%s publishes %s:%s; the image listens on %s" % (
                    name, host, inside, sorted(exposed))
    assert seen >= 8, seen


@test
def dockerfile_environment_is_a_valid_configuration():
    df = dockerfile()
    dest = Staging()
    conf = dest.path("empty.conf")
    open(conf, "w").close()
    r = run([BIN, "check-config", "-c", conf], text=True, env=clean_env(docker_env(df)))
    assert r.returncode == 0, r.stderr
    # The file itself, as the image reads it.
    r = run([BIN, "check-config", "-c", src("docs/sluice-container.conf")], text=True,
            env=clean_env())
    assert r.returncode == 0, r.stderr
    assert "configuration OK" in r.stdout, r.stdout
    # The variables docs/container.md tells people to set all exist.
    doc = open(src("docs/container.md")).read()
    names = set(re.findall(r"\bSLUICE_([A-Z_]+[A-Z])\b", doc)) - {"CONFIG", "KEY"}
    assert {"HOSTNAME", "SMARTHOST_PASSWORD_FILE", "METRICS_LISTEN", "LOG_FORMAT"} <= names
    keys = sorted(n.lower() for n in names)
    assert unknown_keys(keys) == [], unknown_keys(keys)


def volume_folder(df):
    """(uid, group, mode) of the image's volume folder, from the runtime
    stage's useradd and `install -d` lines."""
    runs = " ".join(instrs(df, "RUN", 1))
    user = one(df, "USER", 1).split(":")[0]
    uid = re.search(r"useradd\b[^&;]*--uid (\d+)[^&;]*\b%s\b" % re.escape(user), runs)
    m = re.search(r"install -d -o %s -g (\S+) -m ([0-7]+) /var/lib/sluice" % re.escape(user),
                  runs)
    assert uid and m, runs
    return int(uid.group(1)), m.group(1), int(m.group(2), 8)


class UidServer(sluicetest.Server):
    """A server run as `uid`:`gid` with no other group (setpriv), as
    OpenShift runs a container, on the queue folder `folder`."""

    def __init__(self, uid, gid, folder, hostname="relay.test"):
        super().__init__(start=False, config={
            "hostname": hostname,
            "queue_path": os.path.join(folder, "queue.db"),
        })
        del self.config["user"]
        self.db = self.config["queue_path"]
        os.chmod(self.dir, 0o755)
        self.ids = (str(uid), str(gid))

    def start(self, wait=True):
        self.write_config()
        self.logfile = open(self.logpath, "ab")
        self._logstart = os.path.getsize(self.logpath)
        self.proc = subprocess.Popen(
            ["setpriv", "--reuid", self.ids[0], "--regid", self.ids[1], "--clear-groups",
             BIN, "serve", "-c", self.cfgpath],
            stdout=self.logfile, stderr=self.logfile, stdin=subprocess.DEVNULL,
            env=clean_env())
        if wait:
            self.wait_log(r"info main: ready", start=self._logstart)
        return self


def queue_one(srv):
    """Queue one message for a relay domain; (queue id, DER certificate)."""
    import smtplib
    import ssl
    noverify = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    noverify.check_hostname = False
    noverify.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP(srv.host, srv.port, local_hostname="client.test") as s:
        s.starttls(context=noverify)
        der = s.sock.getpeercert(binary_form=True)
        s.ehlo()
        s.mail("a@client.test")
        assert s.rcpt("postmaster@inbound.test")[0] == 250
        code, text = s.data(b"Subject: shared volume\r\n\r\nx\r\n")
    assert code == 250, (code, text)
    return re.search(rb"queued as (\w+)", text).group(1).decode(), der


def shared_with_group_0(folder):
    """Every file sluice left in `folder` is in group 0 with the owner's
    rights for the group (the key included)."""
    names = sorted(os.listdir(folder))
    assert "queue.db" in names and "selfsigned-key.pem" in names, names
    for n in names:
        st = os.stat(os.path.join(folder, n))
        assert st.st_gid == 0, (n, st.st_gid)
        assert (st.st_mode >> 3) & 0o7 == (st.st_mode >> 6) & 0o7, (n, oct(st.st_mode))
    return names


@test
def arbitrary_uids_in_group_0_share_the_volume():
    """OpenShift runs the image as an arbitrary uid in group 0.  On folders
    made as the Dockerfile makes its volume's: one such uid queues a
    message; another uid of group 0 then starts there, finds it, queues
    more and serves TLS with the key the first one made; and one such uid
    takes over a folder the image's own user started in."""
    df = dockerfile()
    owner, group, mode = volume_folder(df)
    assert group in ("0", "root"), group
    assert mode & 0o070 == 0o070 and mode & stat.S_ISGID, oct(mode)
    top = tempfile.mkdtemp(prefix="sluice-volumes-")
    os.chmod(top, 0o755)
    try:
        vols = []
        for name in ("openshift", "image-user"):
            vols.append(os.path.join(top, name))
            os.mkdir(vols[-1])
            os.chown(vols[-1], owner, 0)
            os.chmod(vols[-1], mode)
        vol = vols[0]
        a = UidServer(100123, 0, vol)
        a.start()
        id1, der = queue_one(a)
        assert a.stop() == 0
        shared_with_group_0(vol)
        assert os.stat(os.path.join(vol, "queue.db")).st_uid == 100123

        b = UidServer(100456, 0, vol)
        b.start()
        assert b.query("select id from messages") == [(id1,)]
        id2, der2 = queue_one(b)
        assert der2 == der, "the certificate was made anew"
        assert b.stop() == 0
        assert "replacing the self-signed certificate" not in b.log(), b.log()
        assert b.query("select id from messages order by id") == sorted([(id1,), (id2,)])
        shared_with_group_0(vol)

        # The image's own user first (uid and gid 2525), then uid 100789:0.
        vol = vols[1]
        c = UidServer(owner, owner, vol)
        c.start()
        id3, _ = queue_one(c)
        assert c.stop() == 0
        shared_with_group_0(vol)
        d = UidServer(100789, 0, vol)
        d.start()
        queue_one(d)
        assert d.stop() == 0
        assert id3 in [r[0] for r in d.query("select id from messages")]
    finally:
        shutil.rmtree(top, ignore_errors=True)


if apt_works():
    @test
    def dockerfile_packages_provide_the_libraries():
        df = dockerfile()
        build_pkgs, run_pkgs = set(apt_installs(df, 0)), set(apt_installs(df, 1))
        r = run(["apt-cache", "show", "--no-all-versions"] + sorted(build_pkgs | run_pkgs),
                text=True)
        known = set(re.findall(r"^Package: (\S+)$", r.stdout, re.M))
        assert known == build_pkgs | run_pkgs, "unknown: %s" % (build_pkgs | run_pkgs) - known
        # Build: the package of every pkg-config module of the Makefile.
        mk = open(src("Makefile")).read()
        mods = re.search(r"^PKGS\s*[:?]?=\s*(.*)$", mk, re.M).group(1).split()
        pcs = {}
        for m in mods:
            d = run(["pkg-config", "--variable=pcfiledir", m], text=True).stdout.strip()
            assert d, "pkg-config does not know %s" % m
            pcs[m] = os.path.join(d, m + ".pc")
        pc_owners = owners(list(pcs.values()))
        for m, pc in pcs.items():
            assert pc_owners[pc], "no package has %s" % pc
            assert pc_owners[pc] & build_pkgs, "%s (%s) is not installed by the build stage" % (
                pc, ", ".join(sorted(pc_owners[pc])))
        # Runtime: every shared library of the binary, from those packages
        # or what they depend on (sanitizer runtimes aside).
        r = run(["apt-cache", "depends", "--recurse", "--important"] + sorted(run_pkgs),
                text=True)
        closure = {l.strip() for l in r.stdout.splitlines() if not l.startswith(" ")}
        closure |= {"libc6", "libgcc-s1"}
        ldd = run(["ldd", BIN], text=True).stdout
        libs = re.findall(r"^\s*\S+\.so[.\d]* => (/\S+)", ldd, re.M)
        assert any("libsqlite3" in l for l in libs), ldd
        sanitizer = re.compile(r"lib(asan|ubsan|tsan|lsan|stdc\+\+)")
        lib_owners = owners(libs)
        for lib in libs:
            if sanitizer.match(os.path.basename(lib)):
                continue
            assert lib_owners[lib], "no package has %s" % lib
            assert lib_owners[lib] & closure, "%s (%s) is not in the runtime stage" % (
                lib, ", ".join(sorted(lib_owners[lib])))


if __name__ == "__main__":
    main()
