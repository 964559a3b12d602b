"""The local Ray cluster's port choice (the multihost tests' fixture, scripts/ray_cluster.py)."""

from __future__ import annotations

import wsovvis_ops.ray_cluster as ray_cluster


def test_worker_port_range_holds_none_of_the_nodes_other_ports(monkeypatch):
    drawn = iter([39561, 65530, 40000])  # overlaps a taken port; runs past 65535; free
    monkeypatch.setattr(ray_cluster, "free_port", lambda: next(drawn))
    lo, hi = ray_cluster.worker_port_range({39591, 57845})
    assert (lo, hi) == (40000, 40000 + ray_cluster.WORKER_PORTS)
    # and with the real kernel-chosen ports, never a range holding a taken one
    monkeypatch.undo()
    taken = {ray_cluster.free_port() for _ in range(8)}
    lo, hi = ray_cluster.worker_port_range(taken)
    assert not any(lo <= p <= hi for p in taken) and hi <= 65535
