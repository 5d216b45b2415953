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


class DanePKI:
    """A root CA, an intermediate CA under it, and server certificates
    (leaf + intermediate in one file, as a server sends its chain) made
    with certtool, for the DANE tests: leaf(name, expired=False).  The
    TLSA association data: spki_sha256(cert) (3 1 1), der_sha256(cert)
    (2 0 1, of self.inter)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="sluice-dane-")
        atexit.register(shutil.rmtree, self.dir, True)
        self.n = 0
        self.root, self.root_key = self._make("root", ["cn = \"dane test root\"", "ca",
                                                       "cert_signing_key"])
        self.inter, self.inter_key = self._make("inter", ["cn = \"dane test intermediate\"",
                                                          "ca", "cert_signing_key"],
                                                self.root, self.root_key)

    def _make(self, tag, lines, ca=None, ca_key=None, expired=False):
        self.n += 1
        key = os.path.join(self.dir, "%s-%d.key" % (tag, self.n))
        cert = os.path.join(self.dir, "%s-%d.pem" % (tag, self.n))
        tmpl = os.path.join(self.dir, "%s-%d.tmpl" % (tag, self.n))
        _run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key)
        dates = (['activation_date = "2020-01-01 00:00:00"',
                  'expiration_date = "2021-01-01 00:00:00"'] if expired
                 else ["expiration_days = 30"])
        with open(tmpl, "w") as f:
            f.write("\n".join(lines + dates + ["serial = %d" % (100 + self.n)]) + "\n")
        args = (["certtool", "--generate-self-signed"] if ca is None else
                ["certtool", "--generate-certificate", "--load-ca-certificate", ca,
                 "--load-ca-privkey", ca_key])
        subprocess.run(args + ["--load-privkey", key, "--template", tmpl, "--outfile", cert],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return cert, key

    def leaf(self, name, expired=False, also=()):
        """(chain file, key file) of a server certificate for `name` (and
        the names in `also`)."""
        cert, key = self._make("leaf", ['cn = "%s"' % name] +
                               ['dns_name = "%s"' % n for n in (name,) + tuple(also)] +
                               ["tls_www_server", "signing_key"],
                               self.inter, self.inter_key, expired)
        chain = cert[:-4] + "-chain.pem"
        with open(chain, "w") as f:
            f.write(open(cert).read() + open(self.inter).read())
        return chain, key


def _der(cert_pem):
    return subprocess.run(["openssl", "x509", "-in", cert_pem, "-outform", "DER"],
                          check=True, capture_output=True).stdout


def der_sha256(cert_pem):
    """SHA-256 of the (first) certificate of a PEM file, in hex."""
    import hashlib
    return hashlib.sha256(_der(cert_pem)).hexdigest()


def spki_sha256(cert_pem, algo="sha256"):
    """SHA-256 (or `algo`) of the SubjectPublicKeyInfo of the (first)
    certificate, in hex."""
    import hashlib
    pub = subprocess.run(["openssl", "x509", "-in", cert_pem, "-noout", "-pubkey"],
                         check=True, capture_output=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub,
                         check=True, capture_output=True).stdout
    return hashlib.new(algo, der).hexdigest()
