"""The code sandbox's figures: a warm call's overhead, and its fair share under load.

``sandbox_call_ms``: the median time of ``run_code`` for code that returns at once, from the
engine's side (acquire a warm worker, send the call, the jailed child runs it, answer, release),
in this process. ``sandbox_fair_start_ms``: how long another user's trivial call takes while one
user holds every worker their share allows with calls that sleep.
"""

import asyncio
import time

from workflows.engine.sandbox import Limits, SandboxPool, isolation_status, run_code

ORDER = 11
CALLS = 300
TRIVIAL = "def main(n):\n    return {'n': n}"
SLEEPER = "import time\ndef main():\n    time.sleep(2)\n    return {}"


def run(ctx) -> list[dict]:
    state = isolation_status()
    if not state["isolated"]:
        ctx.warn(f"the sandbox cannot isolate code here: {state['problem']}")
        return [ctx.result("sandbox_call_ms", None, "ms", note=state["problem"])]
    return asyncio.run(_figures(ctx, state))


async def _figures(ctx, state: dict) -> list[dict]:
    pool = SandboxPool(max_workers=8, min_idle=2, require_isolation=True)
    try:
        pool.top_up()
        for n in range(20):  # warm: the workers' first calls
            await run_code(code=TRIVIAL, inputs={"n": n}, pool=pool)
        samples = []
        for n in range(CALLS):
            began = time.perf_counter()
            await run_code(code=TRIVIAL, inputs={"n": n}, pool=pool)
            samples.append((time.perf_counter() - began) * 1000)
        call = ctx.result(
            "sandbox_call_ms",
            ctx.median(samples),
            "ms",
            note=f"median of {CALLS} warm calls of code that returns at once ({state['tool']}, {state['limits']})",
        )
        hogs = [
            asyncio.create_task(run_code(code=SLEEPER, inputs={}, owner="hog", pool=pool, limits=Limits(wall_s=5)))
            for _ in range(pool.max_workers + 2)
        ]
        await asyncio.sleep(0.5)  # the hog holds its share; its other calls wait
        began = time.perf_counter()
        await run_code(code=TRIVIAL, inputs={"n": 0}, owner="other", pool=pool)
        fair = ctx.result(
            "sandbox_fair_start_ms",
            (time.perf_counter() - began) * 1000,
            "ms",
            target=1000,
            note=f"another user's trivial call while one user holds {pool.user_share} of {pool.max_workers} workers",
        )
        await asyncio.gather(*hogs)
        return [call, fair]
    finally:
        pool.close()
