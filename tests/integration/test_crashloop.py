"""The crash loop, short: eight kill -9s at random points while clients
send and delivery runs, then every acknowledged message is in the queue
exactly once and was delivered at least once, and the database is intact
(tests/lib/crashloop.py; make crashloop runs fifty cycles)."""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import crashloop  # noqa: E402
from sluicetest import main, test  # noqa: E402


@test
def crash_loop_loses_and_doubles_nothing_acknowledged():
    seed = int(time.time())
    try:
        res = crashloop.run(8, seed)
    except AssertionError as e:
        raise AssertionError("seed %d: %s" % (seed, e))
    # The loop really was loaded and really delivered.
    assert res["acknowledged"] >= 50, res
    assert res["delivered"] >= res["in_queue"], res
    print("#   %s" % ", ".join("%s=%d" % kv for kv in res.items()))


if __name__ == "__main__":
    main()
