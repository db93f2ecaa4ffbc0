"""One Ray for the whole test run (a pytest plugin of tests/conftest.py, so that any test folder can use it).

Starting Ray costs seconds to tens of seconds on a loaded 2-core box, so the tests share one:
``local_ray`` is a local instance of ``LOCAL_CPUS`` CPUs (sized in tiny_run.py, not by the machine, so
that what a test asserts about the cluster holds on any box), started the way ``smi-synth run`` starts
one; ``ray_cluster(n)`` is a ``ray.cluster_utils.Cluster`` of ``n`` one-CPU nodes, shared too (nodes
are added or removed to reach ``n``). ``run_corpus`` uses whichever this process is connected to and
leaves it running. Tests that need a Ray of their own (a driver killed with SIGKILL) run ``smi-synth
run`` in a subprocess."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.run.tiny_run import LOCAL_CPUS
from tests.s3_server import S3Server

_connected: dict[str, object] = {}  # "to": "local" | the cluster's address; "cluster": the Cluster


def _disconnect() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
    _connected.pop("to", None)


@pytest.fixture(scope="session")
def _ray_at_exit() -> Iterator[None]:
    yield
    _disconnect()
    cluster = _connected.pop("cluster", None)
    if cluster is not None:
        cluster.shutdown()


@pytest.fixture
def local_ray(_ray_at_exit: None, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch):
    """The shared local Ray of ``LOCAL_CPUS`` CPUs (the ``ray`` module, connected). Its worker processes
    inherit the environment it starts with, so it starts with the test S3 server's variables (what a
    machine's credentials are to the workers of a real cluster): a run to ``s3://`` reaches the server."""
    from pipeline.run.runner import _ray_init

    if _connected.get("to") != "local":
        _disconnect()
        cluster = _connected.pop("cluster", None)
        if cluster is not None:  # the multi-node tests are done with it: its raylets leave the box
            cluster.shutdown()
        with monkeypatch.context() as env:
            for key, value in s3_server.env.items():
                env.setenv(key, value)
            _ray_init(None, num_cpus=LOCAL_CPUS)
        _connected["to"] = "local"
    import ray

    return ray


@pytest.fixture
def ray_cluster(_ray_at_exit: None) -> Callable[[int], object]:
    """``ray_cluster(nodes)``: the shared multi-node cluster with ``nodes`` one-CPU nodes, this process
    connected to it. The head node holds one CPU too."""

    def with_nodes(nodes: int):
        import ray
        from ray.cluster_utils import Cluster

        cluster = _connected.get("cluster")
        if cluster is None:
            _disconnect()
            cluster = _connected["cluster"] = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        workers = [n for n in cluster.list_all_nodes() if n is not cluster.head_node]
        for node in workers[nodes - 1:]:
            cluster.remove_node(node)
        for _ in range(nodes - 1 - len(workers)):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        if _connected.get("to") != cluster.address:
            _disconnect()
            ray.init(address=cluster.address, include_dashboard=False, logging_level="WARNING")
            _connected["to"] = cluster.address
        _wait_alive(ray, nodes)
        return cluster

    return with_nodes


def _wait_alive(ray, nodes: int, timeout: float = 60.0) -> None:
    """Until the GCS counts ``nodes`` alive nodes (a removed node is marked dead after a moment)."""
    import time

    deadline = time.monotonic() + timeout
    while sum(n["Alive"] for n in ray.nodes()) != nodes:
        assert time.monotonic() < deadline, f"the cluster did not settle at {nodes} alive nodes"
        time.sleep(0.2)
