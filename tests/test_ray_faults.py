"""A Ray worker node that dies mid-run: Ray Data restarts its actor and retries its task, and
the run still ends with every input row exactly once.

Ray's multi-node test cluster (``ray.cluster_utils.Cluster``) runs a head (no CPUs: it only
drives) and two worker "nodes" of one CPU each on this machine; one of them is removed (its
raylet and the actor on it killed) once the run has committed some shards.
"""

from __future__ import annotations

import json
import random
import threading
import time

import pytest

pq = pytest.importorskip("pyarrow.parquet")

from layersal.engines import explain_dataset

ROWS = 1000
SHARD_ROWS = 20
KILL_AFTER = 5  # shards committed before the node dies


@pytest.fixture
def cluster():
    try:
        import ray
        import ray.data
        from ray.cluster_utils import Cluster
    except ImportError:
        pytest.skip("ray is not installed (pip install 'layersal[ray]'): Ray engine not tested")
    if ray.is_initialized():
        pytest.skip("needs a Ray of its own, and one is already running in this process")
    made = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    nodes = [made.add_node(num_cpus=1) for _ in range(2)]
    made.wait_for_nodes()
    ray.init(address=made.address, include_dashboard=False)
    yield made, nodes
    ray.shutdown()
    made.shutdown()


@pytest.mark.slow
def test_a_killed_worker_node_loses_and_repeats_no_row(tmp_path, cluster):
    made, nodes = cluster
    rng = random.Random(0)
    words = ["good", "bad", "film", "plot", "great", "awful", "boring", "fun", "the", "not"]
    source = tmp_path / "in.jsonl"
    lines = [
        json.dumps({"text": " ".join(rng.choice(words) for _ in range(rng.randint(3, 30)))})
        for _ in range(ROWS)
    ]
    source.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    out = tmp_path / "out.parquet"
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["summary"] = explain_dataset(
                source,
                out,
                model="sst2-tiny",
                layer=1,
                batch_size=16,
                shard_rows=SHARD_ROWS,
                engine="ray",
                num_workers=2,
                ray_reads="workers",
            )
        except BaseException as exc:  # reported below, in the test's thread
            outcome["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    while worker.is_alive() and len(list(out.glob("part-*.parquet"))) < KILL_AFTER:
        time.sleep(0.1)
    committed = len(list(out.glob("part-*.parquet")))
    made.remove_node(nodes[0])
    worker.join(timeout=240)
    assert not worker.is_alive(), "the run did not end after the node died"
    assert "error" not in outcome, outcome.get("error")
    assert committed < ROWS // SHARD_ROWS, "the run ended before the node was killed"
    ids = pq.read_table(out, columns=["id"]).column("id").to_pylist()
    duplicates, missing = len(ids) - len(set(ids)), len(set(range(ROWS)) - set(ids))
    print(
        f"killed-worker run: node killed after {committed} of {ROWS // SHARD_ROWS} shards; "
        f"rows in {ROWS}, rows out {len(ids)}, duplicates {duplicates}, missing {missing}"
    )
    assert (len(ids), duplicates, missing) == (ROWS, 0, 0)
    assert outcome["summary"].rows == ROWS and outcome["summary"].errors == 0
