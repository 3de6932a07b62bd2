"""bench/wrk.py reads wrk's report: throughput, latency percentiles in any unit, errors."""

from __future__ import annotations

import pytest

from bench.wrk import parse

REPORT = """\
Running 2s test @ http://127.0.0.1:8000/v1/forecast
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    22.91ms    3.42ms   1.04s    87.61%
    Req/Sec     2.81k   165.47     3.03k    80.00%
  Latency Distribution
     50%  812.00us
     75%   23.71ms
     90%   25.86ms
     99%    1.20s
  5594 requests in 2.00s, 2.73MB read
  Socket errors: connect 0, read 2, write 1, timeout 4
  Non-2xx or 3xx responses: 12
Requests/sec:   2795.66
Transfer/sec:      1.37MB
"""


def test_parse_reads_rate_percentiles_and_errors():
    r = parse(REPORT, 64)
    assert r.rps == 2795.66 and r.requests == 5594 and r.connections == 64
    assert r.p50_ms == pytest.approx(0.812) and r.p99_ms == pytest.approx(1200.0)
    assert r.non_2xx == 12 and r.socket_errors == 7


def test_parse_without_errors_counts_none():
    clean = "\n".join(
        line for line in REPORT.splitlines() if "errors" not in line and "Non-2xx" not in line
    )
    r = parse(clean, 64)
    assert r.non_2xx == 0 and r.socket_errors == 0


def test_an_unexpected_report_is_an_error():
    with pytest.raises(ValueError, match="unexpected wrk output"):
        parse("wrk: connection refused\n", 1)
