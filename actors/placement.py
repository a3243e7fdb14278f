"""Placement groups for the roles that need their actors placed together."""

from __future__ import annotations

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group

from raylign.config import ActorResources


def place(role: str, cfg: ActorResources, count: int, timeout_s: float) -> PlacementGroup:
    """`count` bundles of `cfg`'s resources (one per actor, each on one node), ready; a clear
    error naming what the cluster has when they cannot be placed in time."""
    bundle = {k: v for k, v in {"CPU": cfg.num_cpus, "GPU": cfg.num_gpus, **cfg.resources}.items() if v > 0}
    group = placement_group([bundle] * count, strategy="PACK")
    try:
        ray.get(group.ready(), timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        remove_placement_group(group)
        raise RuntimeError(
            f"{role}: {count} actor(s) of {bundle} could not be placed in {timeout_s:.0f}s; "
            f"the cluster has {ray.cluster_resources()}"
        ) from None
    return group


def nodes_of(actors: list[ray.actor.ActorHandle]) -> list[dict[str, str]]:
    """Where each live actor runs: {node_id, address} per actor, in order; an actor that is
    restarting (no node yet) is left out. Read from the GCS actor table, which needs no
    dashboard (the public state API does)."""
    from ray._private import state

    out = []
    for actor in actors:
        entry = state.actors(actor_id=actor._actor_id.hex())
        if entry and entry["State"] == "ALIVE":
            out.append({"node_id": entry["Address"]["NodeID"], "address": entry["Address"]["IPAddress"]})
    return out
