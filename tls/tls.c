/*
 * tls.c - GnuTLS credentials, self-signed certificates and the holder used
 * for reloads (see tls.h).
 *
 * Shared state: a tls_creds' refcount (atomic).
 */
#include "tls.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <gnutls/crypto.h>
#include <gnutls/x509.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct tls_creds {
	atomic_int refs;
	gnutls_certificate_credentials_t x509;
	gnutls_priority_t prio;
};

int
tls_priority_check(const char *priority, char *why)
{
	gnutls_priority_t p;
	const char *err = NULL;
	int rc = gnutls_priority_init(&p, priority, &err);

	if (rc != GNUTLS_E_SUCCESS) {
		why_set(why, "bad tls_priority near \"%.40s\": %s",
		    err ? err : "", gnutls_strerror(rc));
		return -1;
	}
	gnutls_priority_deinit(p);
	return 0;
}

/*
 * Does the first certificate in `cert` carry the public half of `key`?
 * Checked before GnuTLS loads the pair: its own check for this case leaks
 * the certificate it parsed (GnuTLS 3.7), and a reload may hit it.
 */
static int
key_matches(const char *cert, const char *key, char *why)
{
	gnutls_datum_t cdata = {NULL, 0}, kdata = {NULL, 0};
	gnutls_x509_crt_t crt = NULL;
	gnutls_x509_privkey_t pk = NULL;
	unsigned char cid[64], kid[64];
	size_t clen = sizeof(cid), klen = sizeof(kid);
	int rc, ret = -1;

	if ((rc = gnutls_load_file(cert, &cdata)) < 0 ||
	    (rc = gnutls_load_file(key, &kdata)) < 0 ||
	    (rc = gnutls_x509_crt_init(&crt)) < 0 ||
	    (rc = gnutls_x509_crt_import(crt, &cdata, GNUTLS_X509_FMT_PEM)) <
	        0 ||
	    (rc = gnutls_x509_privkey_init(&pk)) < 0 ||
	    (rc = gnutls_x509_privkey_import2(
	         pk, &kdata, GNUTLS_X509_FMT_PEM, NULL, 0)) < 0 ||
	    (rc = gnutls_x509_crt_get_key_id(crt, 0, cid, &clen)) < 0 ||
	    (rc = gnutls_x509_privkey_get_key_id(pk, 0, kid, &klen)) < 0) {
		why_set(why, "cannot load certificate %s with key %s: %s", cert,
		    key, gnutls_strerror(rc));
		goto out;
	}
	if (clen != klen || memcmp(cid, kid, clen) != 0) {
		why_set(why, "certificate %s does not match key %s", cert, key);
		goto out;
	}
	ret = 0;
out:
	if (pk != NULL)
		gnutls_x509_privkey_deinit(pk);
	if (crt != NULL)
		gnutls_x509_crt_deinit(crt);
	gnutls_free(kdata.data);
	gnutls_free(cdata.data);
	return ret;
}

/* New credentials with no certificate yet; NULL with `why`. */
static struct tls_creds *
creds_new(char *why)
{
	struct tls_creds *c = xcalloc(1, sizeof(*c));
	int rc = gnutls_certificate_allocate_credentials(&c->x509);

	if (rc != GNUTLS_E_SUCCESS) {
		why_set(why, "%s", gnutls_strerror(rc));
		free(c);
		return NULL;
	}
	atomic_init(&c->refs, 1);
	return c;
}

/* Compile `priority` into `c`, or free `c` and return NULL with `why`. */
static struct tls_creds *
creds_finish(struct tls_creds *c, const char *priority, char *why)
{
	const char *err = NULL;
	int rc = gnutls_priority_init(&c->prio, priority, &err);

	if (rc != GNUTLS_E_SUCCESS) {
		why_set(why, "bad tls_priority near \"%.40s\": %s",
		    err ? err : "", gnutls_strerror(rc));
		gnutls_certificate_free_credentials(c->x509);
		free(c);
		return NULL;
	}
	return c;
}

