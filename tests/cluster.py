"""A real Redis Cluster for the tests: `masters` redis-server processes on loopback, no
replicas, append-only persistence, each node in its own directory (so it keeps its node id,
via nodes.conf, and its data, via the AOF, across a restart). Modelled on `RedisServer`."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType

import redis

from tests.servers import HOST, free_port, stop_process, wait_until

SLOTS = 16384
DEPLOY_CONF = Path(__file__).resolve().parent.parent / "deploy" / "redis-cluster.conf"


class RedisCluster:
    """`RedisCluster(workdir).start()`; `.url` for Relay, `.restart(i)` / `.kill(i)` for faults."""

    def __init__(
        self, workdir: Path, masters: int = 3, *, replicas: int = 0, full_coverage: bool = True, password: str = ""
    ):
        if masters < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 masters")
        self.workdir = workdir
        self.masters = masters
        self.replicas = replicas
        self.nodes = masters * (1 + replicas)  # redis-cli makes the first `masters` masters
        self.full_coverage = full_coverage
        self.password = password  # requirepass (and masterauth) on every node when set
        self.ports = self._free_ports(2 * self.nodes)
        # The cluster bus normally listens on port + 10000, which may be taken or out of
        # range: give each node its own free bus port (`cluster-port`, Redis >= 7).
        self.ports, self.bus_ports = self.ports[: self.nodes], self.ports[self.nodes :]
        self.dirs = [workdir / f"node{i}" for i in range(self.nodes)]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * self.nodes
        self.node_ids: list[str] = []
        for d in self.dirs:
            d.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def _free_ports(count: int) -> list[int]:
        ports: list[int] = []
        for _ in range(count * 20):
            port = free_port()
            if port not in ports:
                ports.append(port)
            if len(ports) == count:
                return ports
        raise RuntimeError(f"could not find {count} distinct free ports")

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis+cluster://{auth}" + ",".join(f"{HOST}:{p}" for p in self.ports)

    # -- processes ---------------------------------------------------------------------------

    def start(self) -> RedisCluster:
        try:
            self._create()
        except BaseException:
            self.stop()
            raise
        return self

    def _create(self) -> None:
        for i in range(self.nodes):
            self.start_node(i)
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli is not installed: run `bash scripts/test.sh`")
        create = [cli, *(["-a", self.password, "--no-auth-warning"] if self.password else []),
                  "--cluster", "create", *(f"{HOST}:{p}" for p in self.ports),
                  "--cluster-replicas", str(self.replicas), "--cluster-yes"]
        done = subprocess.run(create, capture_output=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout!r} {done.stderr!r}")
        self.wait_ok()
        wait_until(self._replicas_linked, 30, "every replica linked to its master", interval=0.05)
        self.node_ids = [self._myid(i) for i in range(self.nodes)]

    def start_node(self, index: int) -> None:
        """Start node `index` (again) on its port and dir; waits for PING only."""
        if self.procs[index] is not None and self.procs[index].poll() is None:  # type: ignore[union-attr]
            raise RuntimeError(f"node {index} is already running")
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: run `bash scripts/test.sh`")
        port = self.ports[index]
        # The operator's file (deploy/redis-cluster.conf), then what differs on loopback.
        args = [
            binary, str(DEPLOY_CONF), "--port", str(port), "--bind", HOST, "--dir", str(self.dirs[index]),
            "--cluster-port", str(self.bus_ports[index]), "--cluster-node-timeout", "2000",
            "--cluster-require-full-coverage", "yes" if self.full_coverage else "no",
            "--save", "", "--daemonize", "no", "--protected-mode", "yes", "--loglevel", "warning",
            "--logfile", str(self.dirs[index] / "redis.log"),
            *(["--requirepass", self.password, "--masterauth", self.password] if self.password else []),
        ]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs[index] = proc

        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server node {index} exited; see {self.dirs[index]}/redis.log")
            return self._ping(port)

        deadline = time.monotonic() + 10
        while not up():  # raises at once if the process died (wait_until would swallow it)
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after 10s waiting for cluster node {index} on port {port}")
            time.sleep(0.02)

    def kill(self, index: int, sig: int = signal.SIGKILL) -> None:
        """Stop node `index` without restarting it (SIGKILL: no AOF flush, no nodes.conf save)."""
        proc = self.procs[index]
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            proc.wait(timeout=10)
        self.procs[index] = None

    def restart(self, index: int, timeout: float = 30) -> None:
        """SIGTERM node `index`, start it again on the same port and dir, wait for the whole
        cluster to be ok; it must come back as the same node (same id, same data)."""
        stop_process(self.procs[index], signal.SIGTERM)
        self.procs[index] = None
        self.start_node(index)
        self.wait_ok(timeout)
        if self.node_ids and self._myid(index) != self.node_ids[index]:
            raise RuntimeError(f"node {index} came back with another node id")

    def stop(self) -> None:
        for i in range(self.nodes):
            stop_process(self.procs[i], signal.SIGTERM)
            self.procs[i] = None

    def __enter__(self) -> RedisCluster:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    # -- state -------------------------------------------------------------------------------

    def client(self, port: int) -> redis.Redis:
        """A plain (non-cluster) client to one node."""
        return redis.Redis(host=HOST, port=port, socket_timeout=5, password=self.password or None)

    def _ping(self, port: int) -> bool:
        client = redis.Redis(host=HOST, port=port, socket_timeout=0.5, password=self.password or None)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def _myid(self, index: int) -> str:
        with self.client(self.ports[index]) as c:
            return str(c.execute_command("CLUSTER", "MYID").decode())

    def _slot_map(self, port: int) -> list[tuple[int, int, int]]:
        with self.client(port) as c:
            return sorted((start, end, owner) for (start, end), owner in self._slots(c).items())

    def healthy(self) -> bool:
        """Every running node: cluster_state:ok, all slots assigned and ok, and the same slot
        map (a killed node stays known, as failed)."""
        maps = []
        for i, port in enumerate(self.ports):
            if self.procs[i] is None:
                continue
            with self.client(port) as c:
                info = c.cluster("INFO")
            if (info.get("cluster_state") != "ok"
                    or int(info.get("cluster_slots_assigned", 0)) != SLOTS
                    or int(info.get("cluster_slots_ok", 0)) != SLOTS
                    or int(info.get("cluster_known_nodes", 0)) != self.nodes):
                return False
            maps.append(self._slot_map(port))
        covered = sum(end - start + 1 for start, end, _ in maps[0])
        return covered == SLOTS and all(m == maps[0] for m in maps)

    def _replicas_linked(self) -> bool:
        linked = 0
        for port in self.ports:
            with self.client(port) as c:
                info = c.info("replication")
            linked += info.get("role") == "slave" and info.get("master_link_status") == "up"
        return linked == self.nodes - self.masters

    def wait_ok(self, timeout: float = 30) -> None:
        wait_until(self.healthy, timeout, f"redis cluster on ports {self.ports} to be ok", interval=0.05)

    def node_for_key(self, key: str | bytes) -> int:
        """Index of the master that owns `key`'s slot (asks the first live node)."""
        for i, port in enumerate(self.ports):
            if self.procs[i] is None:
                continue
            with self.client(port) as c:
                slot = int(c.execute_command("CLUSTER", "KEYSLOT", key))
                for (start, end), owner in self._slots(c).items():
                    if start <= slot <= end:
                        return self.ports.index(owner)
            raise LookupError(f"slot {slot} of {key!r} is not assigned")
        raise RuntimeError("no node is running")

    @staticmethod
    def _slots(c: redis.Redis) -> dict[tuple[int, int], int]:
        """{(first slot, last slot): port of the owning master}, from CLUSTER SLOTS."""
        # Raw reply: [[start, end, [host, port, id, {...}], *replicas], ...]
        rows = c.execute_command("CLUSTER", "SLOTS")  # type: ignore[no-untyped-call]
        return {(int(row[0]), int(row[1])): int(row[2][1]) for row in rows}

    def flushall(self) -> None:
        """Empty every running master (replicas follow)."""
        for i, port in enumerate(self.ports):
            if self.procs[i] is not None:
                with self.client(port) as c:
                    if c.execute_command("ROLE")[0] == b"master":
                        c.flushall()

    def replicated(self, index: int, timeout_ms: int = 2000) -> None:
        """Wait until master `index`'s replicas have every write it acknowledged so far."""
        with self.client(self.ports[index]) as c:
            acked = int(c.execute_command("WAIT", self.replicas, timeout_ms))
        if acked < self.replicas:
            raise TimeoutError(f"only {acked} of {self.replicas} replicas of node {index} caught up")


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory(prefix="relay-cluster-") as tmp:
        t0 = time.monotonic()
        cluster = RedisCluster(Path(tmp)).start()
        try:
            t1 = time.monotonic()
            print(f"started {cluster.url} in {t1 - t0:.2f}s; node ids {cluster.node_ids}")
            key = next(f"k{n}" for n in range(1000) if cluster.node_for_key(f"k{n}") == 1)
            with cluster.client(cluster.ports[1]) as c:
                c.set(key, "before")
            cluster.restart(1)
            t2 = time.monotonic()
            print(f"restarted node 1 in {t2 - t1:.2f}s")
            with cluster.client(cluster.ports[1]) as c:
                assert c.get(key) == b"before", c.get(key)
            assert cluster.node_for_key(key) == 1
            cluster.flushall()
            with cluster.client(cluster.ports[1]) as c:
                assert c.get(key) is None
            print("ok")
        finally:
            cluster.stop()
        print(f"total {time.monotonic() - t0:.2f}s")
