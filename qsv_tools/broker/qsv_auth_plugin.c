/*
 * qsv_auth_plugin: a mosquitto 2.0 (plugin API v5) plugin for the devices' TLS listener of `qsv broker`.
 *
 * It closes two gaps that mosquitto 2.0.11's password_file / acl_file leave open:
 *
 * 1. SUBSCRIBE is never checked by the acl_file (every SUBACK grants; read rules only filter at delivery). A device
 *    could join any shared-subscription group ($share/...), also the verifiers' one, and a message that the round
 *    robin hands to a member without read access is dropped. MOSQ_EVT_ACL_CHECK with MOSQ_ACL_SUBSCRIBE refuses
 *    (SUBACK 0x87 Not authorized, 0x80 for MQTT 3.1.1) every filter of a device except its own readable topics:
 *    no '$' topic ($share/..., $SYS/...), no wildcard ('+', '#') anywhere, nothing outside
 *    <topic_prefix><username>/<read topic>. The read topics are the suffixes that the ACL file's `pattern read`
 *    rules give a device (the Python side passes the same list it renders the ACL from): "feedback" is exactly
 *    <prefix><user>/feedback, "bench/#" is <prefix><user>/bench and everything below it. An allowed filter is
 *    deferred (the acl_file then grants it); PUBLISH and delivery checks are always deferred to the acl_file.
 *
 * 2. Certificate / username binding at CONNECT. The listener does not use use_identity_as_username (with it the
 *    username a client sends is replaced by the certificate's CN and no mismatch can be seen); it requires a client
 *    certificate and has a password_file. MOSQ_EVT_BASIC_AUTH compares the certificate's subject CN (exactly one
 *    CN, no embedded NUL) with the username of the CONNECT: a mismatch, a missing certificate or a missing
 *    username is refused (MOSQ_ERR_AUTH: mosquitto 2.0.11 sends CONNACK 0x87 Not authorized, 5 in 3.1.1). A match
 *    returns MOSQ_ERR_PLUGIN_DEFER, so the password_file still decides: in 2.0.11 the password file is a
 *    callback of its own on the same listener, registered after the plugins' (plugins are initialised before the
 *    default security), and the broker asks the callbacks in order until one does not defer: this plugin first,
 *    then the password file; if all defer, the client is refused (allow_anonymous false). Verified against the
 *    real broker by tests/test_broker_security.py: matching CN + wrong password is refused, so the password file
 *    ran after this plugin deferred; mismatching CN + that user's correct password is refused, so this plugin ran
 *    before the password file accepted. No username: refused, not bound to the CN: a device must send its name
 *    (the same as its certificate's CN) and its password.
 *
 * 3. Client ids bound to the username at CONNECT, with room for several connections per device: the client id must
 *    be the username or "<username>:<role>" (role: 1..64 chars of [A-Za-z0-9_.-]; qsv_wire.topics.device_client_id),
 *    so nobody can connect under (and take over) another client's id, and a device's runtime and its bench connect
 *    side by side. ':' is not allowed in usernames of the fleet, so one device's prefix is never another's. The
 *    listener therefore runs without use_username_as_clientid (which would give all of a device's connections the
 *    same id: each would take the previous one over).
 *
 * Options (plugin_opt_<key> <value> in mosquitto.conf, after the plugin line of the listener):
 *    topic_prefix   the devices' topic prefix including the trailing '/', e.g. "qsv/v1/"          (required)
 *    read_topics    comma-separated suffixes below <prefix><user>/ a device may subscribe to; a suffix "x/#"
 *                   means x and everything below it, anything else is an exact topic, e.g.
 *                   "feedback,bench/#"                                                                 (required)
 *
 * Build: see Makefile (cc -std=c11 -fPIC -shared ... -lcrypto; the broker's functions resolve at load time).
 * No global state: everything lives in the userdata allocated in mosquitto_plugin_init.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
#include <openssl/asn1.h>
#include <openssl/objects.h>
#include <openssl/x509.h>

#define QSV_MAX_READ_TOPICS 16
#define QSV_MAX_CN 256

struct qsv_read_topic {
	char *text;     /* the suffix below <prefix><user>/, without a trailing "/#" */
	size_t len;
	bool subtree;   /* "x/#": x itself and everything below x/ */
};

struct qsv_auth {
	mosquitto_plugin_id_t *id;
	char *prefix;
	size_t prefix_len;
	struct qsv_read_topic read[QSV_MAX_READ_TOPICS];
	size_t read_count;
};

static char *qsv_strndup(const char *s, size_t n)
{
	char *out = malloc(n + 1);
	if(out == NULL) return NULL;
	memcpy(out, s, n);
	out[n] = '\0';
	return out;
}

static void qsv_free(struct qsv_auth *st)
{
	if(st == NULL) return;
	for(size_t i = 0; i < st->read_count; i++){
		free(st->read[i].text);
	}
	free(st->prefix);
	free(st);
}

/* A topic level of an id: non-empty, no '/', no wildcard. */
static bool qsv_valid_level(const char *s)
{
	return s != NULL && s[0] != '\0' && strpbrk(s, "/+#") == NULL;
}