struct tls_creds *
tls_creds_load(
    const char *cert, const char *key, const char *priority, char *why)
{
	struct tls_creds *c;
	int rc;

	if (key_matches(cert, key, why) != 0 || (c = creds_new(why)) == NULL)
		return NULL;
	rc = gnutls_certificate_set_x509_key_file2(
	    c->x509, cert, key, GNUTLS_X509_FMT_PEM, NULL, 0);
	if (rc < 0) {
		why_set(why, "cannot load certificate %s with key %s: %s", cert,
		    key, gnutls_strerror(rc));
		gnutls_certificate_free_credentials(c->x509);
		free(c);
		return NULL;
	}
	return creds_finish(c, priority, why);
}

void
tls_creds_ref(struct tls_creds *c)
{
	atomic_fetch_add(&c->refs, 1);
}

void
tls_creds_unref(struct tls_creds *c)
{
	if (c == NULL || atomic_fetch_sub(&c->refs, 1) != 1)
		return;
	gnutls_priority_deinit(c->prio);
	gnutls_certificate_free_credentials(c->x509);
	free(c);
}

void *
tls_creds_x509(const struct tls_creds *c)
{
	return c->x509;
}

void *
tls_creds_priority(const struct tls_creds *c)
{
	return c->prio;
}

/*
 * Write `data` to `path` with `mode` (as shared_file_mode makes it, whatever
 * the umask) atomically via a temp file.  A temp file left by a crash,
 * perhaps by another uid of a shared folder, is removed first.
 */
static int
write_file(const char *path, const gnutls_datum_t *data, mode_t mode, char *why)
{
	char tmp[4096];
	int fd, rc = -1;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	mode = shared_file_mode(path, mode);
	(void)unlink(tmp);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (fd < 0) {
		why_set(why, "cannot create %s: %s", tmp, strerror(errno));
		return -1;
	}
	if (fchmod(fd, mode) != 0 ||
	    write(fd, data->data, data->size) != (ssize_t)data->size ||
	    fsync(fd) != 0) {
		why_set(why, "cannot write %s: %s", tmp, strerror(errno));
		goto out;
	}
	if (rename(tmp, path) != 0) {
		why_set(why, "cannot rename %s: %s", tmp, strerror(errno));
		goto out;
	}
	rc = 0;
out:
	close(fd);
	if (rc != 0)
		unlink(tmp);
	return rc;
}

/*
 * May the pair at `cert` and `key` be kept for `hostname`?  Both files
 * readable, the key matching the certificate (the key is written first: a
 * crash between the two writes leaves a new key beside the old
 * certificate), and the certificate's CN, which tls_selfsigned_ensure sets
 * to the host name, equal to `hostname`.  0 when it may; -1 with the
 * reason in `why`, left empty when neither file exists (a first start).
 */
static int
selfsigned_reusable(
    const char *cert, const char *key, const char *hostname, char *why)
{
	gnutls_datum_t data = {NULL, 0};
	gnutls_x509_crt_t crt = NULL;
	char cn[256], safe[128];
	size_t cnlen = sizeof(cn);
	int rc, ret = -1;

	why[0] = '\0';
	if (access(cert, F_OK) != 0 && access(key, F_OK) != 0)
		return -1;
	if (key_matches(cert, key, why) != 0)
		return -1;
	if ((rc = gnutls_load_file(cert, &data)) < 0 ||
	    (rc = gnutls_x509_crt_init(&crt)) < 0 ||
	    (rc = gnutls_x509_crt_import(crt, &data, GNUTLS_X509_FMT_PEM)) <
	        0 ||
	    (rc = gnutls_x509_crt_get_dn_by_oid(
	         crt, GNUTLS_OID_X520_COMMON_NAME, 0, 0, cn, &cnlen)) < 0) {
		why_set(why, "cannot read the name in %s: %s", cert,
		    gnutls_strerror(rc));
		goto out;
	}
	if (ascii_casecmp(cn, hostname) != 0) {
		log_sanitize(safe, sizeof(safe), cn);
		why_set(
		    why, "%s was made for %s, not %s", cert, safe, hostname);
		goto out;
	}
	ret = 0;
out:
	if (crt != NULL)
		gnutls_x509_crt_deinit(crt);
	gnutls_free(data.data);
	return ret;
}

