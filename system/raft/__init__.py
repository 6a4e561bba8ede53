"""Raft for the reference store: a pure, deterministic consensus core
(``core.RaftNode``, driven etcd-RawNode style through ``Ready``), its log and
its messages. The node process drives it over TCP; tests drive it with a
simulated network."""

from .core import (CANDIDATE, FOLLOWER, LEADER, PRE_CANDIDATE, NotLeader, RaftConfig,
                   RaftNode, Ready, ReadState, SoftState, StorageState)
from .log import LogError, RaftLog
from .messages import (AppendEntries, AppendResponse, Entry, HardState, Heartbeat,
                       HeartbeatResponse, InstallSnapshot, Message, Snapshot, TimeoutNow,
                       VoteRequest, VoteResponse, message_from_wire)

__all__ = [
    "CANDIDATE", "FOLLOWER", "LEADER", "PRE_CANDIDATE", "NotLeader", "RaftConfig", "RaftNode",
    "Ready", "ReadState", "SoftState", "StorageState", "LogError", "RaftLog",
    "AppendEntries", "AppendResponse", "Entry", "HardState", "Heartbeat", "HeartbeatResponse",
    "InstallSnapshot", "Message", "Snapshot", "TimeoutNow", "VoteRequest", "VoteResponse",
    "message_from_wire",
]
