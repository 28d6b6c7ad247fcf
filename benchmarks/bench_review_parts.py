"""What a facility's parts cost the review app, side by side in one run (issue 15).

One run folder (written like the review tests' runs, :func:`tests.review.make_run.write_run`) of
``--sites`` sites, every other one a 140 m hospital compound of 9 parts with a 12-chip context
ring (:func:`tests.review.make_run.facility_cells`), the others houses. Over real HTTP against
uvicorn, it times the site page of a house and of a facility, a verdict without and with two part
marks (the POST and the next page), and the chain check of the whole store at the end; it prints
medians, 95th percentiles and the facility/house ratios::

    python benchmarks/bench_review_parts.py --sites 400 --repeat 60
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=400, help="sites in the run (half of them facilities)")
    parser.add_argument("--repeat", type=int, default=60, help="requests per measurement")
    args = parser.parse_args(argv)

    import httpx
    import uvicorn

    from review.app import create_app
    from review.config import ReviewConfig
    from review.verdict_chain import verify_verdict_chain
    from tests.review.conftest import free_port
    from tests.review.listed_outputs import record_outputs
    from tests.review.make_run import write_run

    parts = [0.02, 0.05, 0.91, 0.6, "cloud", 0.03, 0.01, 0.02, 0.04]
    ring = [0.01] * 11 + [0.7]
    with tempfile.TemporaryDirectory() as tmp:
        facilities = {i: (parts, ring) for i in range(1, args.sites - 1, 2)}
        run = record_outputs(write_run(Path(tmp) / "run", args.sites, chips_top=args.sites, facilities=facilities, threshold=0.3))
        app = create_app(run, ReviewConfig(rerank_every=0))
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.01)
        times: dict[str, list[float]] = {k: [] for k in ("site page, house", "site page, facility",
                                                       "verdict + next, house", "verdict + next, facility (2 marks)")}
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
                c.get("/queue?reviewer=bench")
                csrf = c.cookies.get("sw_csrf")
                houses = [i for i in range(0, args.sites - 1) if i not in facilities]
                facs = sorted(facilities)
                for k in range(args.repeat):
                    for key, index in (("site page, house", houses[k % len(houses)]), ("site page, facility", facs[k % len(facs)])):
                        t0 = time.perf_counter()
                        r = c.get(f"/site/{index}")
                        times[key].append((time.perf_counter() - t0) * 1000)
                        assert r.status_code == 200
                    for key, index, extra in (("verdict + next, house", houses[k % len(houses)], {}),
                                              ("verdict + next, facility (2 marks)", facs[k % len(facs)],
                                               {"part:p02": "on", "part:p03": "on"})):
                        t0 = time.perf_counter()
                        r = c.post(f"/site/{index}/verdict", data={"verdict": "destroyed", "csrf": csrf, **extra},
                                   headers={"accept": "application/json"})
                        assert r.status_code == 200 and r.json()["ok"], r.text
                        c.get(r.json()["next"])
                        times[key].append((time.perf_counter() - t0) * 1000)
        finally:
            server.should_exit = True
            thread.join(timeout=10)
        t0 = time.perf_counter()
        chain = verify_verdict_chain(run / "review.sqlite")
        chain_ms = (time.perf_counter() - t0) * 1000
        assert chain.ok, chain.problems
    print(f"{args.sites} sites ({len(facilities)} facilities of 9 parts), {args.repeat} requests each, real HTTP")
    for key, values in times.items():
        print(f"  {key:38s} median {statistics.median(values):7.1f} ms   p95 {_p95(values):7.1f} ms")
    for what in ("site page", "verdict + next"):
        house = statistics.median(times[f"{what}, house"])
        fac = statistics.median(next(v for k, v in times.items() if k.startswith(f"{what}, facility")))
        print(f"  {what}: facility / house = {fac / house:.2f}")
    print(f"  chain check of {chain.verdicts} verdicts ({args.repeat} with part marks): {chain_ms:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
