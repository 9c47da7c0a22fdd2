"""The deploy files are tested, not just written."""

from __future__ import annotations

import re
from pathlib import Path

from tests.deploy_nginx import LoadBalancer

ROOT = Path(__file__).resolve().parent.parent


def test_nginx_config_is_valid(tmp_path: Path) -> None:
    result = LoadBalancer(tmp_path / "nginx", [8001, 8002]).test_config()
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr


def test_procfile_runs_the_factory_with_bounded_shutdown() -> None:
    line = (ROOT / "Procfile").read_text().strip()
    assert line.startswith("web: uvicorn relay.app:create_app --factory")
    assert "--port $PORT" in line and "--host 0.0.0.0" in line and "--proxy-headers" in line
    timeout = re.search(r"--timeout-graceful-shutdown (\d+)", line)
    assert timeout is not None and 0 < int(timeout.group(1)) <= 30
    assert "--no-access-log" in line, "uvicorn's access log would print tokens from query strings"


def test_redis_settings_turn_on_append_only() -> None:
    conf = (ROOT / "deploy" / "redis.conf").read_text()
    assert re.search(r"^appendonly yes$", conf, re.M) and re.search(r"^appendfsync everysec$", conf, re.M)


def test_cluster_nodes_keep_the_same_durability_as_one_redis() -> None:
    """deploy/redis-cluster.conf repeats deploy/redis.conf's settings (tests/cluster.py starts
    every test cluster from it) and adds the cluster's."""
    single = (ROOT / "deploy" / "redis.conf").read_text()
    node = (ROOT / "deploy" / "redis-cluster.conf").read_text()
    settings = [line for line in single.splitlines() if line and not line.startswith("#")]
    assert settings and all(re.search(f"^{re.escape(line)}$", node, re.M) for line in settings)
    assert re.search(r"^cluster-enabled yes$", node, re.M)
    assert re.search(r"^cluster-config-file nodes.conf$", node, re.M)
