"""
certs - test certificates for the TLS integration tests, made at test time
with the openssl command (ECDSA P-256 keys: fast to generate).

    pki = certs.pki()            # made once per process, removed at exit
    pki.ca                       # the test CA certificate (PEM path)
    pki.a.cert, pki.a.key        # server cert "relay.test", IP SAN 127.0.0.1
    pki.b.cert, pki.b.key        # a second one ("relay-b.test", same SANs)
    pki.a.serial                 # serial number (int), as the peer sees it
    certs.install(pki.a, dir)    # copy to dir/cert.pem, dir/key.pem
"""
import atexit
import os
import shutil
import subprocess
import tempfile

_pki = None


def _run(*args):
    subprocess.run(["openssl"] + list(args), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


class Cert:
    def __init__(self, cert, key, serial, cn):
        self.cert = cert
        self.key = key
        self.serial = serial
        self.cn = cn

    def pem(self):
        with open(self.cert) as f:
            return f.read()


class PKI:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="sluice-certs-")
        atexit.register(shutil.rmtree, self.dir, True)
        p = lambda name: os.path.join(self.dir, name)  # noqa: E731
        self.ca = p("ca.pem")
        self.ca_key = p("ca-key.pem")
        _run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", self.ca_key, "-out", self.ca, "-days", "30",
             "-subj", "/CN=sluice test CA", "-set_serial", "1",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        self.a = self._server("a", "relay.test", 0x1001)
        self.b = self._server("b", "relay-b.test", 0x2002)

    def _server(self, tag, cn, serial):
        cert = os.path.join(self.dir, "%s-cert.pem" % tag)
        key = os.path.join(self.dir, "%s-key.pem" % tag)
        _run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", key, "-out", cert, "-days", "30",
             "-subj", "/CN=%s" % cn, "-set_serial", str(serial),
             "-CA", self.ca, "-CAkey", self.ca_key,
             "-addext", "subjectAltName=%s,IP:127.0.0.1" % ",".join(
                 "DNS:" + n for n in dict.fromkeys([cn, "relay.test"])),
             "-addext", "basicConstraints=critical,CA:FALSE",
             "-addext", "keyUsage=critical,digitalSignature",
             "-addext", "extendedKeyUsage=serverAuth")
        return Cert(cert, key, serial, cn)


def pki():
    """The test PKI, generated on first use."""
    global _pki
    if _pki is None:
        _pki = PKI()
    return _pki


def install(cert, folder, name="cert.pem", keyname="key.pem"):
    """Copy a certificate and its key into `folder`; returns their paths.
    The copies are written to a temporary name and renamed, so a server
    reading them never sees a half-written file."""
    out = []
    for src, dst in ((cert.cert, name), (cert.key, keyname)):
        path = os.path.join(folder, dst)
        shutil.copyfile(src, path + ".tmp")
        os.replace(path + ".tmp", path)
        out.append(path)
    return tuple(out)


def peer_serial_and_cn(der):
    """Serial number (int) and subject CN of a DER certificate."""
    r = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-serial", "-subject",
                        "-nameopt", "multiline"], input=der, check=True,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    serial = cn = None
    for line in r.stdout.decode().splitlines():
        line = line.strip()
        if line.startswith("serial="):
            serial = int(line.split("=", 1)[1], 16)
        elif line.startswith("commonName"):
            cn = line.split("=", 1)[1].strip()
    return serial, cn
