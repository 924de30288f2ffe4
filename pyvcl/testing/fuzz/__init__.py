"""A structure-aware fuzzer for everything pyvcl reads from VPP.

Shared memory and the app socket are hostile input (DEVELOPERS.md): whatever VPP, or a process
scribbling on a segment, writes there must end in a pyvcl error, never a crash, a hang, a
leak or a bare built-in exception.  This package checks that claim at scale:

- `mutate`: mutations that set whole fields of the `pyvcl.wire` structs to boundary values
  (and flip a few bytes), reproducible from ``(target, seed, index)``;
- `targets` and `appsock`: the structures built as VPP builds them (segments, message queues,
  fifos, recorded snapshots, attach replies and the session events after them) and every path
  that reads them;
- `runner`: worker processes under a memory limit and a per-input timeout, verdicts, findings
  saved as JSON and minimised to the fewest writes.

``python -m pyvcl.testing.fuzz --help`` runs it; docs/fuzzing.md explains the verdicts and how
a finding becomes a regression test.
"""
