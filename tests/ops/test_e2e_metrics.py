"""--metrics end to end: the primary's /metrics, parsed with prometheus_client's own parser.

What a Prometheus user relies on: every worker's requests are counted, no counter ever goes backwards
(a SIGKILLed worker, a recycled one), and the app's own prometheus_client metrics from every worker arrive
merged in the same scrape.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import DEADLINE, FRESH, TEST_APPS, Cluster, assert_config_error, run_to_exit, start, wait_until

METRICS_APP_PAIR = ["metrics_app:wsgi", "metrics_app:asgi"]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def metrics_url(cluster: Cluster) -> str:
    return cluster.wait_for_line(r"metrics on (\S+)")[0].group(1)


def scrape(url: str) -> Samples:
    response = httpx.get(url, timeout=DEADLINE)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text) for sample in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(value for (sample, sample_labels), value in samples.items()
               if sample == name and set(labels.items()) <= set(sample_labels))


def assert_no_counter_went_back(before: Samples, after: Samples) -> None:
    for key, value in before.items():
        name = key[0]
        if name.endswith(("_total", "_count", "_sum", "_bucket")) and not name.startswith("python_"):
            assert after.get(key, 0.0) >= value, f"{key} went from {value} to {after.get(key)}"


@pytest.mark.parametrize("app", METRICS_APP_PAIR)
def test_counters_survive_a_killed_worker_and_a_recycle(run_cli: Any, app: str) -> None:
    cluster = start(run_cli, app, "--workers", "2", "--metrics", "127.0.0.1:0", "--max-requests", "30")
    url = cluster.wait_ready()
    endpoint = metrics_url(cluster)
    for _ in range(10):
        assert FRESH.get(url).status_code == 200
    # The workers' counts come with their heartbeat (at most a second apart).
    wait_until(lambda: total(scrape(endpoint), "clusterrun_requests_total") == 10, "10 requests counted")
    first = scrape(endpoint)
    assert total(first, "clusterrun_requests_total", status_class="2xx") == 10
    assert total(first, "clusterrun_request_duration_seconds_count") == 10
    assert total(first, "app_hits_total") == 10  # the app's own counter, from both workers

    victim = cluster.status()["workers"][0]
    os.kill(victim["pid"], signal.SIGKILL)
    cluster.wait_status(lambda s: s["ready"] == 2 and s["restarts"] == 1, "the killed worker's slot respawned")
    second = scrape(endpoint)
    assert_no_counter_went_back(first, second)
    assert total(second, "clusterrun_worker_restarts_total", slot=str(victim["index"]),
                 reason="killed by SIGKILL") == 1
    assert total(second, "app_hits_total") == 10  # the dead worker's hits stay counted

    # Past --max-requests 30 the other worker asks to be recycled: replaced, no request lost, counts kept.
    for _ in range(50):
        assert FRESH.get(url).status_code == 200
    cluster.wait_for_line(r"recycling worker .*: it served \d+ requests")
    cluster.wait_status(lambda s: s["ready"] == 2 and all(w["state"] == "ready" for w in s["workers"]),
                        "the recycled worker replaced")
    wait_until(lambda: total(scrape(endpoint), "app_hits_total") == 60, "the app's 60 hits merged")
    third = scrape(endpoint)
    assert_no_counter_went_back(second, third)
    assert total(third, "clusterrun_connections_dispatched_total") == 60


@pytest.mark.parametrize("app", METRICS_APP_PAIR)
def test_status_classes_workers_and_the_histogram(run_cli: Any, app: str) -> None:
    cluster = start(run_cli, app, "--workers", "2", "--metrics", "127.0.0.1:0")
    url = cluster.wait_ready()
    endpoint = metrics_url(cluster)
    for code in (200, 201, 302, 404, 404, 503):
        assert FRESH.get(f"{url}/status?code={code}").status_code == code
    wait_until(lambda: total(scrape(endpoint), "clusterrun_requests_total") == 6, "6 requests counted")
    samples = scrape(endpoint)
    assert [total(samples, "clusterrun_requests_total", status_class=c) for c in ("2xx", "3xx", "4xx", "5xx")] == [
        2, 1, 2, 1]
    assert total(samples, "clusterrun_workers", state="ready") == 2
    assert total(samples, "clusterrun_workers_target") == 2
    assert total(samples, "clusterrun_request_duration_seconds_bucket", le="+Inf") == 6
    assert total(samples, "clusterrun_worker_resident_memory_bytes") > 2_000_000
    assert httpx.get(endpoint.replace("/metrics", "/other"), timeout=DEADLINE).status_code == 404


def test_metrics_need_prometheus_client(tmp_path: Path) -> None:
    # A prometheus_client that cannot be imported, first on the path: as on a machine without the extra.
    (tmp_path / "prometheus_client").mkdir()
    (tmp_path / "prometheus_client" / "__init__.py").write_text("raise ImportError('not installed')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = run_to_exit("sup_app:wsgi", "--port", "0", "--metrics", "127.0.0.1:0", cwd=TEST_APPS, env=env)
    assert_config_error(result, 2, "--metrics needs prometheus_client", "pip install prometheus_client")


def test_a_bad_metrics_address_names_the_flag() -> None:
    result = run_to_exit("sup_app:wsgi", "--metrics", "localhost", cwd=TEST_APPS)
    assert_config_error(result, 2, "bad --metrics value 'localhost'")
