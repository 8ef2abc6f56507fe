"""deploy/prometheus/ as an operator would use it, checked by Prometheus's own promtool."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS = ROOT / "deploy" / "prometheus"


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True, check=False)


def test_the_scrape_config_is_valid(tmp_path: Path) -> None:
    """`promtool check config` accepts the example once the token file it names exists (as it
    must on the operator's Prometheus), and finds its rules."""
    shutil.copytree(PROMETHEUS, tmp_path, dirs_exist_ok=True)
    (tmp_path / "metrics-token").write_text("a-metrics-token\n")
    result = promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout


def test_the_scrape_config_sends_the_bearer_token() -> None:
    """The scrape carries METRICS_TOKEN as a bearer token, from a file."""
    config = (PROMETHEUS / "prometheus.yml").read_text()
    assert "type: Bearer" in config
    assert "credentials_file: metrics-token" in config
    assert "metrics_path: /metrics" in config


def test_the_four_alert_rules_are_valid() -> None:
    """`promtool check rules`: signature failures spiking, lag, stuck calls, Redis full."""
    result = promtool("check", "rules", "callstate.rules.yml", cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 4 rules found" in result.stdout


def test_each_alert_fires_on_its_series_and_not_on_normal_traffic() -> None:
    """`promtool test rules` with series for each alert (tests/prometheus-rules.test.yml)."""
    result = promtool("test", "rules", "prometheus-rules.test.yml", cwd=ROOT / "tests")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
