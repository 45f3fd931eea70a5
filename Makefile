# p2pchat: serverless group chat for the terminal.
.POSIX:

PREFIX = /usr/local
MANPREFIX = $(PREFIX)/share/man
CARGO = cargo

all: p2pchat

p2pchat: FORCE
	$(CARGO) build --release --locked
	cp target/release/p2pchat p2pchat

# Unit tests, the deterministic simulation, and integration tests that run
# real peers on 127.0.0.1.
test:
	$(CARGO) test --locked
	BENCH_QUICK=1 $(CARGO) bench --locked --bench bench

# Formatting, lints and the man page.
check:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	mandoc -Tlint -Wwarning man/p2pchat.1

bench:
	$(CARGO) bench --locked --bench bench

# Fuzz frame decoding and the protocol core, FUZZ_TIME seconds each
# (needs cargo-fuzz and a nightly toolchain: not part of make test).
FUZZ_TIME = 60
fuzz:
	cd fuzz && $(CARGO) +nightly fuzz run frames -- -max_total_time=$(FUZZ_TIME)
	cd fuzz && $(CARGO) +nightly fuzz run core -- -max_total_time=$(FUZZ_TIME)

install: p2pchat
	mkdir -p $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(MANPREFIX)/man1
	cp -f p2pchat $(DESTDIR)$(PREFIX)/bin/p2pchat
	chmod 755 $(DESTDIR)$(PREFIX)/bin/p2pchat
	cp -f man/p2pchat.1 $(DESTDIR)$(MANPREFIX)/man1/p2pchat.1
	chmod 644 $(DESTDIR)$(MANPREFIX)/man1/p2pchat.1

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/p2pchat $(DESTDIR)$(MANPREFIX)/man1/p2pchat.1

clean:
	$(CARGO) clean
	rm -f p2pchat

FORCE:

.PHONY: all test check bench fuzz install uninstall clean FORCE
