"""
pgcluster - a real PostgreSQL server for tests: Debian's postgresql,
initdb in a temporary folder (as the `postgres` user when running as
root), started with pg_ctl on 127.0.0.1 and a free high port, fsync on.
Each test takes a database of its own (new_db).  The server is stopped by
the PID in its postmaster.pid, never by name.

    with pgcluster.Cluster() as pg:
        uri = pg.new_db()          # postgresql://postgres@127.0.0.1:P/db_N
        pg.sql(uri, "select 1")

Used by test_pg.py, and by tests/run.sh's PostgreSQL pass, which starts
one cluster and exports its URI as SLUICE_TEST_PG: sluicetest.Server then
puts each server's queue in a new database of it.
"""
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time

import psycopg2

import sluicetest


def _bindir():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    return os.path.dirname(found[-1])


def _as_postgres():
    """preexec_fn for the server's tools: initdb refuses to run as root."""
    if os.getuid() != 0:
        return None
    pw = pwd.getpwnam("postgres")

    def drop():
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
    return drop


class Cluster:
    def __init__(self, fsync=True, settings=None, base=None):
        self.bindir = _bindir()
        if base is not None:
            os.makedirs(base)
            self.dir = base
        else:
            self.dir = tempfile.mkdtemp(prefix="sluice-pg-")
        self.data = os.path.join(self.dir, "data")
        self.port = sluicetest.free_port()
        self.fsync = fsync
        self.settings = settings or {}
        self.ndb = 0
        if os.getuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        subprocess.run([os.path.join(self.bindir, "initdb"), "-D", self.data, "-U", "postgres",
                        "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"],
                       check=True, capture_output=True, preexec_fn=_as_postgres(), timeout=120)
        self.start()

    def start(self):
        opts = ["-c", "listen_addresses=127.0.0.1", "-c", "port=%d" % self.port,
                "-c", "unix_socket_directories=%s" % self.dir,
                "-c", "fsync=%s" % ("on" if self.fsync else "off"),
                "-c", "max_connections=200", "-c", "shared_buffers=64MB"]
        for k, v in self.settings.items():
            opts += ["-c", "%s=%s" % (k, v)]
        subprocess.run([os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-w", "-t", "60",
                        "-l", os.path.join(self.dir, "log"), "-o", " ".join(opts), "start"],
                       check=True, capture_output=True, preexec_fn=_as_postgres(), timeout=90)

    def pid(self):
        try:
            with open(os.path.join(self.data, "postmaster.pid")) as f:
                return int(f.readline())
        except (OSError, ValueError):
            return None

    def stop(self, mode=signal.SIGINT, timeout=60):
        """Stop the postmaster by its PID (SIGINT: fast shutdown)."""
        pid = self.pid()
        if pid is None:
            return
        try:
            os.kill(pid, mode)
        except ProcessLookupError:
            return
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)

    def restart(self):
        self.stop()
        self.start()

    def uri(self, db="postgres"):
        return "postgresql://postgres@127.0.0.1:%d/%s" % (self.port, db)

    def new_db(self):
        self.ndb += 1
        name = "q%d_%d" % (os.getpid(), self.ndb)
        self.sql(self.uri(), "CREATE DATABASE %s" % name, autocommit=True)
        return self.uri(name)

    def sql(self, uri, query, args=(), autocommit=False):
        return run_sql(uri, query, args, autocommit)

    def log(self):
        try:
            with open(os.path.join(self.dir, "log")) as f:
                return f.read()
        except OSError:
            return ""

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _execute(cur, query, args):
    """sqlite3's ? placeholders become psycopg2's %s (and a literal % is
    doubled) when there are arguments."""
    if args:
        cur.execute(query.replace("%", "%%").replace("?", "%s"), args)
    else:
        cur.execute(query)


def run_sql(uri, query, args=(), autocommit=False):
    """Run one statement (sqlite3's ? placeholders are accepted); the rows
    as tuples, or [] for a statement without any."""
    con = psycopg2.connect(uri, connect_timeout=10)
    try:
        con.autocommit = autocommit
        with con.cursor() as cur:
            _execute(cur, query, args)
            rows = cur.fetchall() if cur.description is not None else []
        if not autocommit:
            con.commit()
        return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r)
                for r in rows]
    finally:
        con.close()


def run_many(uri, statements):
    """(query, args) pairs in one transaction."""
    con = psycopg2.connect(uri, connect_timeout=10)
    try:
        with con.cursor() as cur:
            for query, args in statements:
                _execute(cur, query, args)
        con.commit()
    finally:
        con.close()


if __name__ == "__main__":
    # tests/run.sh: `start DIR` prints the cluster's URI and the
    # postmaster's PID; `stop DIR PID` stops it by that PID and removes DIR.
    import sys
    if sys.argv[1] == "start":
        c = Cluster(base=sys.argv[2])
        print(c.uri())
        print(c.pid())
    else:
        pid = int(sys.argv[3])
        try:
            os.kill(pid, signal.SIGINT)
            for _ in range(600):
                os.kill(pid, 0)
                time.sleep(0.1)
        except ProcessLookupError:
            pass
        shutil.rmtree(sys.argv[2], ignore_errors=True)
