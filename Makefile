# sluice - GNU make build.  See README.md.
#
#   make            build build/sluice
#   make run        build and run the relay in the foreground (built-in
#                   defaults: queue in ./var/queue.db, 127.0.0.1:2525)
#   make test       build and run every test (unit + integration)
#   make asan/tsan  the same under AddressSanitizer+UBSan / ThreadSanitizer
#   make bench      the accept benchmark (not a test)
#   make bench-wal  the WAL under 500,000 messages (WAL_ARGS: bench/wal.py -h)
#   make crashloop  kill -9 under load and delivery, CYCLES times (50)
#   make container-test  build the image with podman and check it (minutes;
#                   installs podman, as root)
#   make fuzz       run every libFuzzer target for FUZZ_SECONDS (clang)
#   make bench-dead 10,000 messages to a dead smarthost (not a test)
#   make bench-pg   1-3 nodes on one PostgreSQL beside an SQLite node
#   make deps       install the Debian packages needed to build and test

BUILD    ?= build
CC       ?= cc
PKGS      = gnutls sqlite3 ldns libxcrypt libmicrohttpd zlib libpq
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
WARN      = -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
            -Wformat=2 -Wvla
OPT      ?= -O2
CFLAGS   ?= -g $(OPT)
SANFLAGS ?=
# -DSLUICE_DEBUG (make asan, make tsan): error-checking mutexes, BUG_ON.
DEBUGFLAGS ?=
ALL_CFLAGS = -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE \
             -D_GNU_SOURCE $(CFLAGS) $(WARN) $(EXTRA_CFLAGS) $(SANFLAGS) $(DEBUGFLAGS) \
             -pthread -Icommon -Icli -Iserver -Iqueue -Isql -Itls -Idns \
             $(PKG_CFLAGS) -MMD -MP
LDLIBS    = $(PKG_LIBS) -pthread
PREFIX   ?= /usr/local

COMMON_SRCS = common/util.c common/sync.c common/log.c common/config.c common/cidr.c \
              common/holder.c common/json.c common/metrics.c \
              common/strbuf.c common/utf8.c common/queueid.c common/vocab.c
SQL_SRCS    = sql/store.c sql/sqlite.c sql/sqlite_admin.c sql/pg.c sql/pg_admin.c \
              sql/migrate.c
SQL_ASM     = sql/embed.S
TLS_SRCS    = tls/conn.c tls/tls.c tls/base64.c tls/dkim.c tls/dane.c
DNS_SRCS    = dns/dns.c
QUEUE_SRCS  = queue/queue.c queue/smtpc.c queue/smtpwire.c queue/deliver.c queue/https.c queue/sts.c queue/tlsrpt.c \
              queue/dests.c queue/outcome.c queue/conncache.c queue/relays.c \
              queue/bounce.c
SERVER_SRCS = server/parse.c server/data.c server/session.c server/pool.c \
              server/waiter.c server/anvil.c \
              server/auth.c server/listener.c server/httpd.c server/privs.c \
              server/loadcfg.c server/serve.c server/proxy.c
CLI_SRCS    = cli/queue.c cli/sendmail.c cli/health.c cli/passwd.c \
              cli/check.c cli/resolve.c cli/dkim.c cli/tlsrpt.c
MAIN_SRCS   = cli/main.c

LIB_SRCS = $(COMMON_SRCS) $(SQL_SRCS) $(TLS_SRCS) $(DNS_SRCS) $(QUEUE_SRCS) \
           $(SERVER_SRCS) $(CLI_SRCS)
LIB_OBJS = $(LIB_SRCS:%.c=$(BUILD)/%.o) $(BUILD)/sql/embed.o
BIN      = $(BUILD)/sluice

# Each room is also an archive, build/libROOM.a, and a unit test links
# only the rooms it names below, in ROOMS order (a room may use the ones
# after it, never those before): the linker takes from them only the
# objects the test needs, and a module that reaches into a room its test
# does not name fails to link.  A test without a list links every room.
ROOMS      = cli server queue sql dns tls common
ROOM_LIBS  = $(ROOMS:%=$(BUILD)/lib%.a)
UNIT_TESTS = parse data config auth bounce dns metrics json strbuf anvil \
             smtpwire dests store vocab base64 outcome
