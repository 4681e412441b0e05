"""Apache Kafka (KRaft, combined broker+controller) on loopback, for tests, bench and demo.

The jars come from Maven (``make kafka``: ops/kafka/pom.xml -> .mlstream/kafka/lib). This starts
``kafka.Kafka`` with ``java -cp``, after formatting storage with ``kafka.tools.StorageTool``,
on free 127.0.0.1 ports; readiness is a real Metadata request; stop is by PID (SIGTERM, then
SIGKILL after a grace). One node, or a cluster of three (replication factor 3,
``min.insync.replicas`` 2) whose nodes can be killed and restarted with their data.
Sized for a 2-core machine: small heap, few threads, no initial rebalance delay.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from stream.errors import BrokerError
from stream.tools.broker import EmbeddedBroker, free_port

ROOT = Path(__file__).resolve().parents[2]
LIB = Path(os.environ.get("MLSTREAM_KAFKA_LIB", ROOT / ".mlstream" / "kafka" / "lib"))
LOG_CONFIG = ROOT / "ops" / "kafka" / "log4j2.properties"
JVM_OPTS = ("-Xms64m", "-Xmx512m", "-Xss512k", "-XX:+UseSerialGC",
            "-Djava.awt.headless=true")
_RUNNING: set[subprocess.Popen[bytes]] = set()  # killed at exit if a caller forgot to stop


def java_command() -> list[str]:
    """``java -cp <jars>`` plus the JVM options, or a BrokerError naming what is missing."""
    home = os.environ.get("JAVA_HOME")
    java = (shutil.which("java", path=os.path.join(home, "bin")) if home else None) or shutil.which("java")
    if java is None:
        raise BrokerError("Apache Kafka needs Java 17+: java not found (install OpenJDK 17)")
    if not any(LIB.glob("kafka_2.13-*.jar")):
        raise BrokerError(f"Apache Kafka jars missing in {LIB}: run `make kafka` (needs mvn)")
    return [java, *JVM_OPTS, f"-Dlog4j2.configurationFile={LOG_CONFIG}", "-cp", f"{LIB}/*"]


def available() -> bool:
    """True when Java and the Kafka jars are present (so callers can choose the broker)."""
    try:
        java_command()
        return True
    except BrokerError:
        return False


def cluster_id(rng: random.Random | None = None) -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding.

    >>> cluster_id(random.Random(7))
    'ZRMnDiaeDTfyp03kUua0OA'
    >>> all(not cluster_id(random.Random(seed)).startswith("-") for seed in range(500))
    True
    """
    rng = rng or random.Random()
    while True:  # as Kafka's own Uuid: never one starting with "-", which reads as an option
        raw = rng.getrandbits(128).to_bytes(16, "big")
        cid = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def server_properties(node_id: int, port: int, controller_port: int, voters: str, log_dir: Path,
                      cluster_size: int) -> str:
    """The server.properties of one combined node; RF and min ISR follow the cluster size.

    >>> conf = server_properties(2, 9092, 9093, "1@h:1,2@h:2,3@h:3", Path("/d"), 3).splitlines()
    >>> [line for line in conf if line.startswith(("node.id", "min.insync", "offsets.topic.rep"))]
    ['node.id=2', 'min.insync.replicas=2', 'offsets.topic.replication.factor=3']
    """
    rf, min_isr = cluster_size, min(2, cluster_size)
    conf = {
        "process.roles": "broker,controller", "node.id": node_id,
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "controller.listener.names": "CONTROLLER", "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.quorum.voters": voters, "log.dirs": log_dir,
        "num.partitions": 1, "default.replication.factor": rf, "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": rf, "offsets.topic.num.partitions": 4,
        "transaction.state.log.replication.factor": rf, "transaction.state.log.min.isr": min_isr,
        "transaction.state.log.num.partitions": 4,
        # a crashed exactly-once worker's open transaction is aborted ~1 s after its timeout, not
        # up to 10 s after: its successor's restore waits for that (stream.scoring.restore)
        "transaction.abort.timed.out.transaction.cleanup.interval.ms": 1000,
        "share.coordinator.state.topic.replication.factor": rf,
        "share.coordinator.state.topic.min.isr": min_isr,
        "group.initial.rebalance.delay.ms": 0,
        # a 2-core machine shared with other test runs: few threads, small buffers
        "num.network.threads": 2, "num.io.threads": 2, "background.threads": 2,
        "num.recovery.threads.per.data.dir": 1, "num.replica.fetchers": 1,
        "log.cleaner.threads": 1, "log.cleaner.dedupe.buffer.size": 8 * 1024 * 1024,
        "log.segment.bytes": 64 * 1024 * 1024,
        # a dead node is fenced (and dropped from every ISR) in seconds, not the default 9-30 s
        "broker.session.timeout.ms": 4000, "broker.heartbeat.interval.ms": 1000,
        "replica.lag.time.max.ms": 10000,
        "controller.quorum.election.timeout.ms": 1000, "controller.quorum.fetch.timeout.ms": 2000,
    }
    return "".join(f"{k}={v}\n" for k, v in conf.items())


