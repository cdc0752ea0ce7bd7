"""Offline few-shot evaluation: adapt every checkpoint to each test speaker for every (shots, steps),
synthesise a fixed query set, and score it against the recordings.

- ``judges``: speaker-embedding functions that grade speaker similarity (an evaluation encoder);
- ``speaker_sets``: the fixed per-speaker support pools and query sets, and support batches;
- ``scoring``: ``score_pair``, the one scoring function (``evaluate`` and the few-shot callback);
- ``stats``: means and confidence intervals;
- ``grid``: the shots x steps grid over checkpoints (``run_evaluation``);
- ``parallel``: the grid's speakers shared among worker processes (``fewshot.workers``);
- ``samples``: the kept audio (and mel thumbnails) of the first queries of each speaker;
- ``report``: results as CSV, Markdown tables and adaptation curves;
- ``listening``: the self-contained listening page ``report.html`` (players, tables, curves);
- ``compare``: paired differences against any system, across results files of the same test queries.
"""
