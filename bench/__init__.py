"""Satchel benchmarks: each Satchel figure next to the machine's own limit, measured in the same run.

`make bench` runs `python -m bench` from the repository root. See `python -m bench --help`.

Layout:
  registry.py    Row (one line of the table) and the @benchmark registry new benchmarks join
  context.py     BenchContext: lazily created, shared resources (payload file, stack, user, ...)
  benchmarks.py  upload, upload_rss, download, sha256
  payload.py     the random test file and streaming request bodies (never the whole file in RAM)
  rawnginx.py    the bench's own nginx (PUT to disk / GET from disk): the machine's HTTP limit
  rss.py         gunicorn worker discovery and the VmRSS sampler
  machine.py     machine facts printed at the top
  report.py      the table and the JSON results file
"""