def metadata_brokers(host: str, port: int, timeout_s: float = 2.0) -> set[int]:
    """Node ids in a Metadata v4 answer from ``host:port`` (a real Kafka request; v4 is the
    oldest Kafka 4 still serves, and needs no flexible-version encoding)."""
    body = struct.pack(">hhih", 3, 4, 1, 8) + b"mlstream" + struct.pack(">ib", 0, 0)  # no topics
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", _read(sock, 4))[0]
        data = _read(sock, size)
    n = struct.unpack_from(">i", data, 8)[0]  # after correlation id and throttle time
    pos, ids = 12, set()
    for _ in range(n):
        node, host_len = struct.unpack_from(">ih", data, pos)
        pos += 6 + host_len + 4
        rack_len = struct.unpack_from(">h", data, pos)[0]
        pos += 2 + max(rack_len, 0)
        ids.add(node)
    return ids


def _read(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise OSError("connection closed")
        buf += chunk
    return buf


class KafkaNode:
    """One combined KRaft node: a data dir, two ports, and (while running) a JVM."""

    def __init__(self, node_id: int, data_dir: Path, host: str = "127.0.0.1"):
        self.node_id, self.data_dir, self.host = node_id, data_dir, host
        self.port, self.controller_port = free_port(host), free_port(host)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def format(self, voters: str, cluster_size: int, cid: str) -> subprocess.Popen[bytes]:
        """Write server.properties and start formatting the storage (``kafka-storage format``);
        a node formatted before keeps its data. The caller waits for the returned process."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "server.properties"
        config.write_text(server_properties(self.node_id, self.port, self.controller_port, voters,
                                            self.data_dir / "logs", cluster_size))
        return subprocess.Popen([*java_command(), "kafka.tools.StorageTool", "format", f"--cluster-id={cid}",
                                 "-c", str(config), "--ignore-formatted"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def launch(self) -> None:
        with open(self.data_dir / "server.log", "ab") as log:
            self.process = subprocess.Popen(
                [*java_command(), "kafka.Kafka", str(self.data_dir / "server.properties")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C reaches our process, which stops it last
            )
        _RUNNING.add(self.process)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: the node dies as in a crash; its data dir stays."""
        if self.process is not None:
            if self.alive():
                self.process.kill()
            self.process.wait(10)
            _RUNNING.discard(self.process)
        self.process = None

    def terminate(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)

    def wait_stopped(self, deadline: float) -> None:
        if self.process is None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(max(0.0, deadline - time.monotonic()))
        self.kill()

    def log_tail(self, n: int = 400) -> str:
        try:
            return (self.data_dir / "server.log").read_text(errors="replace")[-n:].strip()
        except OSError:
            return ""


class KafkaServer:
    """Apache Kafka on loopback: one node, or ``nodes=3`` for a replicated cluster.

    ``with KafkaServer() as kafka: ... kafka.bootstrap``; ``kill(i)``/``restart(i)`` one node
    (keeping its data); ``startup_s`` is the measured time from launch to ready, ``format_s``
    the storage formatting before it.
    """

    def __init__(self, nodes: int = 1, data_dir: Path | None = None, host: str = "127.0.0.1",
                 startup_timeout_s: float = 90.0, stop_grace_s: float = 15.0, seed: int | None = None):
        if nodes not in (1, 3):
            raise BrokerError(f"a KRaft quorum of {nodes} nodes is not supported here: use 1 or 3")
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="mlstream-kafka-"))
        self.startup_timeout_s, self.stop_grace_s = startup_timeout_s, stop_grace_s
        self.cluster_id = cluster_id(random.Random(seed) if seed is not None else None)
        self.nodes = [KafkaNode(i + 1, self.data_dir / f"node{i + 1}", host) for i in range(nodes)]
        self.startup_s: float | None = None  # launch to ready, measured by start()
        self.format_s: float | None = None  # storage formatting before it

    @property
    def bootstrap(self) -> str:
        return ",".join(n.bootstrap for n in self.nodes)

    def start(self) -> KafkaServer:
        voters = ",".join(f"{n.node_id}@{n.host}:{n.controller_port}" for n in self.nodes)
        try:
            began = time.monotonic()
            self._format(voters)
            self.format_s = time.monotonic() - began
            began = time.monotonic()
            for node in self.nodes:
                node.launch()
            self.wait_ready(range(len(self.nodes)))
            self.startup_s = time.monotonic() - began
        except BaseException:
            self.stop()
            raise
        return self

    def _format(self, voters: str) -> None:
        formats = [node.format(voters, len(self.nodes), self.cluster_id) for node in self.nodes]
        try:
            for proc in formats:  # side by side: each is a JVM start of a few seconds
                try:
                    out, _ = proc.communicate(timeout=120)
                except subprocess.TimeoutExpired:
                    raise BrokerError("kafka storage format took more than 120 s") from None
                if proc.returncode != 0:
                    raise BrokerError(f"kafka storage format failed: {out.decode()[-300:].strip()}")
        finally:
            for proc in formats:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(5)

    def wait_ready(self, which: range | list[int], timeout_s: float | None = None) -> None:
        """Until each node in ``which`` answers Metadata listing every running node."""
        deadline = time.monotonic() + (timeout_s or self.startup_timeout_s)
        expected = {n.node_id for n in self.nodes if n.alive()}
        pending = list(which)
        while pending:
            node = self.nodes[pending[0]]
            if not node.alive():
                raise BrokerError(f"Kafka node {node.node_id} exited during start-up: {node.log_tail()}")
            try:
                if expected <= metadata_brokers(node.host, node.port, timeout_s=2.0):
                    pending.pop(0)
                    continue
            except (OSError, struct.error):
                pass  # not listening yet, or not answering yet
            if time.monotonic() > deadline:
                raise BrokerError(f"Kafka node {node.node_id} not ready on {node.bootstrap} "
                                  f"after {timeout_s or self.startup_timeout_s:.0f} s: {node.log_tail()}")
            time.sleep(0.1)  # polling a JVM that is coming up: nothing to wait on instead

    def kill(self, index: int = 0) -> int:
        """SIGKILL node ``index`` (data kept); returns the PID it had."""
        node = self.nodes[index]
        pid = node.pid or -1
        node.kill()
        return pid

    def restart(self, index: int = 0, timeout_s: float | None = None) -> float:
        """Start node ``index`` again on its data dir and ports; returns seconds until ready."""
        node = self.nodes[index]
        node.kill()
        began = time.monotonic()
        node.launch()
        self.wait_ready([index], timeout_s)
        return time.monotonic() - began

    def stop(self) -> None:
        """SIGTERM every node at once (a lone survivor cannot shut down cleanly without its
        quorum), then SIGKILL what is still running after the grace."""
        for node in self.nodes:
            node.terminate()
        deadline = time.monotonic() + self.stop_grace_s
        for node in self.nodes:
            node.wait_stopped(deadline)
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> KafkaServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


BROKER_KINDS = ("auto", "kafka", "embedded")


def open_broker(kind: str = "auto") -> KafkaServer | EmbeddedBroker:
    """A started-on-enter broker: Apache Kafka (``kafka``), the embedded one (``embedded``),
    or Apache Kafka when Java and its jars are present and the embedded one otherwise."""
    if kind not in BROKER_KINDS:
        raise BrokerError(f"unknown broker {kind!r}: choose one of {', '.join(BROKER_KINDS)}")
    if kind == "kafka" or (kind == "auto" and available()):
        java_command()  # a clear error now rather than inside the context manager
        return KafkaServer()
    return EmbeddedBroker()


def broker_name(broker: KafkaServer | EmbeddedBroker) -> str:
    return "kafka" if isinstance(broker, KafkaServer) else "embedded"


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_RUNNING):
        if proc.poll() is None:
            proc.kill()
