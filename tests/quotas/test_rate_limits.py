"""The one fixed window (config/rate_limits.py): counts per window, survives an evicted key, shared by processes."""

import os
import subprocess
import sys
import threading
import time
import uuid

import pytest
from django.conf import settings as django_settings

from config.call_checks import call_checks_read
from config.generations import generation, generation_key, generation_move
from config.rate_limits import flag_raise, flag_raised, rate_limit_hit
from tests.fakes.caches import CullingCache, EvictOnce, cache_use

START = 1_800_000_000.0  # a whole minute (and second) of wall time


@pytest.fixture
def clock(monkeypatch):
    state = {"now": START + 0.5}
    monkeypatch.setattr("config.rate_limits._now", lambda: state["now"])
    return state


def test_hits_past_the_limit_are_refused_until_the_window_ends(clock):
    decisions = [rate_limit_hit(key="k", limit=3, window_s=60) for _ in range(4)]

    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert decisions[-1].resets_in == pytest.approx(59.5)
    assert decisions[-1].retry_after == 60
    clock["now"] = START + 60.0
    fresh = rate_limit_hit(key="k", limit=3, window_s=60)
    assert (fresh.allowed, fresh.count) == (True, 1)


def test_windows_of_different_lengths_and_keys_count_apart(clock):
    rate_limit_hit(key="k", limit=1, window_s=60)

    assert rate_limit_hit(key="k", limit=1, window_s=1).allowed
    assert rate_limit_hit(key="other", limit=1, window_s=60).allowed
    assert not rate_limit_hit(key="k", limit=1, window_s=60).allowed


def test_a_key_evicted_between_add_and_incr_starts_the_window_again(settings, clock):
    cache_use(settings, EvictOnce)
    EvictOnce.evictions_left = 1

    decisions = [rate_limit_hit(key="k", limit=2, window_s=60) for _ in range(3)]

    assert EvictOnce.evictions_left == 0  # the eviction happened, and did not raise
    assert [(d.allowed, d.count) for d in decisions] == [(True, 1), (True, 2), (False, 3)]


def test_a_culling_local_memory_cache_gives_decisions_not_errors(settings, clock):
    cache_use(settings, CullingCache, MAX_ENTRIES=1, CULL_FREQUENCY=1)

    decisions = [rate_limit_hit(key="k", limit=2, window_s=60) for _ in range(5)]

    # Every count is thrown out before it is read: the limiter lets the hits through, uncounted.
    assert all(d.allowed for d in decisions)


def test_threads_share_one_count():
    allowed = []
    barrier = threading.Barrier(16)

    def hit():
        barrier.wait(timeout=10)
        allowed.extend(rate_limit_hit(key="threads", limit=5, window_s=3600).allowed for _ in range(3))

    threads = [threading.Thread(target=hit) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert allowed.count(True) == 5
    assert len(allowed) == 48


HITS_IN_A_PROCESS = """
import django, sys
django.setup()
from config.rate_limits import flag_raise, flag_raised, rate_limit_hit
print(sum(rate_limit_hit(key=sys.argv[1], limit=int(sys.argv[2]), window_s=3600).allowed for _ in range(10)))
"""


@pytest.mark.services
def test_processes_share_one_count_through_redis():
    """Four processes, ten hits each, against a limit of 15: exactly 15 are allowed in all."""
    if time.time() % 3600 > 3600 - 30:
        time.sleep(31)  # not across the end of an hour's window
    key = f"processes-{uuid.uuid4()}"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings_test"}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", HITS_IN_A_PROCESS, key, "15"],
            cwd=django_settings.BASE_DIR,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    allowed = [int(process.communicate(timeout=60)[0].split()[-1]) for process in processes]

    assert sum(allowed) == 15


@pytest.mark.parametrize("local", [False, True], ids=["the configured cache", "local memory"])
def test_a_raised_flag_is_seen_until_it_lapses(settings, local):
    if local:
        cache_use(settings, CullingCache)
    key = f"flag-{uuid.uuid4()}"
    assert not flag_raised(key=key)

    flag_raise(key=key, seconds=1)

    assert flag_raised(key=key)
    assert not flag_raised(key=f"{key}-other")
    time.sleep(1.2)
    assert not flag_raised(key=key)


@pytest.mark.parametrize("local", [False, True], ids=["the configured cache", "local memory"])
def test_the_checks_read_together_read_what_each_reads_alone(settings, clock, local):
    if local:
        cache_use(settings, CullingCache)
    flag, key, name = f"flag-{uuid.uuid4()}", f"key-{uuid.uuid4()}", f"gen-{uuid.uuid4()}"
    flag_raise(key=flag, seconds=30)
    rate_limit_hit(key=key, limit=2, window_s=60)

    checks = call_checks_read(flag=flag, generations=[name], hit=(key, 2, 60))

    assert checks.flag_up
    assert checks.tokens == {name: generation(name)}
    assert (checks.hit.allowed, checks.hit.count, checks.hit.resets_in) == (True, 2, pytest.approx(59.5))
    assert not rate_limit_hit(key=key, limit=2, window_s=60).allowed  # counted in the same window
    generation_move(name)
    moved = call_checks_read(flag=f"{flag}-other", generations=[name], hit=None)
    assert (moved.flag_up, moved.hit) == (False, None)
    assert moved.tokens[name] == generation(name) != checks.tokens[name]


def test_a_vanished_token_is_made_again_when_the_checks_read_it(clock):
    from django.core.cache import cache

    name = f"gen-{uuid.uuid4()}"
    first = generation(name)
    cache.delete(generation_key(name))

    again = call_checks_read(flag="f", generations=[name], hit=None).tokens[name]

    assert again
    assert again != first
    assert generation(name) == again