static int qsv_parse_read_topics(struct qsv_auth *st, const char *value)
{
	const char *p = value;
	while(*p != '\0'){
		const char *end = strchr(p, ',');
		size_t n = end ? (size_t)(end - p) : strlen(p);
		while(n > 0 && (*p == ' ' || *p == '\t')){ p++; n--; }
		while(n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t')) n--;
		if(n > 0){
			bool subtree = n >= 2 && p[n - 2] == '/' && p[n - 1] == '#';
			size_t len = subtree ? n - 2 : n;
			if(st->read_count == QSV_MAX_READ_TOPICS || len == 0) return MOSQ_ERR_INVAL;
			char *text = qsv_strndup(p, len);
			if(text == NULL) return MOSQ_ERR_NOMEM;
			/* the suffix itself must be a plain topic (no '$' start, no wildcard) */
			if(strpbrk(text, "+#") != NULL || text[0] == '/' || text[len - 1] == '/'){
				free(text);
				return MOSQ_ERR_INVAL;
			}
			st->read[st->read_count++] = (struct qsv_read_topic){text, len, subtree};
		}
		if(end == NULL) break;
		p = end + 1;
	}
	return st->read_count > 0 ? MOSQ_ERR_SUCCESS : MOSQ_ERR_INVAL;
}

/* Whether a device `username` may subscribe to `filter`: only exact own readable topics, no '$', no wildcard. */
static bool qsv_subscribe_allowed(const struct qsv_auth *st, const char *username, const char *filter)
{
	if(!qsv_valid_level(username) || filter == NULL) return false;
	if(filter[0] == '$' || strpbrk(filter, "+#") != NULL) return false;
	if(strncmp(filter, st->prefix, st->prefix_len) != 0) return false;
	const char *p = filter + st->prefix_len;
	size_t ulen = strlen(username);
	if(strncmp(p, username, ulen) != 0 || p[ulen] != '/') return false;
	const char *rest = p + ulen + 1;
	for(size_t i = 0; i < st->read_count; i++){
		const struct qsv_read_topic *rt = &st->read[i];
		if(strncmp(rest, rt->text, rt->len) != 0) continue;
		if(rest[rt->len] == '\0') return true;
		if(rt->subtree && rest[rt->len] == '/') return true;
	}
	return false;
}

/* Whether a device `username` may connect with `client_id`: the username itself or "<username>:<role>". */
static bool qsv_client_id_allowed(const char *username, const char *client_id)
{
	if(client_id == NULL) return false;
	size_t ulen = strlen(username);
	if(strncmp(client_id, username, ulen) != 0) return false;
	const char *role = client_id + ulen;
	if(role[0] == '\0') return true;
	if(role[0] != ':') return false;
	role++;
	size_t n = strspn(role, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-");
	return n >= 1 && n <= 64 && role[n] == '\0';
}

/* The subject's CN as a NUL-terminated UTF-8 string in out (size QSV_MAX_CN); false unless exactly one CN without
 * embedded NUL. */
static bool qsv_certificate_cn(X509 *cert, char *out)
{
	X509_NAME *subject = X509_get_subject_name(cert);
	if(subject == NULL) return false;
	int idx = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
	if(idx < 0 || X509_NAME_get_index_by_NID(subject, NID_commonName, idx) >= 0) return false;
	ASN1_STRING *data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, idx));
	if(data == NULL) return false;
	unsigned char *utf8 = NULL;
	int n = ASN1_STRING_to_UTF8(&utf8, data);
	bool ok = n > 0 && n < QSV_MAX_CN && memchr(utf8, '\0', (size_t)n) == NULL;
	if(ok){
		memcpy(out, utf8, (size_t)n);
		out[n] = '\0';
	}
	OPENSSL_free(utf8);
	return ok;
}

static int qsv_on_basic_auth(int event, void *event_data, void *userdata)
{
	(void)event;
	(void)userdata;
	struct mosquitto_evt_basic_auth *ed = event_data;
	const char *address = mosquitto_client_address(ed->client);
	address = address ? address : "?";
	if(ed->username == NULL || ed->username[0] == '\0'){
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "qsv_auth: refused CONNECT from %s: no username (a device sends "
		                     "its name, the CN of its certificate)", address);
		return MOSQ_ERR_AUTH;
	}
	X509 *cert = mosquitto_client_certificate(ed->client);
	if(cert == NULL){
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "qsv_auth: refused CONNECT of '%s' from %s: no client certificate",
		                     ed->username, address);
		return MOSQ_ERR_AUTH;
	}
	char cn[QSV_MAX_CN];
	bool have_cn = qsv_certificate_cn(cert, cn);
	X509_free(cert);
	if(!have_cn){
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "qsv_auth: refused CONNECT of '%s' from %s: the certificate has no "
		                     "single usable CN", ed->username, address);
		return MOSQ_ERR_AUTH;
	}
	if(strcmp(cn, ed->username) != 0){
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "qsv_auth: refused CONNECT of '%s' from %s: certificate CN '%s' is "
		                     "not the username", ed->username, address, cn);
		return MOSQ_ERR_AUTH;
	}
	const char *client_id = mosquitto_client_id(ed->client);
	if(!qsv_client_id_allowed(ed->username, client_id)){
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "qsv_auth: refused CONNECT of '%s' from %s: client id '%s' is neither "
		                     "the username nor '<username>:<role>'", ed->username, address,
		                     client_id ? client_id : "(none)");
		return MOSQ_ERR_AUTH;
	}
	return MOSQ_ERR_PLUGIN_DEFER; /* certificate and client id match: the password_file decides */
}

