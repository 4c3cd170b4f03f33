"""The queue of round requests on both backends: several workers claiming at once never take the same request;
silent requests are reaped with their reason."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

from alwb.store import Store
from alwb.team.worker import live_workers, request_round

CLAIMER = textwrap.dedent(
    """
    import sys, time
    from alwb.store import Store

    location, me = sys.argv[1], sys.argv[2]
    with Store(location) as s:
        s.register_worker(me, "host", 1, None, time.time())
        while (req := s.claim_round_request(me, time.time(), 0)) is not None:
            time.sleep(0.003)
            s.finish_round_request(req["id"], round_number=None, error=None, now=time.time())
            print(req["id"])
    """
)


def test_concurrent_claims_take_each_request_once(store_location: str | Path) -> None:
    with Store(store_location, create=True) as s:
        ids = [request_round(s, epochs=k) for k in range(40)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, str(store_location), f"w{k}"], stdout=subprocess.PIPE, text=True
        )
        for k in range(4)
    ]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    taken = Counter(int(x) for o in outs for x in o.split())
    assert sorted(taken) == ids and set(taken.values()) == {1}
    assert sum(1 for o in outs if o.split()) >= 2  # they really took turns
    with Store(store_location) as s:
        reqs = s.round_requests()
        assert {r["status"] for r in reqs} == {"done"} and {r["worker"] for r in reqs} <= {f"w{k}" for k in range(4)}
        assert {r["request_id"] for r in s.worker_rows()} == {None}


def test_a_silent_request_is_reaped_with_its_round(store_location: str | Path) -> None:
    with Store(store_location, create=True) as s:
        s.register_worker("w", "host", 1, "cpu", 100.0)
        assert [w["name"] for w in live_workers(s, now=110.0)] == ["w"]
        request_round(s, epochs=1)
        number = s.start_round("margin")
        req = s.claim_round_request("w", 100.0, number)
        assert req["round"] == number and req["status"] == "running"
        s.worker_heartbeat("w", 120.0)
        assert s.reap_round_requests(140.0, stale_after=30.0) == []  # heard from 20 s ago
        (reaped,) = s.reap_round_requests(151.0, stale_after=30.0)
        assert reaped["status"] == "failed" and "no heartbeat for 31 s" in reaped["error"]
        (rnd,) = s.rounds()
        assert rnd["status"] == "failed" and rnd["error"] == reaped["error"]
        assert s.worker_rows() == [] and live_workers(s, now=151.0) == []
