# sluice - GNU make build.  See README.md.
#
#   make            build build/sluice
#   make run        build and run the relay in the foreground (built-in
#                   defaults: queue in ./var/queue.db, 127.0.0.1:2525)
#   make test       build and run every test (unit + integration)
#   make asan/tsan  the same under AddressSanitizer+UBSan / ThreadSanitizer
#   make bench      the accept benchmark (not a test)
#   make deps       install the Debian packages needed to build and test

BUILD    ?= build
CC       ?= cc
PKGS      = gnutls sqlite3 ldns libxcrypt libmicrohttpd
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
WARN      = -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
            -Wformat=2 -Wvla
OPT      ?= -O2
CFLAGS   ?= -g $(OPT)
SANFLAGS ?=
ALL_CFLAGS = -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE \
             -D_GNU_SOURCE $(CFLAGS) $(WARN) $(EXTRA_CFLAGS) $(SANFLAGS) \
             -pthread -Icommon -Iserver -Iqueue -Isql -Itls -Idns \
             $(PKG_CFLAGS) -MMD -MP
LDLIBS    = $(PKG_LIBS) -pthread
PREFIX   ?= /usr/local

COMMON_SRCS = common/util.c common/log.c common/config.c common/cidr.c \
              common/holder.c common/json.c common/metrics.c
SQL_SRCS    = sql/db.c sql/admin.c
SQL_ASM     = sql/embed.S
TLS_SRCS    = tls/conn.c tls/tls.c
DNS_SRCS    = dns/dns.c
QUEUE_SRCS  = queue/queue.c queue/smtpc.c queue/deliver.c queue/bounce.c
SERVER_SRCS = server/parse.c server/data.c server/session.c server/pool.c \
              server/auth.c server/listener.c server/httpd.c server/privs.c \
              server/loadcfg.c \
              server/queuecmd.c server/sendmail.c server/health.c
MAIN_SRCS   = server/main.c

LIB_SRCS = $(COMMON_SRCS) $(SQL_SRCS) $(TLS_SRCS) $(DNS_SRCS) $(QUEUE_SRCS) \
           $(SERVER_SRCS)
LIB_OBJS = $(LIB_SRCS:%.c=$(BUILD)/%.o) $(BUILD)/sql/embed.o
BIN      = $(BUILD)/sluice

UNIT_TESTS = parse data config auth bounce dns metrics json
UNIT_BINS  = $(UNIT_TESTS:%=$(BUILD)/tests/test_%)

.PHONY: all run test check unit asan tsan bench tls-audit fmt lint clean install deps

all: $(BIN)

$(BIN): $(LIB_OBJS) $(BUILD)/server/main.o
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/sql/embed.o: sql/embed.S sql/schema.sql sql/views.sql sql/upgrade-2.sql
	@mkdir -p $(dir $@)
	$(CC) $(SANFLAGS) -c -o $@ sql/embed.S

$(BUILD)/tests/test_%: tests/unit/test_%.c $(LIB_OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LDLIBS)

unit: $(UNIT_BINS)

run: $(BIN)
	$(BIN) serve

# The whole suite; the last line is "N passed, M failed".
test check: $(BIN) $(UNIT_BINS)
	@BUILD=$(BUILD) SLUICE_SANITIZER=$(SANITIZER) bash tests/run.sh

asan:
	$(MAKE) BUILD=build-asan OPT=-O1 SANITIZER=address \
	    SANFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" test

tsan:
	$(MAKE) BUILD=build-tsan OPT=-O1 SANITIZER=thread SANFLAGS="-fsanitize=thread" test

$(BUILD)/bench/tlsload: bench/tlsload.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -O2 $(WARN) \
	    -pthread -o $@ $< $(shell pkg-config --cflags --libs gnutls)

bench: $(BIN) $(BUILD)/bench/tlsload
	bash bench/run.sh

# Slow and optional: testssl.sh against the submission and smtps ports.
tls-audit: $(BIN)
	BUILD=$(BUILD) bash tests/tls-audit.sh

deps:
	bash tests/deps.sh

fmt:
	clang-format -i $(LIB_SRCS) $(MAIN_SRCS) $(wildcard */*.h tests/unit/*.c)

lint:
	cppcheck --quiet --error-exitcode=1 --enable=warning,portability \
	    --inline-suppr -Icommon -Iserver -Iqueue -Isql -Itls \
	    $(LIB_SRCS) $(MAIN_SRCS)

install: $(BIN)
	install -d $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)/etc/sluice
	install -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/sbin/sluice
	install -m 0644 config.example $(DESTDIR)/etc/sluice/sluice.conf.example

clean:
	rm -rf build build-asan build-tsan

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
