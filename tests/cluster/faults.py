"""Fault injection for the fault runs: one fault at a time, each healed before the next."""

from __future__ import annotations

import asyncio
import random
import signal
from dataclasses import dataclass, field

from tests.cluster.harness import Cluster

FAULTS = ("kill_leader", "kill_follower", "pause_leader", "cut_node")


@dataclass
class FaultLog:
    injected: list[str] = field(default_factory=list)


async def inject(cluster: Cluster, fault: str, hold: float, rng: random.Random, log: FaultLog) -> None:
    """Inject ``fault`` for ``hold`` seconds (the fault's duration), heal it, and wait
    (polling) until every node agrees on a leader again."""
    leader = await cluster.wait_leader()
    followers = [n.index for n in cluster.nodes if n.index != leader and n.alive]
    if fault == "kill_leader":
        cluster.kill(leader, signal.SIGKILL)
        await asyncio.sleep(hold)
        cluster.start(leader)
    elif fault == "kill_follower":
        victim = rng.choice(followers)
        cluster.kill(victim, signal.SIGKILL)
        await asyncio.sleep(hold)
        cluster.start(victim)
    elif fault == "pause_leader":
        cluster.kill(leader, signal.SIGSTOP)
        await asyncio.sleep(hold)
        cluster.kill(leader, signal.SIGCONT)
    elif fault == "cut_node":
        victim = leader if rng.random() < 0.5 else rng.choice(followers)
        address = cluster.nodes[victim].raft
        cluster.network.cut(address)
        await asyncio.sleep(hold)
        cluster.network.heal(address)
    else:
        raise ValueError(fault)
    log.injected.append(fault)
    await cluster.wait_leader(timeout=90)
