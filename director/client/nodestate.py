"""Moved to ``director.jobs.nodestate`` (jobs/ must not import client/).

Client code should import from ``director.jobs.nodestate``; this shim goes once it does.
"""

from director.jobs.nodestate import CachedResult, JobCache, NodeState

__all__ = ["CachedResult", "JobCache", "NodeState"]