static int qsv_on_acl_check(int event, void *event_data, void *userdata)
{
	(void)event;
	const struct qsv_auth *st = userdata;
	struct mosquitto_evt_acl_check *ed = event_data;
	if(ed->access != MOSQ_ACL_SUBSCRIBE) return MOSQ_ERR_PLUGIN_DEFER; /* publish / delivery: the acl_file */
	const char *username = mosquitto_client_username(ed->client);
	if(qsv_subscribe_allowed(st, username, ed->topic)) return MOSQ_ERR_PLUGIN_DEFER;
	mosquitto_log_printf(MOSQ_LOG_NOTICE, "qsv_auth: refused SUBSCRIBE of '%s' to '%s'",
	                     username ? username : "(none)", ed->topic ? ed->topic : "(null)");
	return MOSQ_ERR_ACL_DENIED;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for(int i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5) return 5;
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata, struct mosquitto_opt *options,
                          int option_count)
{
	struct qsv_auth *st = calloc(1, sizeof(*st));
	if(st == NULL) return MOSQ_ERR_NOMEM;
	st->id = identifier;
	int rc = MOSQ_ERR_SUCCESS;
	for(int i = 0; i < option_count && rc == MOSQ_ERR_SUCCESS; i++){
		const char *key = options[i].key, *value = options[i].value ? options[i].value : "";
		if(strcmp(key, "topic_prefix") == 0){
			size_t n = strlen(value);
			if(st->prefix != NULL || n == 0 || value[n - 1] != '/' || value[0] == '$' || strpbrk(value, "+#")){
				mosquitto_log_printf(MOSQ_LOG_ERR, "qsv_auth: topic_prefix '%s': give it once, ending in '/', "
				                     "no wildcard", value);
				rc = MOSQ_ERR_INVAL;
			}else if((st->prefix = qsv_strndup(value, n)) == NULL){
				rc = MOSQ_ERR_NOMEM;
			}else{
				st->prefix_len = n;
			}
		}else if(strcmp(key, "read_topics") == 0){
			rc = st->read_count ? MOSQ_ERR_INVAL : qsv_parse_read_topics(st, value);
			if(rc != MOSQ_ERR_SUCCESS){
				mosquitto_log_printf(MOSQ_LOG_ERR, "qsv_auth: read_topics '%s': a comma-separated list of "
				                     "topics (or x/#) below <prefix><user>/, given once", value);
			}
		}else{
			mosquitto_log_printf(MOSQ_LOG_ERR, "qsv_auth: unknown option plugin_opt_%s", key);
			rc = MOSQ_ERR_INVAL;
		}
	}
	if(rc == MOSQ_ERR_SUCCESS && (st->prefix == NULL || st->read_count == 0)){
		mosquitto_log_printf(MOSQ_LOG_ERR, "qsv_auth: plugin_opt_topic_prefix and plugin_opt_read_topics are "
		                     "required");
		rc = MOSQ_ERR_INVAL;
	}
	if(rc == MOSQ_ERR_SUCCESS){
		rc = mosquitto_callback_register(identifier, MOSQ_EVT_BASIC_AUTH, qsv_on_basic_auth, NULL, st);
	}
	if(rc == MOSQ_ERR_SUCCESS){
		rc = mosquitto_callback_register(identifier, MOSQ_EVT_ACL_CHECK, qsv_on_acl_check, NULL, st);
		if(rc != MOSQ_ERR_SUCCESS){
			mosquitto_callback_unregister(identifier, MOSQ_EVT_BASIC_AUTH, qsv_on_basic_auth, NULL);
		}
	}
	if(rc != MOSQ_ERR_SUCCESS){
		qsv_free(st);
		return rc;
	}
	*userdata = st;
	mosquitto_log_printf(MOSQ_LOG_INFO, "qsv_auth: certificate CN = username at CONNECT; SUBSCRIBE only to "
	                     "%s<username>/ + %zu read topic(s)", st->prefix, st->read_count);
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	(void)options;
	(void)option_count;
	struct qsv_auth *st = userdata;
	if(st == NULL) return MOSQ_ERR_SUCCESS;
	mosquitto_callback_unregister(st->id, MOSQ_EVT_BASIC_AUTH, qsv_on_basic_auth, NULL);
	mosquitto_callback_unregister(st->id, MOSQ_EVT_ACL_CHECK, qsv_on_acl_check, NULL);
	qsv_free(st);
	return MOSQ_ERR_SUCCESS;
}
