"""A fix for PySyncObj's leader send loop, applied by subclassing (no global patching).

An entry bigger than ``appendEntriesBatchSizeBytes`` is pickled and sent in chunks marked
start / process / finish. PySyncObj decides "finish" by comparing the chunk position with
the length of the *command* instead of the pickled *entry*; pickle protocol 2 writes bytes
as latin-1 text, so the pickled entry is up to twice as long as the command and "finish"
is often sent one or more chunks early. The follower then unpickles a truncated entry,
its tick raises, and it can neither append nor answer: elections follow under any load of
big group-commit entries (seen with 100-event batches from 4 clients).

``_SyncObj__sendAppendEntries`` below is PySyncObj 0.3.x's method with that one
comparison corrected (``len(entry)``); the name is the mangled name of the private method,
so SyncObj's own calls reach this override.
"""

from __future__ import annotations

from typing import Any

import pysyncobj.pickle as pysyncobj_pickle
from pysyncobj.monotonic import monotonic as monotonic_time


class AppendEntriesFix:
    def _SyncObj__sendAppendEntries(self: Any) -> None:
        conf = self._SyncObj__conf
        transport = self._SyncObj__transport
        log = self._SyncObj__raftLog
        self._SyncObj__newAppendEntriesTime = monotonic_time() + conf.appendEntriesPeriod
        start_time = monotonic_time()
        batch_size = conf.appendEntriesBatchSizeBytes

        for node in self._SyncObj__otherNodes | self._SyncObj__readonlyNodes:
            if node not in self._SyncObj__connectedNodes:
                self._SyncObj__serializer.cancelTransmisstion(node)
                continue

            send_single = True
            sending_serialized = False
            next_index = self._SyncObj__raftNextIndex[node]

            while next_index <= self._SyncObj__getCurrentLogIndex() or send_single or sending_serialized:
                if next_index > log[0][1]:
                    prev_idx, prev_term = self._SyncObj__getPrevLogIndexTerm(next_index)
                    entries = []
                    if next_index <= self._SyncObj__getCurrentLogIndex():
                        entries = self._SyncObj__getEntries(next_index, None, batch_size)
                        self._SyncObj__raftNextIndex[node] = entries[-1][1] + 1

                    if len(entries) == 1 and len(entries[0][0]) >= batch_size:
                        entry = pysyncobj_pickle.dumps(entries[0])
                        for pos in range(0, len(entry), batch_size):
                            if pos == 0:
                                transmission = "start"
                            elif pos + batch_size >= len(entry):  # the fix: the pickled entry
                                transmission = "finish"
                            else:
                                transmission = "process"
                            transport.send(
                                node,
                                {
                                    "type": "append_entries",
                                    "transmission": transmission,
                                    "data": entry[pos : pos + batch_size],
                                    "term": self._SyncObj__raftCurrentTerm,
                                    "commit_index": self._SyncObj__raftCommitIndex,
                                    "prevLogIdx": prev_idx,
                                    "prevLogTerm": prev_term,
                                },
                            )
                            if node not in self._SyncObj__connectedNodes:
                                break
                    else:
                        transport.send(
                            node,
                            {
                                "type": "append_entries",
                                "term": self._SyncObj__raftCurrentTerm,
                                "commit_index": self._SyncObj__raftCommitIndex,
                                "entries": entries,
                                "prevLogIdx": prev_idx,
                                "prevLogTerm": prev_term,
                            },
                        )
                        if node not in self._SyncObj__connectedNodes:
                            break
                else:
                    data = self._SyncObj__serializer.getTransmissionData(node)
                    transport.send(
                        node,
                        {
                            "type": "append_entries",
                            "term": self._SyncObj__raftCurrentTerm,
                            "commit_index": self._SyncObj__raftCommitIndex,
                            "serialized": data,
                        },
                    )
                    if node not in self._SyncObj__connectedNodes:
                        break
                    if data is not None:
                        if data[2]:  # last chunk of the snapshot
                            self._SyncObj__raftNextIndex[node] = log[1][1] + 1
                            sending_serialized = False
                        else:
                            sending_serialized = True
                    else:
                        sending_serialized = False

                next_index = self._SyncObj__raftNextIndex[node]
                send_single = False
                if monotonic_time() - start_time > conf.appendEntriesPeriod:
                    break
