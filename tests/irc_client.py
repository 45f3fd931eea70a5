"""Drives p2pchat's IRC gateway with the `irc` library (jaraco/irc on
PyPI), a maintained IRC client library: run by tests/irc.rs when a Python
with that library is found (P2PCHAT_TEST_PYTHON, or python3).

Registers as "pyclient", says a line in #lobby once it is in, waits for
bob's reply and for bob to leave, then quits. Prints what it saw, one
fact per line; exits 0 when all of it happened within the deadline.
"""
import sys
import time

import irc.client

port = int(sys.argv[1])
seen = set()
if hasattr(irc.client, "Reactor"):
    reactor = irc.client.Reactor()
else:  # before irc 11, as Debian's python3-irc (8.5)
    reactor = irc.client.IRC()
conn = reactor.server().connect("127.0.0.1", port, "pyclient", username="py", ircname="Py")


def say(fact):
    if fact not in seen:
        seen.add(fact)
        print(fact, flush=True)


def on_welcome(c, e):
    say("welcome " + e.target)


def on_join(c, e):
    nick = irc.client.NickMask(e.source).nick
    if e.target == "#lobby" and nick == c.get_nickname():
        say("in #lobby as " + nick)
        c.privmsg("#lobby", "hello from the irc library")


def on_namreply(c, e):
    say("names " + e.arguments[2])


isupport = {}


def on_featurelist(c, e):
    for token in e.arguments:
        key, _, value = token.partition("=")
        isupport[key.lower()] = value


def on_pubmsg(c, e):
    say("pubmsg %s %s %s" % (irc.client.NickMask(e.source).nick, e.target, e.arguments[0]))


def on_quit(c, e):
    say("quit %s %s" % (irc.client.NickMask(e.source).nick, e.arguments[0]))


for kind, fn in [("welcome", on_welcome), ("join", on_join), ("namreply", on_namreply),
                 ("featurelist", on_featurelist),
                 ("pubmsg", on_pubmsg), ("quit", on_quit)]:
    reactor.add_global_handler(kind, fn)

deadline = time.time() + 10
while time.time() < deadline and not any(f.startswith("quit bob") for f in seen):
    reactor.process_once(0.1)
f = getattr(conn, "features", None)  # the library's own ISUPPORT parse, since irc 8.9
if f is not None:
    got = (f.chantypes, f.casemapping, f.nicklen, f.network)
else:
    got = tuple(isupport.get(k) for k in ("chantypes", "casemapping", "nicklen", "network"))
say("features chantypes=%s casemapping=%s nicklen=%s network=%s" % got)
conn.quit("bye")
reactor.process_once(0.2)
sys.exit(0 if any(f.startswith("quit bob") for f in seen) else 1)
