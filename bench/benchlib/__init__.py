"""What the benchmark scripts in bench/ share; each script holds only its own measurement.

The scripts are run as files (``.venv/bin/python bench/emit_bench.py``), and Python puts the
folder of the file it runs first on ``sys.path``: ``import benchlib`` finds this package with
no path set up by hand. pytest does the same for ``bench/test_*.py`` (bench/ has no
``__init__.py``, so its default import mode puts bench/ on the path), and a script that starts
itself again as a child process (``[sys.executable, __file__, ...]``) gets the same path.

- ``report``: where and from what a run was taken (machine, commit, command), the results
  files, PASS/FAIL target lines, progress lines, SIGTERM that cleans up.
- ``timing``: emit's signature as a no-op, the call loops, gc-off timers, interleaved rounds.
- ``lanes``: segments of a private namespace, and this thread's lanes for timing ``emit``.
- ``drain``: a real ``Daemon`` in-process over lanes filled beforehand, re-read batch after
  batch.
- ``mix``: the realistic event mix (10 operations x 10 models) as emit arguments and as
  numpy records.
- ``proc``: another process's memory and CPU time.
- ``daemon``: a real ``ai-analyticsd`` in a subprocess, and polling with a deadline.
- ``children``: a script's own child processes that speak a line protocol on stdin/stdout.
- ``prometheus``: prometheus_client wrapped as a user would, with emit's signature.
"""
