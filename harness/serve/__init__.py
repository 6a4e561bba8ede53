"""``faultline serve``: a local web browser over the results folder.

index.py keeps what the folder holds in memory, runs and campaigns (scanned
once, refreshed by stat), app.py serves the pages from it, paths.py keeps
every path inside.
"""

from harness.serve.app import make_app, serve
from harness.serve.index import CampaignRecord, ResultsIndex, RunRecord
from harness.serve.paths import PathEscape, safe_path

__all__ = ["CampaignRecord", "PathEscape", "ResultsIndex", "RunRecord", "make_app", "safe_path",
           "serve"]