test_parse_ROOMS    = server common
test_data_ROOMS     = server common
test_config_ROOMS   = common
test_auth_ROOMS     = cli server tls common
test_bounce_ROOMS   = queue common
test_dns_ROOMS      = dns common
test_metrics_ROOMS  = common
test_json_ROOMS     = common
test_strbuf_ROOMS   = common
test_anvil_ROOMS    = server common
test_smtpwire_ROOMS = server queue tls common # server: its DATA decoder reads back what smtpwire sends
test_dests_ROOMS    = queue common
test_store_ROOMS    = sql common
test_vocab_ROOMS    = common
test_base64_ROOMS   = tls common
test_outcome_ROOMS  = queue common
UNIT_BINS  = $(UNIT_TESTS:%=$(BUILD)/tests/test_%)

# Fuzz targets (tests/fuzz/fuzz_NAME.c, docs/fuzzing.md).  `make test`
# replays each one's corpus through replay.c (test_fuzz_NAME); `make fuzz`
# builds them with libFuzzer in $(FUZZ_BUILD) and runs each one.
FUZZ_TARGETS = parse data auth reply dns config bounce stuff dkim proxy relays dane sts
FUZZ_REPLAY  = $(FUZZ_TARGETS:%=$(BUILD)/tests/test_fuzz_%)
FUZZ_BUILD  ?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_CC     ?= clang
FUZZ_SANFLAGS = -fsanitize=fuzzer-no-link,address,undefined \
                -fno-sanitize-recover=undefined -fno-omit-frame-pointer

.PHONY: all run test check unit asan tsan bench bench-idle bench-wal bench-dead bench-pg crashloop robustness tls-audit \
        container-test fmt fmt-check lint clean install deps fuzz fuzz-bins

all: $(BIN)

$(BIN): $(LIB_OBJS) $(BUILD)/cli/main.o
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/sql/embed.o: sql/embed.S sql/schema.sql sql/views.sql sql/upgrade-2.sql \
                      sql/upgrade-3.sql sql/upgrade-4.sql sql/upgrade-5.sql \
                      sql/upgrade-6.sql sql/upgrade-7.sql sql/upgrade-8.sql \
                      sql/upgrade-9.sql sql/pg-schema.sql sql/pg-views.sql \
                      sql/pg-upgrade-2.sql
	@mkdir -p $(dir $@)
	$(CC) $(SANFLAGS) -c -o $@ sql/embed.S

$(BUILD)/libcli.a: $(CLI_SRCS:%.c=$(BUILD)/%.o)
$(BUILD)/libserver.a: $(SERVER_SRCS:%.c=$(BUILD)/%.o)
$(BUILD)/libqueue.a: $(QUEUE_SRCS:%.c=$(BUILD)/%.o)
$(BUILD)/libsql.a: $(SQL_SRCS:%.c=$(BUILD)/%.o) $(BUILD)/sql/embed.o
$(BUILD)/libdns.a: $(DNS_SRCS:%.c=$(BUILD)/%.o)
$(BUILD)/libtls.a: $(TLS_SRCS:%.c=$(BUILD)/%.o)
$(BUILD)/libcommon.a: $(COMMON_SRCS:%.c=$(BUILD)/%.o)
$(ROOM_LIBS):
	@rm -f $@
	$(AR) rcs $@ $^

# test_NAME links the archives of test_NAME_ROOMS (all rooms if unset).
unit_libs = $(patsubst %,$(BUILD)/lib%.a,$(or $(test_$(1)_ROOMS),$(ROOMS)))
define unit_rule
$(BUILD)/tests/test_$(1): tests/unit/test_$(1).c $(call unit_libs,$(1))
	@mkdir -p $$(dir $$@)
	$$(CC) $$(ALL_CFLAGS) -o $$@ $$^ $$(LDLIBS)
endef
$(foreach t,$(UNIT_TESTS),$(eval $(call unit_rule,$(t))))