int
tls_selfsigned_ensure(
    const char *cert, const char *key, const char *hostname, char *why)
{
	gnutls_x509_privkey_t pk = NULL;
	gnutls_x509_crt_t crt = NULL;
	gnutls_datum_t kpem = {NULL, 0}, cpem = {NULL, 0};
	unsigned char serial[16];
	char reason[WHY_MAX];
	time_t now = time(NULL);
	int rc, ret = -1;

	if (selfsigned_reusable(cert, key, hostname, reason) == 0)
		return 0;
	if (reason[0] != '\0')
		log_info(
		    "tls", "replacing the self-signed certificate: %s", reason);
	if ((rc = gnutls_x509_privkey_init(&pk)) < 0 ||
	    (rc = gnutls_x509_privkey_generate(pk, GNUTLS_PK_RSA, 2048, 0)) <
	        0 ||
	    (rc = gnutls_x509_crt_init(&crt)) < 0)
		goto gnutls_fail;
	(void)gnutls_rnd(GNUTLS_RND_NONCE, serial, sizeof(serial));
	serial[0] &= 0x7f; /* a positive serial number */
	if ((rc = gnutls_x509_crt_set_version(crt, 3)) < 0 ||
	    (rc = gnutls_x509_crt_set_serial(crt, serial, sizeof(serial))) <
	        0 ||
	    (rc = gnutls_x509_crt_set_activation_time(crt, now - 3600)) < 0 ||
	    (rc = gnutls_x509_crt_set_expiration_time(
	         crt, now + 10L * 365 * 86400)) < 0 ||
	    (rc = gnutls_x509_crt_set_dn_by_oid(crt,
	         GNUTLS_OID_X520_COMMON_NAME, 0, hostname,
	         (unsigned)strlen(hostname))) < 0 ||
	    (rc = gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_DNSNAME,
	         hostname, (unsigned)strlen(hostname), GNUTLS_FSAN_SET)) < 0 ||
	    (rc = gnutls_x509_crt_set_basic_constraints(crt, 0, -1)) < 0 ||
	    (rc = gnutls_x509_crt_set_key_usage(crt,
	         GNUTLS_KEY_DIGITAL_SIGNATURE | GNUTLS_KEY_KEY_ENCIPHERMENT)) <
	        0 ||
	    (rc = gnutls_x509_crt_set_key_purpose_oid(
	         crt, GNUTLS_KP_TLS_WWW_SERVER, 0)) < 0 ||
	    (rc = gnutls_x509_crt_set_key(crt, pk)) < 0 ||
	    (rc = gnutls_x509_crt_sign2(crt, crt, pk, GNUTLS_DIG_SHA256, 0)) <
	        0 ||
	    (rc = gnutls_x509_privkey_export2(pk, GNUTLS_X509_FMT_PEM, &kpem)) <
	        0 ||
	    (rc = gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_PEM, &cpem)) < 0)
		goto gnutls_fail;
	/* The key first: a certificate without its key is useless. */
	if (write_file(key, &kpem, 0600, why) != 0 ||
	    write_file(cert, &cpem, 0644, why) != 0)
		goto out;
	ret = 1;
	goto out;
gnutls_fail:
	why_set(why, "cannot generate a self-signed certificate: %s",
	    gnutls_strerror(rc));
out:
	gnutls_free(kpem.data);
	gnutls_free(cpem.data);
	if (crt != NULL)
		gnutls_x509_crt_deinit(crt);
	if (pk != NULL)
		gnutls_x509_privkey_deinit(pk);
	return ret;
}

struct tls_creds *
tls_client_creds_new(const char *ca_file, char *why)
{
	struct tls_creds *c = creds_new(why);
	int rc;

	if (c == NULL)
		return NULL;
	if (ca_file != NULL && ca_file[0] != '\0')
		rc = gnutls_certificate_set_x509_trust_file(
		    c->x509, ca_file, GNUTLS_X509_FMT_PEM);
	else
		rc = gnutls_certificate_set_x509_system_trust(c->x509);
	if (rc < 0) {
		why_set(why, "cannot load the trust store %s: %s",
		    ca_file && ca_file[0] ? ca_file : "(system)",
		    gnutls_strerror(rc));
		gnutls_certificate_free_credentials(c->x509);
		free(c);
		return NULL;
	}
	/* Outbound: anything from TLS 1.2 up; MX hosts vary widely. */
	return creds_finish(
	    c, "NORMAL:-VERS-SSL3.0:-VERS-TLS1.0:-VERS-TLS1.1", why);
}
