"""Drives p2pchat's IRC gateway with the `irc` library (jaraco/irc on
PyPI), a maintained IRC client library: run by tests/irc.rs when a Python
with that library is found (P2PCHAT_TEST_PYTHON, or python3).

Registers as "pyclient", says a line in #lobby once it is in and a
private one to bob; on bob's reply, joins #dev (the room bob creates:
asked again until it exists), says a line there, waits for bob to leave,
then quits. Prints what it saw, one fact per line; exits 0 when all of
it happened within the deadline.
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


join_dev_at = None  # when to ask for #dev (again)


def on_join(c, e):
    nick = irc.client.NickMask(e.source).nick
    if e.target == "#lobby" and nick == c.get_nickname():
        say("in #lobby as " + nick)
        c.privmsg("#lobby", "hello from the irc library")
        c.privmsg("bob", "psst from the irc library")
    if e.target == "#dev" and nick == c.get_nickname():
        global join_dev_at
        join_dev_at = None
        say("in #dev as " + nick)
        c.privmsg("#dev", "hello, dev")


def on_nosuchchannel(c, e):
    global join_dev_at
    if e.arguments and e.arguments[0] == "#dev":
        join_dev_at = time.time() + 0.2


def on_namreply(c, e):
    say("names " + e.arguments[2])


isupport = {}


def on_featurelist(c, e):
    for token in e.arguments:
        key, _, value = token.partition("=")
        isupport[key.lower()] = value


def on_pubmsg(c, e):
    global join_dev_at
    say("pubmsg %s %s %s" % (irc.client.NickMask(e.source).nick, e.target, e.arguments[0]))
    if e.arguments[0] == "reply from bob":
        join_dev_at = time.time()


def on_quit(c, e):
    say("quit %s %s" % (irc.client.NickMask(e.source).nick, e.arguments[0]))


for kind, fn in [("welcome", on_welcome), ("join", on_join), ("namreply", on_namreply),
                 ("featurelist", on_featurelist),
                 ("nosuchchannel", on_nosuchchannel),
                 ("pubmsg", on_pubmsg), ("quit", on_quit)]:
    reactor.add_global_handler(kind, fn)

deadline = time.time() + 20
while time.time() < deadline and not any(f.startswith("quit bob") for f in seen):
    reactor.process_once(0.1)
    if join_dev_at is not None and time.time() >= join_dev_at:
        join_dev_at = time.time() + 2
        conn.join("#dev")
f = getattr(conn, "features", None)  # the library's own ISUPPORT parse, since irc 8.9
if f is not None:
    got = (f.chantypes, f.casemapping, f.nicklen, f.network)
else:
    got = tuple(isupport.get(k) for k in ("chantypes", "casemapping", "nicklen", "network"))
say("features chantypes=%s casemapping=%s nicklen=%s network=%s" % got)
conn.quit("bye")
reactor.process_once(0.2)
sys.exit(0 if any(f.startswith("quit bob") for f in seen) else 1)