$(BUILD)/tests/test_fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/replay.c $(LIB_OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -DFUZZ_TARGET='"$*"' -o $@ \
	    $(filter %.c %.o,$^) $(LDLIBS)

$(BUILD)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(LIB_OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -fsanitize=fuzzer -o $@ $(filter %.c %.o,$^) $(LDLIBS)

unit: $(UNIT_BINS) $(FUZZ_REPLAY)

run: $(BIN)
	$(BIN) serve

# The whole suite; the last line is "N passed, M failed".
test check: $(BIN) $(UNIT_BINS) $(FUZZ_REPLAY)
	@BUILD=$(BUILD) SLUICE_SANITIZER=$(SANITIZER) bash tests/run.sh

asan:
	$(MAKE) BUILD=build-asan OPT=-O1 SANITIZER=address DEBUGFLAGS=-DSLUICE_DEBUG \
	    SANFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" test

tsan:
	$(MAKE) BUILD=build-tsan OPT=-O1 SANITIZER=thread DEBUGFLAGS=-DSLUICE_DEBUG SANFLAGS="-fsanitize=thread" test

$(BUILD)/bench/tlsload: bench/tlsload.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -O2 $(WARN) \
	    -pthread -o $@ $< $(shell pkg-config --cflags --libs gnutls)

bench: $(BIN) $(BUILD)/bench/tlsload $(BUILD)/bench/signtime
	bash bench/run.sh

$(BUILD)/bench/signtime: bench/signtime.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -O2 $(WARN) \
	    -o $@ $< $(shell pkg-config --cflags --libs gnutls)

# 10,000 idle connections, then a trusted client; beside a reference build.
bench-idle: $(BIN)
	bash bench/run-idle.sh

# Regenerate docs/robustness.md: every limit and defence, measured.
robustness: $(BIN)
	BENCH=robustness BASELINE_REF=none bash bench/run.sh

# 500,000 messages: the WAL's size, queue.db, a restart after kill -9.
bench-wal: $(BIN)
	BENCH=wal bash bench/run.sh $(WAL_ARGS)

# The PostgreSQL queue: 1-3 nodes on one database beside an SQLite node;
# table sizes and bloat (PG_ARGS: bench/pg.py -h).
bench-pg: $(BIN)
	BENCH=pg BASELINE_REF=none bash bench/run.sh $(PG_ARGS)

# kill -9 at random points under load and delivery (tests/lib/crashloop.py).
CYCLES ?= 50
crashloop: $(BIN)
	BUILD=$(BUILD) SLUICE_SANITIZER=$(SANITIZER) /usr/bin/python3 \
	    tests/lib/crashloop.py --cycles $(CYCLES)

# 10,000 messages to a dead smarthost: connection attempts per retry interval.
bench-dead: $(BIN)
	SLUICE_BIN=$(BIN) BENCH=dead BASELINE_REF=none bash bench/run.sh

# Slow and optional: testssl.sh against the submission and smtps ports.
tls-audit: $(BIN)
	BUILD=$(BUILD) bash tests/tls-audit.sh

# Slow and optional: build the container image with podman and run it
# (docs/container.md); needs root.
container-test:
	bash tests/container-test.sh

deps:
	bash tests/deps.sh

# Every fuzz target for FUZZ_SECONDS each, from its seed corpus; new inputs
# go to $(FUZZ_BUILD)/corpus/, crashes to $(FUZZ_BUILD)/crashes/.
fuzz:
	$(MAKE) BUILD=$(FUZZ_BUILD) CC=$(FUZZ_CC) OPT=-O1 \
	    SANFLAGS="$(FUZZ_SANFLAGS)" fuzz-bins
	FUZZ_BUILD=$(FUZZ_BUILD) FUZZ_SECONDS=$(FUZZ_SECONDS) \
	    bash tests/fuzz/run.sh $(FUZZ_TARGETS)

fuzz-bins: $(FUZZ_TARGETS:%=$(BUILD)/fuzz/fuzz_%)

FMT_FILES = $(LIB_SRCS) $(MAIN_SRCS) bench/tlsload.c bench/signtime.c \
            $(wildcard */*.h tests/unit/*.[ch] tests/fuzz/*.[ch])

fmt:
	clang-format -i $(FMT_FILES)

# Fails (and names the files) when some C file is not as `make fmt` leaves it.
fmt-check:
	@clang-format --dry-run --Werror $(FMT_FILES)

lint:
	cppcheck --quiet --error-exitcode=1 --enable=warning,portability \
	    --inline-suppr -Icommon -Icli -Iserver -Iqueue -Isql -Itls -Idns \
	    $(LIB_SRCS) $(MAIN_SRCS)

# make install [DESTDIR=/staging] [PREFIX=/usr/local] [SENDMAIL_LINK=yes [FORCE=yes]]
#   $(SBINDIR)/sluice                       the binary (0755)
#   $(MANDIR)/man8/sluice.8                 the manual page
#   $(DOCDIR)/                              README, docs/*.md, sluice.service,
#                                           sluice.conf.example
#   $(SYSCONFDIR)/sluice/sluice.conf.example
# sluice.conf itself is never created or overwritten (as with Postfix and
# OpenSMTPD): copy the example to it on a first install.  sluice reads
# /etc/sluice/sluice.conf whatever PREFIX is, so SYSCONFDIR is /etc, not
# $(PREFIX)/etc.  The man page and the unit are installed with their
# /usr/local paths rewritten for PREFIX (and the unit's -c for SYSCONFDIR).
# SENDMAIL_LINK=yes also makes $(SBINDIR)/sendmail a link to sluice; another
# sendmail found there is kept (the install fails) unless FORCE=yes.
SYSCONFDIR    ?= /etc
SBINDIR       ?= $(PREFIX)/sbin
MANDIR        ?= $(PREFIX)/share/man
DOCDIR        ?= $(PREFIX)/share/doc/sluice
SENDMAIL_LINK ?= no
FORCE         ?= no
INSTALL_DOCS   = README.md $(wildcard docs/*.md)
INSTALL_PATHS  = sed -e 's|/usr/local/sbin/|$(SBINDIR)/|g' \
                     -e 's|/usr/local/share/doc/sluice|$(DOCDIR)|g' \
                     -e 's|/usr/local/share/man|$(MANDIR)|g'

install: $(BIN)
	install -d -m 0755 $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man8 \
	    $(DESTDIR)$(DOCDIR) $(DESTDIR)$(SYSCONFDIR)/sluice
	install -m 0755 $(BIN) $(DESTDIR)$(SBINDIR)/sluice
	$(INSTALL_PATHS) docs/sluice.8 >$(DESTDIR)$(MANDIR)/man8/sluice.8
	chmod 0644 $(DESTDIR)$(MANDIR)/man8/sluice.8
	$(INSTALL_PATHS) -e 's|/etc/sluice/|$(SYSCONFDIR)/sluice/|g' \
	    docs/sluice.service >$(DESTDIR)$(DOCDIR)/sluice.service
	chmod 0644 $(DESTDIR)$(DOCDIR)/sluice.service
	install -m 0644 $(INSTALL_DOCS) $(DESTDIR)$(DOCDIR)/
	install -m 0644 config.example $(DESTDIR)$(DOCDIR)/sluice.conf.example
	install -m 0644 config.example \
	    $(DESTDIR)$(SYSCONFDIR)/sluice/sluice.conf.example
	@if [ ! -e $(DESTDIR)$(SYSCONFDIR)/sluice/sluice.conf ]; then \
	    echo "make install: no $(SYSCONFDIR)/sluice/sluice.conf yet;" \
	        "start from $(SYSCONFDIR)/sluice/sluice.conf.example"; fi
	@case "$(SENDMAIL_LINK)" in \
	yes) link=$(DESTDIR)$(SBINDIR)/sendmail; \
	    if { [ -e "$$link" ] || [ -L "$$link" ]; } && \
	        [ "$$(readlink "$$link")" != sluice ] && \
	        [ "$$(readlink "$$link")" != $(SBINDIR)/sluice ] && \
	        [ "$(FORCE)" != yes ]; then \
	        echo "make install: $$link exists and is not sluice;" \
	            "not replacing it (FORCE=yes replaces it)" >&2; exit 1; \
	    fi; \
	    echo "ln -sfn sluice $$link"; ln -sfn sluice "$$link";; \
	no|'') ;; \
	*) echo "make install: SENDMAIL_LINK must be yes or no" >&2; exit 1;; \
	esac

clean:
	rm -rf build build-asan build-tsan $(FUZZ_BUILD)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
